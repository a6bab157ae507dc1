package maintenance

import (
	"context"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
)

// The eviction defaults, declared once: serve, the admin API and `lifeboat
// gc` on a data directory all evict through Service.Evict.
const (
	// DefaultEvictionInterval is the time between periodic passes.
	DefaultEvictionInterval = time.Minute
	// DefaultKeepRecent: content accessed this recently is being pulled.
	DefaultKeepRecent = 10 * time.Minute
	// DefaultKeepDuringOutage: what the node lives on until upstream is
	// back.
	DefaultKeepDuringOutage = 24 * time.Hour
)

// EvictionOptions bound the cache's disk use. The zero value never evicts.
type EvictionOptions struct {
	// MaxSize caps the bytes cached; 0: no cap.
	MaxSize int64
	// MinFree and MinFreeFraction are the free-disk floor on the data
	// directory's filesystem, in bytes and as a fraction of its size; the
	// larger applies. 0: no floor.
	MinFree         int64
	MinFreeFraction float64
	// Interval between eviction passes. Zero: DefaultEvictionInterval.
	Interval time.Duration
	// KeepRecent: content accessed this recently is never evicted (it is
	// being pulled). Zero: DefaultKeepRecent.
	KeepRecent time.Duration
	// KeepDuringOutage: while any upstream's circuit breaker is open,
	// content accessed this recently is never evicted: it is what the node
	// lives on until upstream is back. Zero: DefaultKeepDuringOutage.
	KeepDuringOutage time.Duration
	// BeforePass, if set, runs before each periodic pass (to refresh pins
	// from containerd, say).
	BeforePass func(context.Context)
}

func (o EvictionOptions) withDefaults() EvictionOptions {
	if o.Interval <= 0 {
		o.Interval = DefaultEvictionInterval
	}
	if o.KeepRecent <= 0 {
		o.KeepRecent = DefaultKeepRecent
	}
	if o.KeepDuringOutage <= 0 {
		o.KeepDuringOutage = DefaultKeepDuringOutage
	}
	return o
}

// Evict runs one eviction pass (dry: reports only) and, for a real pass,
// updates the cache metrics.
func (s *Service) Evict(ctx context.Context, dryRun bool) (cache.EvictReport, error) {
	opts := s.eviction
	keep := opts.KeepRecent
	if s.Outage() {
		keep = max(keep, opts.KeepDuringOutage)
	}
	r, err := s.store.Evict(ctx, cache.EvictOptions{
		MaxSize: opts.MaxSize, MinFree: opts.MinFree, MinFreeFraction: opts.MinFreeFraction,
		KeepAccessedAfter: s.now().Add(-keep), DryRun: dryRun,
	})
	// A pass that ran to its end is counted even if it reports an error
	// (a free-disk floor it could not read): only a cancelled one is not.
	if !dryRun && ctx.Err() == nil {
		s.record(r, keep > opts.KeepRecent)
	}
	return r, err
}

// record counts and logs a real pass.
func (s *Service) record(r cache.EvictReport, outage bool) {
	m := s.metrics
	m.evictionRuns.Inc()
	m.cacheBytes.Set(float64(r.SizeAfter))
	m.cacheObjects.Set(float64(r.ObjectsAfter))
	m.pinnedBytes.Set(float64(r.PinnedBytes))
	if r.FreeBefore >= 0 {
		m.freeDisk.Set(float64(r.FreeBefore + r.Freed()))
	}
	m.minFreeDisk.Set(float64(r.MinFree))
	for _, e := range r.Removed {
		m.evictedBlobs.WithLabelValues(e.Reason).Inc()
		m.evictedBytes.WithLabelValues(e.Reason).Add(float64(e.Size))
	}
	if len(r.Removed) > 0 || len(r.TagLists) > 0 || r.Needed > 0 {
		s.log.Info("eviction", "needed_bytes", r.Needed, "freed_bytes", r.Freed(), "blobs", len(r.Removed),
			"tags", len(r.Tags), "tag_lists", len(r.TagLists), "size_bytes", r.SizeAfter, "duration", r.Duration, "outage", outage)
	}
	if r.Needed > r.Freed() {
		s.log.Warn("eviction could not free enough: the rest is pinned or in use", "needed_bytes", r.Needed, "freed_bytes", r.Freed())
	}
}

// RunEviction evicts every Interval until ctx ends.
func (s *Service) RunEviction(ctx context.Context) {
	every(ctx, func() error {
		if s.eviction.BeforePass != nil {
			s.eviction.BeforePass(ctx)
		}
		_, err := s.Evict(ctx, false)
		if err != nil && ctx.Err() == nil {
			s.log.Error("eviction failed", "error", err)
		}
		return err
	}, func(error) time.Duration { return s.eviction.Interval })
}
