// Package proxy is lifeboat's policy: when to answer from the cache, when to
// ask upstream, when to serve stale and when to fail fast; one download per
// blob and one fetch per manifest, shared by every client that asks
// meanwhile. It only answers requests: the upstream package talks to
// registries, the maintenance package evicts, prefetches and verifies, and
// the registry package turns answers into HTTP (proxy never sees an
// http.ResponseWriter).
package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Source says where an answer came from.
type Source string

const (
	// Hit: served from the cache (a tag may have been revalidated first).
	Hit Source = "hit"
	// Miss: fetched from upstream (and stored).
	Miss Source = "miss"
	// Stale: upstream was unavailable; the cached answer was served.
	Stale Source = "stale"
)

// ErrUnknownRegistry is returned for a registry (ns) lifeboat does not mirror.
var ErrUnknownRegistry = errors.New("registry is not mirrored by this lifeboat")

// ErrDigestMismatch is returned when upstream sent bytes that do not match the
// digest they were asked for or announced under. Nothing is stored.
var ErrDigestMismatch = errors.New("upstream content does not match its digest")

// Upstream is one mirrored registry: its client and the policy for it.
type Upstream struct {
	Client *upstream.Client
	// TagTTL skips revalidation of a tag confirmed less than TagTTL ago.
	// Zero: always revalidate.
	TagTTL time.Duration
	// ServeStaleOnNotFound serves a cached tag stale when upstream says it
	// no longer exists (404). Default false: a deleted tag is not served.
	ServeStaleOnNotFound bool
	// MaxStaleness refuses to serve a tag stale once upstream last
	// confirmed it longer ago than this. Zero: no limit.
	MaxStaleness time.Duration
	// MaxConcurrentFills bounds the blob downloads from this registry at
	// once; more queue for a slot, and a client waits for one at most its
	// request budget (the client's Timeouts().Request) before it is
	// answered unavailable (ErrBusy). See fillSlots for who gets a slot.
	// Zero: 16.
	MaxConcurrentFills int
	// MaxConcurrentRequests bounds this registry's other upstream
	// requests at once: manifest GETs, tag revalidation HEADs and blob
	// HEADs (tag lists: see requestSlot). More wait, within their own
	// budget, then are answered unavailable (ErrBusy). Zero: 32.
	MaxConcurrentRequests int
	// PrivateContent decides who may have a private repository's content
	// (private.go). Empty: PrivateShared.
	PrivateContent PrivateContent
	// PrivateDuringOutage decides it while upstream is unavailable, under
	// PrivateVerify. Empty: OutageServe.
	PrivateDuringOutage PrivateOutage
}

// Options configure a Proxy.
type Options struct {
	// Upstreams are the mirrored registries. At least one.
	Upstreams []Upstream
	// DefaultRegistry serves requests without ns=. Empty: the first upstream.
	DefaultRegistry string
	// MaxBlobSize refuses blobs larger than this many bytes: an announced
	// size above it at once, a stream of unannounced size once it passes
	// it. Zero: 20 GiB (DefaultMaxBlobSize); negative: no limit (a blob's
	// size from its manifest and the free disk still bound it).
	MaxBlobSize int64
	// DiskReserve is the free space a download must leave on the cache's
	// disk: a blob whose size is known (announced by upstream, or declared
	// by a manifest this proxy fetched) and that would leave less, counting
	// what the downloads in progress still have to write, is refused with
	// ErrDiskFull before a byte is written (the registry answers 503 and
	// containerd pulls from the registry itself). Zero: 1 GiB
	// (DefaultDiskReserve); negative: no check.
	DiskReserve int64
	// ManifestMemory is the budget for verified manifest bodies kept in
	// memory. Zero: DefaultManifestMemory; negative: none kept.
	ManifestMemory int64
	// FillTimeout bounds a whole blob download. Zero: 1h.
	FillTimeout time.Duration
	// Peers is the cluster tier: other lifeboats asked before upstream
	// for what their node owns, and for anything while upstream is
	// unavailable (peers.go). Nil: none.
	Peers Peers
	// Logger receives one line per upstream failure and per stale answer.
	// Nil: discard.
	Logger *slog.Logger
	// Registerer receives the proxy's metrics. Nil: not registered.
	Registerer prometheus.Registerer
	// Now returns the current time. Nil: time.Now.
	Now func() time.Time
}

// Defaults for zero Options and Upstream fields.
const (
	DefaultMaxBlobSize           = 20 << 30
	DefaultDiskReserve           = 1 << 30
	DefaultMaxConcurrentFills    = 16
	DefaultMaxConcurrentRequests = 32
)

// mirror is one mirrored registry as the proxy holds it.
type mirror struct {
	Upstream
	name      string
	fillSlots *fillSlots    // blob downloads
	requests  chan struct{} // every other upstream request: see requestSlot
}

// Proxy answers pulls from the store and upstream registries.
type Proxy struct {
	store         *cache.Store
	mirrors       map[string]*mirror
	defaultName   string
	maxBlob       int64 // <= 0: no limit
	disk          diskBudget
	fillTimeout   time.Duration
	log           *slog.Logger
	metrics       *metrics
	now           func() time.Time
	fills         fills
	peers         Peers
	sizes         sizeHints
	manifests     flights[*Manifest]
	bodies        *bodies
	blobHeads     flights[int64]
	revalidations revalidations
	private       *private

	// bg is the parent of every download, manifest fetch and tag
	// revalidation, which belong to no client; Close cancels it and waits.
	bg     context.Context
	stopBg context.CancelFunc
	bgMu   sync.Mutex
	closed bool
	bgDone sync.WaitGroup
}

