package maintenance

import "github.com/prometheus/client_golang/prometheus"

// metrics are the cache gauges and the prefetch, eviction and repair
// counters. Every labelled counter is created at zero for each value of
// its fixed set (prefetch results, eviction reasons, repair actions): a
// series that first appears at 1 has no earlier sample, so rate() and
// increase() read its first increment as nothing and an alert on it would
// not fire. No label names a registry, repository or digest.
type metrics struct {
	prefetch     *prometheus.CounterVec
	maxSize      prometheus.Gauge
	minFreeDisk  prometheus.Gauge
	cacheBytes   prometheus.Gauge
	cacheObjects prometheus.Gauge
	pinnedBytes  prometheus.Gauge
	freeDisk     prometheus.Gauge
	evictionRuns prometheus.Counter
	evictedBlobs *prometheus.CounterVec
	evictedBytes *prometheus.CounterVec
	repairs      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		prefetch: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_prefetch_total",
			Help: "Prefetches of configured images, by result (ok, error).",
		}, []string{"result"}),
		maxSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeboat_cache_max_size_bytes", Help: "The cap on the bytes the cache holds (--max-size); 0: no cap.",
		}),
		minFreeDisk: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeboat_cache_min_free_disk_bytes", Help: "The free-disk floor on the data directory's filesystem (--min-free-disk), in bytes, as of the last eviction pass; 0: no floor.",
		}),
		cacheBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeboat_cache_size_bytes", Help: "Bytes the cache holds, as of the last eviction pass.",
		}),
		cacheObjects: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeboat_cache_objects", Help: "Blobs (manifests included) the cache holds, as of the last eviction pass.",
		}),
		pinnedBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeboat_cache_pinned_bytes", Help: "Bytes of pinned images (never evicted), as of the last eviction pass.",
		}),
		freeDisk: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeboat_cache_free_disk_bytes", Help: "Free bytes on the data directory's filesystem, as of the last eviction pass.",
		}),
		evictionRuns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lifeboat_cache_eviction_runs_total", Help: "Eviction passes run.",
		}),
		evictedBlobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_cache_evicted_blobs_total", Help: "Blobs evicted, by reason (orphan, lru).",
		}, []string{"reason"}),
		evictedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_cache_evicted_bytes_total", Help: "Bytes evicted, by reason (orphan, lru).",
		}, []string{"reason"}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_cache_repairs_total", Help: "Repairs of the store, by action (index_rebuilt, blob_removed).",
		}, []string{"action"}),
	}
	for _, result := range []string{"ok", "error"} {
		m.prefetch.WithLabelValues(result)
	}
	for _, reason := range []string{"orphan", "lru"} {
		m.evictedBlobs.WithLabelValues(reason)
		m.evictedBytes.WithLabelValues(reason)
	}
	for _, action := range []string{"index_rebuilt", "blob_removed"} {
		m.repairs.WithLabelValues(action)
	}
	if reg != nil {
		reg.MustRegister(m.prefetch, m.maxSize, m.minFreeDisk, m.cacheBytes, m.cacheObjects, m.pinnedBytes, m.freeDisk,
			m.evictionRuns, m.evictedBlobs, m.evictedBytes, m.repairs)
	}
	return m
}
