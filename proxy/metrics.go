package proxy

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	upstreamRequests *prometheus.CounterVec
	upstreamBytes    *prometheus.CounterVec
	stale            *prometheus.CounterVec
	digestMismatch   *prometheus.CounterVec
	fills            *prometheus.CounterVec
	fillsInProgress  prometheus.Gauge
	fillWaiters      prometheus.Gauge
	circuitOpen      *prometheus.GaugeVec
	rateLimit        *prometheus.GaugeVec
	prefetch         *prometheus.CounterVec
	cacheBytes       prometheus.Gauge
	cacheObjects     prometheus.Gauge
	pinnedBytes      prometheus.Gauge
	freeDisk         prometheus.Gauge
	evictionRuns     prometheus.Counter
	evictedBlobs     *prometheus.CounterVec
	evictedBytes     *prometheus.CounterVec
	repairs          *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		upstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_upstream_requests_total",
			Help: "HTTP requests sent to upstream registries (token service included), by registry and status class (2xx, 3xx, 4xx, 5xx, or error when no answer came).",
		}, []string{"registry", "status_class"}),
		upstreamBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_upstream_fetched_bytes_total",
			Help: "Blob bytes downloaded from upstream registries.",
		}, []string{"registry"}),
		stale: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_proxy_stale_responses_total",
			Help: "Answers served from cache because upstream was unavailable, by registry and reason (refused, dns, tls, timeout, network, 5xx, 429, auth-unavailable).",
		}, []string{"registry", "reason"}),
		digestMismatch: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_proxy_digest_mismatches_total",
			Help: "Upstream content discarded because its bytes did not match its digest, by registry and kind (manifest, blob).",
		}, []string{"registry", "kind"}),
		fills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_proxy_fills_total",
			Help: "Finished blob downloads into the cache, by registry and result (ok, error, digest_mismatch, disk_full: relayed to its clients from memory, not stored).",
		}, []string{"registry", "result"}),
		fillsInProgress: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeboat_proxy_fills_in_progress",
			Help: "Blob downloads into the cache in progress.",
		}),
		fillWaiters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeboat_proxy_fill_clients",
			Help: "Clients reading a blob download in progress.",
		}),
		circuitOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lifeboat_upstream_circuit_open",
			Help: "1 while the registry's circuit breaker is open (upstream failing; cached content served without asking it), else 0.",
		}, []string{"registry"}),
		rateLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lifeboat_upstream_ratelimit_remaining",
			Help: "Pulls the registry says remain in its rate-limit window (its ratelimit-remaining header, as Docker Hub sends), last seen.",
		}, []string{"registry"}),
		prefetch: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_prefetch_total",
			Help: "Prefetches of configured images, by result (ok, error).",
		}, []string{"result"}),
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
	if reg != nil {
		reg.MustRegister(m.upstreamRequests, m.upstreamBytes, m.stale, m.digestMismatch, m.fills, m.fillsInProgress, m.fillWaiters,
			m.circuitOpen, m.rateLimit, m.prefetch, m.cacheBytes, m.cacheObjects, m.pinnedBytes, m.freeDisk,
			m.evictionRuns, m.evictedBlobs, m.evictedBytes, m.repairs)
	}
	return m
}

// instrument counts every request sent upstream.
func (m *metrics) instrument(registry string, next http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(r)
		class := "error"
		if err == nil {
			class = strconv.Itoa(resp.StatusCode/100) + "xx"
			if v, ok := rateLimitRemaining(resp.Header.Get("Ratelimit-Remaining")); ok {
				m.rateLimit.WithLabelValues(registry).Set(v)
			}
		}
		m.upstreamRequests.WithLabelValues(registry, class).Inc()
		return resp, err
	})
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// rateLimitRemaining parses "76;w=21600" (Docker Hub's ratelimit-remaining).
func rateLimitRemaining(h string) (float64, bool) {
	if h == "" {
		return 0, false
	}
	v, _, _ := strings.Cut(h, ";")
	n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	return n, err == nil
}