// New builds a Proxy over an open store.
func New(store *cache.Store, opts Options) (*Proxy, error) {
	if len(opts.Upstreams) == 0 {
		return nil, fmt.Errorf("no upstream registries configured")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.FillTimeout <= 0 {
		opts.FillTimeout = time.Hour
	}
	if opts.MaxBlobSize == 0 {
		opts.MaxBlobSize = DefaultMaxBlobSize
	}
	if opts.DiskReserve == 0 {
		opts.DiskReserve = DefaultDiskReserve
	}
	if opts.DefaultRegistry == "" && opts.Upstreams[0].Client != nil {
		opts.DefaultRegistry = opts.Upstreams[0].Client.Name()
	}
	bg, stopBg := context.WithCancel(context.Background())
	p := &Proxy{
		bg: bg, stopBg: stopBg,
		store: store, mirrors: make(map[string]*mirror), defaultName: opts.DefaultRegistry,
		maxBlob: opts.MaxBlobSize, disk: diskBudget{store: store, reserve: opts.DiskReserve}, fillTimeout: opts.FillTimeout,
		log: opts.Logger, metrics: newMetrics(opts.Registerer), now: opts.Now,
		fills: fills{m: make(map[string]*fill)}, private: newPrivate(opts.Registerer), peers: opts.Peers,
		bodies: newBodies(cmp.Or(opts.ManifestMemory, DefaultManifestMemory)),
	}
	p.revalidations.launch = p.background
	p.revalidations.gate = p.gateRevalidation
	for _, u := range opts.Upstreams {
		if u.Client == nil {
			return nil, errors.New("an upstream has no client")
		}
		name := u.Client.Name()
		if _, dup := p.mirrors[name]; dup {
			return nil, fmt.Errorf("upstream %s configured twice", name)
		}
		p.metrics.initRegistry(name)
		p.mirrors[name] = &mirror{
			Upstream: u, name: name,
			fillSlots: newFillSlots(cmp.Or(u.MaxConcurrentFills, DefaultMaxConcurrentFills), p.metrics.fillsQueued),
			requests:  make(chan struct{}, max(cmp.Or(u.MaxConcurrentRequests, DefaultMaxConcurrentRequests), 1)),
		}
	}
	if _, ok := p.mirrors[p.defaultName]; !ok {
		return nil, fmt.Errorf("default registry %s is not among the upstreams", p.defaultName)
	}
	return p, nil
}

// Close stops the work that belongs to no client (downloads in progress,
// whose clients' streams are cut and nothing partial kept; shared manifest
// fetches; tag revalidations) and waits for it, so the store can be closed.
func (p *Proxy) Close() {
	p.bgMu.Lock()
	p.closed = true
	p.bgMu.Unlock()
	p.stopBg()
	p.bgDone.Wait()
}

// errClosed answers work asked for after Close.
var errClosed = errors.New("lifeboat is shutting down")

// background runs f on the proxy's own context, tracked by Close. It
// reports false, and runs nothing, once Close has begun.
func (p *Proxy) background(f func(ctx context.Context)) bool {
	p.bgMu.Lock()
	defer p.bgMu.Unlock()
	if p.closed {
		return false
	}
	p.bgDone.Add(1)
	go func() {
		defer p.bgDone.Done()
		f(p.bg)
	}()
	return true
}

// Registry resolves a client's ns= value to a mirrored registry name. An
// empty ns means the default registry.
func (p *Proxy) Registry(ns string) (string, error) {
	if ns == "" {
		return p.defaultName, nil
	}
	if _, ok := p.mirrors[ns]; !ok {
		return "", unknownRegistry(ns)
	}
	return ns, nil
}

// unknownRegistry is ErrUnknownRegistry naming the registry, formatted only
// when read: a path's first component is asked about on every request
// without ns= (see registry's splitPrefix), and is usually not a registry.
type unknownRegistry string

func (u unknownRegistry) Error() string {
	return strconv.Quote(string(u)) + ": " + ErrUnknownRegistry.Error()
}
func (u unknownRegistry) Unwrap() error { return ErrUnknownRegistry }

func (p *Proxy) mirror(registry string) (*mirror, error) {
	m, ok := p.mirrors[registry]
	if !ok {
		return nil, unknownRegistry(registry)
	}
	return m, nil
}

// upstreamFailed logs one failed upstream call.
func (p *Proxy) upstreamFailed(registry, repo, what string, err error) {
	reason, level := upstream.ReasonOther, slog.LevelWarn
	var ue *upstream.Error
	if errors.As(err, &ue) {
		reason = ue.Reason
		if !ue.Unavailable() {
			level = slog.LevelInfo // an answer about the content, not an outage
		}
	}
	p.log.Log(context.Background(), level, "upstream request failed", "registry", registry, "repository", repo, "request", what, "reason", reason, "error", err)
}

// servedStale logs and counts one stale answer.
func (p *Proxy) servedStale(registry, repo, what string, err *upstream.Error) {
	p.metrics.stale.WithLabelValues(registry, err.Reason).Inc()
	p.log.Warn("serving stale content: upstream unavailable", "registry", registry, "repository", repo, "reference", what, "reason", err.Reason, "error", err.Err)
}
