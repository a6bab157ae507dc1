package proxy

import (
	"context"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
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
	// Interval between eviction passes. Zero: 1m.
	Interval time.Duration
	// KeepRecent: content accessed this recently is never evicted (it is
	// being pulled). Zero: 10m.
	KeepRecent time.Duration
	// KeepDuringOutage: while any upstream's circuit breaker is open,
	// content accessed this recently is never evicted: it is what the node
	// lives on until upstream is back. Zero: 24h.
	KeepDuringOutage time.Duration
	// BeforePass, if set, runs before each periodic pass (to refresh pins
	// from containerd, say).
	BeforePass func(context.Context)
}

func (o EvictionOptions) withDefaults() EvictionOptions {
	if o.Interval <= 0 {
		o.Interval = time.Minute
	}
	if o.KeepRecent <= 0 {
		o.KeepRecent = 10 * time.Minute
	}
	if o.KeepDuringOutage <= 0 {
		o.KeepDuringOutage = 24 * time.Hour
	}
	return o
}

// Evict runs one eviction pass (dry: reports only) and updates the cache
// metrics.
func (p *Proxy) Evict(opts EvictionOptions, dryRun bool) (cache.EvictReport, error) {
	opts = opts.withDefaults()
	keep := opts.KeepRecent
	if p.AnyCircuitOpen() {
		keep = max(keep, opts.KeepDuringOutage)
	}
	r, err := p.store.Evict(context.TODO(), cache.EvictOptions{
		MaxSize: opts.MaxSize, MinFree: opts.MinFree, MinFreeFraction: opts.MinFreeFraction,
		KeepAccessedAfter: p.now().Add(-keep), DryRun: dryRun,
	})
	if err != nil {
		return r, err
	}
	if dryRun {
		return r, nil
	}
	m := p.metrics
	m.evictionRuns.Inc()
	m.cacheBytes.Set(float64(r.SizeAfter))
	m.cacheObjects.Set(float64(r.ObjectsAfter))
	m.pinnedBytes.Set(float64(r.PinnedBytes))
	if r.FreeBefore >= 0 {
		m.freeDisk.Set(float64(r.FreeBefore + r.Freed()))
	}
	for _, e := range r.Removed {
		m.evictedBlobs.WithLabelValues(e.Reason).Inc()
		m.evictedBytes.WithLabelValues(e.Reason).Add(float64(e.Size))
	}
	if len(r.Removed) > 0 || r.Needed > 0 {
		p.log.Info("eviction", "needed_bytes", r.Needed, "freed_bytes", r.Freed(), "blobs", len(r.Removed),
			"tags", len(r.Tags), "size_bytes", r.SizeAfter, "duration", r.Duration, "outage", keep > opts.KeepRecent)
	}
	if r.Needed > r.Freed() {
		p.log.Warn("eviction could not free enough: the rest is pinned or in use", "needed_bytes", r.Needed, "freed_bytes", r.Freed())
	}
	return r, nil
}

// RunEviction evicts every opts.Interval until ctx ends.
func (p *Proxy) RunEviction(ctx context.Context, opts EvictionOptions) {
	opts = opts.withDefaults()
	t := time.NewTicker(opts.Interval)
	defer t.Stop()
	for {
		if opts.BeforePass != nil {
			opts.BeforePass(ctx)
		}
		if _, err := p.Evict(opts, false); err != nil {
			p.log.Error("eviction failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Verify re-hashes every cached blob; with repair, damaged ones are removed
// so they are fetched again.
func (p *Proxy) Verify(repair bool) (cache.VerifyReport, error) {
	r, err := p.store.Verify(context.TODO(), repair)
	for _, d := range r.Damaged {
		if d.Removed {
			p.metrics.repairs.WithLabelValues("blob_removed").Inc()
		}
		p.log.Error("cached blob damaged", "digest", d.Digest, "problem", d.Problem, "removed", d.Removed)
	}
	return r, err
}

// IndexRebuilt records that the store's index was found corrupt at start
// and rebuilt from the blob files.
func (p *Proxy) IndexRebuilt(movedAside string) {
	p.metrics.repairs.WithLabelValues("index_rebuilt").Inc()
	p.log.Error("the cache index was corrupt: moved aside and rebuilt from the blob files (blobs and manifests re-hashed and kept; cached tags lost)", "moved_to", movedAside)
}
