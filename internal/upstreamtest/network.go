package upstreamtest

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Network is an in-memory network for tests that run in a testing/synctest
// bubble. A goroutine waiting on a real socket is not durably blocked, so a
// bubble's fake clock cannot advance while a client waits for a loopback
// server; connections of net.Pipe are channels, on which goroutines block
// durably. So a bubble can run an upstream that hangs and a client whose
// 500 ms budget runs out, in no wall time and with exact durations.
//
// Create it, and everything that uses it (servers, the proxy, its clients),
// inside the bubble, and close them there: t.Cleanup does. Give the
// clients DialContext (upstream.Options.DialContext, or Client).
type Network struct {
	mu        sync.Mutex
	listeners map[string]*listener
	next      int
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	return &Network{listeners: map[string]*listener{}, next: 5000}
}

// Listen returns a listener at a new address, "localhost:<port>": a
// loopback name, so no HTTP proxy from the environment is asked for it.
func (n *Network) Listen() net.Listener {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.next++
	l := &listener{n: n, addr: memAddr("localhost:" + strconv.Itoa(n.next)), conns: make(chan net.Conn), done: make(chan struct{})}
	n.listeners[l.addr.String()] = l
	return l
}

// DialContext connects to a listener of the network, as a TCP dialer
// would: refused (ECONNREFUSED) where nothing listens, and a DNS failure
// for a host under .invalid (RFC 2606), which never resolves.
func (n *Network) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	n.mu.Lock()
	l := n.listeners[addr]
	n.mu.Unlock()
	host, _, _ := net.SplitHostPort(addr)
	switch {
	case l != nil:
	case strings.HasSuffix(host, ".invalid"):
		return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}}
	default:
		return nil, refused(network, addr)
	}
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, refused(network, addr)
	case <-ctx.Done():
		return nil, &net.OpError{Op: "dial", Net: network, Addr: memAddr(addr), Err: ctx.Err()}
	}
}

func refused(network, addr string) error {
	return &net.OpError{Op: "dial", Net: network, Addr: memAddr(addr), Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
}

// Client is an HTTP client on the network, for a test's own requests.
func (n *Network) Client() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: n.DialContext}}
}

// Server starts an httptest.Server for h on the network, closed when the
// test ends. Its URL is http://localhost:<port>, or https with tls.
func (n *Network) Server(t testing.TB, h http.Handler, tls bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	_ = srv.Listener.Close() // the loopback one it opened
	srv.Listener = n.Listen()
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes that fail on purpose
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv
}

type listener struct {
	n     *Network
	addr  memAddr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting: further dials are refused.
func (l *listener) Close() error {
	l.once.Do(func() {
		l.n.mu.Lock()
		delete(l.n.listeners, l.addr.String())
		l.n.mu.Unlock()
		close(l.done)
	})
	return nil
}

func (l *listener) Addr() net.Addr { return l.addr }

// memAddr is an address on a Network.
type memAddr string

func (a memAddr) Network() string { return "tcp" }
func (a memAddr) String() string  { return string(a) }
