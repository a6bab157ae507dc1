// Package maintenance keeps the cache in shape: eviction, prefetch and
// pins, verification, and the lifeboat_cache_* gauges. One Service does it
// for serve's schedulers, for the admin API and for the admin commands run
// on a data directory with no lifeboat, so each policy is written once and
// counted the same way whichever of them asks.
package maintenance

import (
	"context"
	"log/slog"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/proxy"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Service.
type Options struct {
	// Proxy fetches prefetched images. Nil: Prefetch fails (an admin
	// command that only evicts, verifies or lists needs none).
	Proxy *proxy.Proxy
	// Upstreams are the registries whose circuit breakers say whether an
	// outage is on (then eviction keeps what the node lives on).
	Upstreams []*upstream.Client
	// Eviction bounds the cache's disk use.
	Eviction EvictionOptions
	// Prefetch is the list RunPrefetch keeps fetched and pinned, every
	// PrefetchInterval (zero: 1h).
	Prefetch         []PrefetchItem
	PrefetchInterval time.Duration
	// Logger receives one line per eviction that removed something, per
	// prefetch and per damaged blob. Nil: discard.
	Logger *slog.Logger
	// Registerer receives the cache and prefetch metrics. Nil: not
	// registered.
	Registerer prometheus.Registerer
	// Now returns the current time. Nil: time.Now.
	Now func() time.Time
}

// Service runs the maintenance of one store.
type Service struct {
	store     *cache.Store
	proxy     *proxy.Proxy
	upstreams []*upstream.Client
	eviction  EvictionOptions
	prefetch  []PrefetchItem
	interval  time.Duration
	log       *slog.Logger
	metrics   *metrics
	now       func() time.Time
}

// New builds the Service over an open store.
func New(store *cache.Store, opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.PrefetchInterval <= 0 {
		opts.PrefetchInterval = time.Hour
	}
	s := &Service{
		store: store, proxy: opts.Proxy, upstreams: opts.Upstreams,
		eviction: opts.Eviction.withDefaults(), prefetch: opts.Prefetch, interval: opts.PrefetchInterval,
		log: opts.Logger, metrics: newMetrics(opts.Registerer), now: opts.Now,
	}
	s.metrics.maxSize.Set(float64(s.eviction.MaxSize))
	return s
}

// Outage reports whether some upstream's circuit breaker is open: an
// outage, during which eviction keeps everything recently used.
func (s *Service) Outage() bool {
	for _, c := range s.upstreams {
		if c.CircuitOpen() {
			return true
		}
	}
	return false
}

// Images lists the cached images.
func (s *Service) Images() ([]cache.Image, error) { return s.store.Images() }

// every runs f now and then after each wait(err) until ctx ends.
func every(ctx context.Context, f func() error, wait func(err error) time.Duration) {
	for {
		err := f()
		t := time.NewTimer(wait(err))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
