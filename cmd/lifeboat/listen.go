package main

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// Connection limits per listener. Past a limit a new connection is
// accepted and closed at once: containerd then pulls from the registry
// itself, and no client can hold file descriptors the others need. Idle
// and slow connections are let go by the servers' timeouts.
const (
	maxAPIConns     = 4096 // the registry API: every pull on the node
	maxMetricsConns = 64   // Prometheus and probes; reachable from the cluster network
	maxAdminConns   = 16   // the admin commands, on loopback
)

// listen opens a TCP listener that holds at most limit connections.
func listen(addr string, limit int) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &limitListener{Listener: ln, limit: int64(limit)}, nil
}

type limitListener struct {
	net.Listener
	limit  int64
	open   atomic.Int64
	Refuse atomic.Int64 // connections closed for being over the limit
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.limit {
			l.open.Add(-1)
			l.Refuse.Add(1)
			_ = c.Close()
			continue
		}
		return &limitConn{Conn: c, release: func() { l.open.Add(-1) }}, nil
	}
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// raiseFileLimit lifts the soft RLIMIT_NOFILE to the hard limit, as
// containerd and nginx do: every client connection and every blob being
// served holds a descriptor. It returns the limit now in force.
func raiseFileLimit() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			return r.Cur, err
		}
	}
	return r.Cur, nil
}
