// Package proxy is lifeboat's policy: when to answer from the cache, when to
// ask upstream, when to serve stale and when to fail fast. It never sees an
// http.ResponseWriter; the registry package turns its answers into HTTP.
package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/lifeboat-dev/lifeboat/cache"
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

// Options configure a Proxy.
type Options struct {
	// Upstreams are the mirrored registries. At least one.
	Upstreams []UpstreamConfig
	// DefaultRegistry serves requests without ns=. Empty: the first upstream.
	DefaultRegistry string
	// Keychain resolves upstream credentials. Nil: anonymous.
	Keychain authn.Keychain
	// MaxBlobSize refuses blobs larger than this many bytes. Zero: no limit.
	MaxBlobSize int64
	// FillTimeout bounds a whole blob download. Zero: 1h.
	FillTimeout time.Duration
	// Logger receives one line per upstream failure and per stale answer.
	// Nil: discard.
	Logger *slog.Logger
	// Registerer receives the proxy's metrics. Nil: not registered.
	Registerer prometheus.Registerer
	// Now returns the current time. Nil: time.Now.
	Now func() time.Time
}

// Proxy answers pulls from the store and upstream registries.
type Proxy struct {
	store         *cache.Store
	upstreams     map[string]*upstream
	defaultName   string
	maxBlob       int64
	fillTimeout   time.Duration
	log           *slog.Logger
	metrics       *metrics
	now           func() time.Time
	fills         fills
	revalidations revalidations

	// fillCtx is the parent of every download; Close cancels it and waits
	// for them.
	fillCtx   context.Context
	stopFills context.CancelFunc
	fillsDone sync.WaitGroup
}

// New builds a Proxy over an open store.
func New(store *cache.Store, opts Options) (*Proxy, error) {
	if len(opts.Upstreams) == 0 {
		return nil, fmt.Errorf("no upstream registries configured")
	}
	if opts.Keychain == nil {
		opts.Keychain = authn.NewMultiKeychain()
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
	if opts.DefaultRegistry == "" {
		opts.DefaultRegistry = opts.Upstreams[0].Name
	}
	m := newMetrics(opts.Registerer)
	fillCtx, stopFills := context.WithCancel(context.Background())
	p := &Proxy{
		fillCtx: fillCtx, stopFills: stopFills,
		store: store, upstreams: make(map[string]*upstream), defaultName: opts.DefaultRegistry,
		maxBlob: opts.MaxBlobSize, fillTimeout: opts.FillTimeout,
		log: opts.Logger, metrics: m, now: opts.Now,
		fills: fills{m: make(map[string]*fill)},
	}
	for _, cfg := range opts.Upstreams {
		if _, dup := p.upstreams[cfg.Name]; dup {
			return nil, fmt.Errorf("upstream %s configured twice", cfg.Name)
		}
		b := newBreaker(cfg.Breaker, opts.Now, func(open bool, reason string) {
			if open {
				m.circuitOpen.WithLabelValues(cfg.Name).Set(1)
				opts.Logger.Warn("circuit breaker opened: answering from cache without waiting on upstream", "registry", cfg.Name, "reason", reason)
				return
			}
			m.circuitOpen.WithLabelValues(cfg.Name).Set(0)
			opts.Logger.Info("circuit breaker closed: upstream answers again", "registry", cfg.Name)
		})
		m.circuitOpen.WithLabelValues(cfg.Name).Set(0)
		up, err := newUpstream(cfg, opts.Keychain, func(rt http.RoundTripper) http.RoundTripper {
			return m.instrument(cfg.Name, rt)
		}, b)
		if err != nil {
			return nil, err
		}
		p.upstreams[cfg.Name] = up
	}
	if _, ok := p.upstreams[p.defaultName]; !ok {
		return nil, fmt.Errorf("default registry %s is not among the upstreams", p.defaultName)
	}
	return p, nil
}

// Close stops the downloads in progress (their clients' streams are cut and
// nothing partial is kept) and waits for them, so the store can be closed.
func (p *Proxy) Close() {
	p.stopFills()
	p.fillsDone.Wait()
}

// Registry resolves a client's ns= value to a mirrored registry name. An
// empty ns means the default registry.
func (p *Proxy) Registry(ns string) (string, error) {
	if ns == "" {
		return p.defaultName, nil
	}
	if _, ok := p.upstreams[ns]; !ok {
		return "", fmt.Errorf("%q: %w", ns, ErrUnknownRegistry)
	}
	return ns, nil
}

func (p *Proxy) upstream(registry string) (*upstream, error) {
	up, ok := p.upstreams[registry]
	if !ok {
		return nil, fmt.Errorf("%q: %w", registry, ErrUnknownRegistry)
	}
	return up, nil
}

// repoPath is the repository name upstream knows: Docker Hub keeps official
// images under library/, which clients leave out.
func (u *upstream) repoPath(repo string) string {
	if u.cfg.Name == "docker.io" && !strings.Contains(repo, "/") {
		return "library/" + repo
	}
	return repo
}

func decodeJSON(r io.Reader, v any) error {
	return json.NewDecoder(io.LimitReader(r, maxManifestSize)).Decode(v)
}

// upstreamFailed logs and counts one failed upstream call.
func (p *Proxy) upstreamFailed(registry, repo, what string, err error) {
	reason, level := ReasonOther, slog.LevelWarn
	var ue *UpstreamError
	if errors.As(err, &ue) {
		reason = ue.Reason
		if !ue.Unavailable() {
			level = slog.LevelInfo // an answer about the content, not an outage
		}
	}
	p.log.Log(context.Background(), level, "upstream request failed", "registry", registry, "repository", repo, "request", what, "reason", reason, "error", err)
}

// servedStale logs and counts one stale answer.
func (p *Proxy) servedStale(registry, repo, what string, err *UpstreamError) {
	p.metrics.stale.WithLabelValues(registry, err.Reason).Inc()
	p.log.Warn("serving stale content: upstream unavailable", "registry", registry, "repository", repo, "reference", what, "reason", err.Reason, "error", err.Err)
}
