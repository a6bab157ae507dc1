// Package peers is lifeboat's cluster tier: the lifeboats of a cluster
// share their caches. It owns membership (a static list, or the
// EndpointSlices of a headless Service watched with client-go), placement
// (rendezvous hashing of each digest over the ready members, R owners per
// digest), the client that asks other nodes (upstream.Client per peer:
// short dial timeout, a first-byte budget, a circuit breaker each), and the
// peer API that answers them (a shared bearer token; cached content only,
// and upstream fetches for the digests this node owns).
//
// The proxy consumes it through proxy.Peers and verifies everything a peer
// sends against its digest: peers are never trusted for integrity.
package peers

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/lifeboat-dev/lifeboat/proxy"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for zero Config fields.
const (
	DefaultReplicas    = 2
	DefaultDialTimeout = 200 * time.Millisecond
	DefaultFirstByte   = time.Second
	DefaultFanOut      = 4
	DefaultTagFanOut   = 16
)

// Config configures a Cluster.
type Config struct {
	// Self is this node's peer API address (host:port) as the other nodes
	// list it: how this node recognises itself among the members.
	Self string
	// Node is this node's name (Kubernetes spec.nodeName), another way to
	// recognise itself in EndpointSlices. Empty: by address only.
	Node string
	// Replicas is how many owners each digest has. Zero: DefaultReplicas.
	Replicas int
	// Token is the shared secret every request to a peer carries, and
	// every request to this node's peer API must carry.
	Token string
	// DialTimeout bounds connecting to a peer. Zero: DefaultDialTimeout.
	DialTimeout time.Duration
	// FirstByte bounds the wait for a peer's response headers; past it
	// the next owner (then upstream) is asked. Zero: DefaultFirstByte.
	FirstByte time.Duration
	// FanOut is how many non-owner peers are asked at once for a digest
	// during an outage. Zero: DefaultFanOut.
	FanOut int
	// Breaker tunes each peer's circuit breaker. Zero fields: one failure
	// opens it, for 2s, doubling up to 30s.
	Breaker upstream.BreakerConfig
	// Logger receives membership changes and peer failures. Nil: discard.
	Logger *slog.Logger
	// Registerer receives the peer metrics. Nil: not registered.
	Registerer prometheus.Registerer
}

// Cluster is this node's view of the other lifeboats: it implements
// proxy.Peers. Its members are set by SetMembers (a static list) or
// WatchEndpointSlices.
type Cluster struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	members membership

	mu      sync.Mutex
	clients map[string]*upstream.Client // by address, built on first use

	replications chan struct{} // replication requests in flight (Stored)
}

// maxReplications bounds the replication requests in flight.
const maxReplications = 8

var _ proxy.Peers = (*Cluster)(nil)

// New builds a Cluster with no members: until SetMembers, every digest is
// this node's own.
func New(cfg Config) (*Cluster, error) {
	if _, _, err := net.SplitHostPort(cfg.Self); err != nil {
		return nil, fmt.Errorf("peer address %q: %w", cfg.Self, err)
	}
	if cfg.Token == "" {
		return nil, errors.New("peers need a shared token")
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = DefaultReplicas
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.FirstByte <= 0 {
		cfg.FirstByte = DefaultFirstByte
	}
	if cfg.FanOut <= 0 {
		cfg.FanOut = DefaultFanOut
	}
	if cfg.Breaker.Failures <= 0 {
		cfg.Breaker.Failures = 1 // a peer has stand-ins: one failure is enough
	}
	if cfg.Breaker.MaxBackoff <= 0 {
		cfg.Breaker.MaxBackoff = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{cfg: cfg, log: cfg.Logger, metrics: newMetrics(cfg.Registerer), clients: map[string]*upstream.Client{},
		replications: make(chan struct{}, maxReplications)}
	c.members = membership{self: cfg.Self, node: cfg.Node, log: cfg.Logger, changed: func(n int) { c.metrics.ready.Set(float64(n)) }}
	return c, nil
}

// SetMembers replaces the ready members (this node's own entry included,
// if it is ready).
func (c *Cluster) SetMembers(members []Member) { c.members.set(members) }

// Owners returns d's owners among the ready members, best first (this
// node's address included when it is one).
func (c *Cluster) Owners(d digest.Digest) []string {
	r := rank(c.members.snapshot(), d.String())
	return r[:min(len(r), c.cfg.Replicas)]
}

// Owns reports whether this node is one of d's owners. With no members
// known, or this node not among them, it says true only when no member is
// known: a lone node is every digest's owner.
func (c *Cluster) Owns(d digest.Digest) bool {
	owners := c.Owners(d)
	if len(owners) == 0 {
		return true
	}
	for _, o := range owners {
		if o == c.cfg.Self {
			return true
		}
	}
	return false
}

// others is key's ranking without this node, split in two: the owners
// ranked above this node (all of them on a non-owner), best first, and
// everyone else. A miss asks only the first group while upstream is
// healthy: the top owner fetches from upstream, a lower one asks those
// above it, so a blob is fetched once and requests only ever go up the
// ranking (never in a circle). The others stand in when it is down.
func (c *Cluster) others(key string) (above, rest []string) {
	all := rank(c.members.snapshot(), key)
	n := min(len(all), c.cfg.Replicas)
	selfSeen := false
	for i, a := range all {
		switch {
		case a == c.cfg.Self:
			selfSeen = true
		case i < n && !selfSeen:
			above = append(above, a)
		default:
			rest = append(rest, a)
		}
	}
	return above, rest
}

// client is the upstream.Client for one peer.
func (c *Cluster) client(addr string) (*upstream.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.clients[addr]; ok {
		return cl, nil
	}
	cl, err := upstream.New(upstream.Config{
		Name: "peer/" + addr, URL: "http://" + addr,
		Timeouts: upstream.Timeouts{
			Dial: c.cfg.DialTimeout, ResponseHeader: c.cfg.FirstByte,
			Request: 2 * c.cfg.FirstByte, Revalidate: c.cfg.FirstByte, BodyStall: 10 * time.Second,
		},
		Breaker:     c.cfg.Breaker,
		TokenRealms: []string{},
	}, upstream.Options{Keychain: tokenKeychain(c.cfg.Token), UserAgent: "lifeboat-peer", Logger: c.log})
	if err != nil {
		return nil, err
	}
	c.clients[addr] = cl
	return cl, nil
}

// tokenKeychain gives every peer the shared token: go-containerregistry's
// transport sends a RegistryToken as "Authorization: Bearer <token>", to the
// peer's own host only.
type tokenKeychain string

func (k tokenKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return authn.FromConfig(authn.AuthConfig{RegistryToken: string(k)}), nil
}

// peerPrefix starts every peer API repository path. No repository name
// can start with "_", so the registry API refuses every peer path, and the
// peer API nothing else.
const peerPrefix = "_lifeboat/"

// peerRepo is the repository path on the peer API: the registry first, as
// CRI-O's mirror paths do, so that one peer listener serves every registry.
func peerRepo(registry, repo string) string { return peerPrefix + registry + "/" + repo }
