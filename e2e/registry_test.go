package e2e

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// The test upstream: go-containerregistry's in-memory registry on a fixed
// address, under a name (/etc/hosts) as an image reference spells it.
const (
	registryHost = "registry.test"
	registryAddr = "127.0.0.1:5055"
	registryName = registryHost + ":5055"
)

// upstream is the test registry. Its content outlives its outages: only
// the listener comes and goes.
type upstream struct {
	handler http.Handler

	mu     sync.Mutex
	state  string // "up", "down" or "hang"
	ln     net.Listener
	srv    *http.Server
	held   []net.Conn     // connections a hanging registry accepted
	agents map[string]int // requests by User-Agent product ("lifeboat", "containerd")
	log    []string       // every request: method, path, User-Agent
}

func newUpstream() *upstream {
	return &upstream{
		handler: ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))),
		state:   "down",
		agents:  map[string]int{},
	}
}

// up serves the registry.
func (u *upstream) up() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	ln, err := u.listenLocked("up")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(u.serve), ReadHeaderTimeout: 10 * time.Second}
	u.srv = srv
	go func() { _ = srv.Serve(ln) }()
	return nil
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	agent, _, _ := strings.Cut(r.UserAgent(), "/")
	u.mu.Lock()
	u.agents[agent]++
	u.log = append(u.log, r.Method+" "+r.URL.Path+" "+r.UserAgent())
	u.mu.Unlock()
	u.handler.ServeHTTP(w, r)
}

// down closes the listener and every connection: a dial is refused.
func (u *upstream) down() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closeLocked()
	u.state = "down"
}

// hang accepts connections and never reads from or answers them: a
// registry behind a dead load balancer.
func (u *upstream) hang() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	ln, err := u.listenLocked("hang")
	if err != nil {
		return err
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.held = append(u.held, conn)
			u.mu.Unlock()
		}
	}()
	return nil
}

// listenLocked ends the current state and listens again for state.
func (u *upstream) listenLocked(state string) (net.Listener, error) {
	u.closeLocked()
	ln, err := net.Listen("tcp", registryAddr)
	if err != nil {
		return nil, err
	}
	u.ln, u.state = ln, state
	return ln, nil
}

func (u *upstream) closeLocked() {
	if u.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = u.srv.Shutdown(ctx)
		cancel()
		_ = u.srv.Close()
		u.srv = nil
	}
	if u.ln != nil {
		_ = u.ln.Close()
		u.ln = nil
	}
	for _, c := range u.held {
		_ = c.Close()
	}
	u.held = nil
}

// requestsBy is how many requests the registry answered for clients whose
// User-Agent starts with agent.
func (u *upstream) requestsBy(agent string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.agents[agent]
}

// forget drops the request counts and log: what comes after is the
// scenarios' (the test's own pushes stay out of them; go-containerregistry
// pings /v2/ as Go-http-client).
func (u *upstream) forget() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.agents, u.log = map[string]int{}, nil
}

// requestsNotBy is every request whose User-Agent does not start with
// one of agents.
func (u *upstream) requestsNotBy(agents ...string) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for _, l := range u.log {
		ua := l[strings.LastIndexByte(l, ' ')+1:]
		if !slices.ContainsFunc(agents, func(a string) bool { return strings.HasPrefix(ua, a) }) {
			out = append(out, l)
		}
	}
	return out
}

func (u *upstream) agentCounts() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := map[string]int{}
	for k, v := range u.agents {
		m[k] = v
	}
	return m
}

// push writes img as <registryName>/<repoTag>. The registry must be up.
func (u *upstream) push(repoTag string, img v1.Image) (name.Reference, error) {
	u.mu.Lock()
	up := u.state == "up"
	u.mu.Unlock()
	if !up {
		return nil, errors.New("push: the registry is not up")
	}
	// Straight to the listener: the name is for containerd and lifeboat.
	direct, err := name.ParseReference(registryAddr+"/"+repoTag, name.Insecure)
	if err != nil {
		return nil, err
	}
	if err := remote.Write(direct, img); err != nil {
		return nil, err
	}
	return name.ParseReference(registryName+"/"+repoTag, name.Insecure)
}
