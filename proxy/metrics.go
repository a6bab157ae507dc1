package proxy

import (
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the proxy's: stale answers, verification failures and blob
// downloads. Labels are configured registry names and fixed words.
//
// Every labelled counter starts at zero for every label value known at
// start, because a series that first appears at 1 has no earlier sample:
// rate() and increase() read its first increment as nothing, and the alert
// on one digest mismatch, or on the first stale answers of an outage,
// would never fire. newMetrics does not know the registries; New calls
// initRegistry for each configured one (a registry added later must be
// initialized when it appears), for every value of the fixed enums:
// stale reasons (upstream.Reasons but denied, which is never served
// stale), fill results (fillResultLabels), mismatch kinds and busy kinds.
type metrics struct {
	upstreamBytes   *prometheus.CounterVec
	stale           *prometheus.CounterVec
	digestMismatch  *prometheus.CounterVec
	fills           *prometheus.CounterVec
	fillsInProgress prometheus.Gauge
	fillsQueued     prometheus.Gauge
	fillWaiters     prometheus.Gauge
	busy            *prometheus.CounterVec
}

// The results of a finished fill, the closed set of its result label.
const (
	fillOK             = "ok"
	fillError          = "error"
	fillDigestMismatch = "digest_mismatch"
	fillDiskFull       = "disk_full" // relayed from memory, not stored
	fillNoSpace        = "no_space"
	fillTooLarge       = "too_large"
	fillAbandoned      = "abandoned"
	fillYielded        = "yielded"
)

var fillResultLabels = [...]string{fillOK, fillError, fillDigestMismatch, fillDiskFull, fillNoSpace, fillTooLarge, fillAbandoned, fillYielded}

// The kind labels of digest mismatches (what was discarded) and of busy
// answers (which slot was not free).
var (
	mismatchKinds = [...]string{"manifest", "blob"}
	busyKinds     = [...]string{"blob", "request"}
)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
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
			Help: "Finished blob downloads into the cache, by registry and result (ok, error, digest_mismatch, disk_full: relayed to its clients from memory, not stored; no_space: refused, would not fit on the disk; too_large: refused, beyond its size bound; abandoned: every client left while it waited for a slot; yielded: cancelled with no client left, its slot given to a download somebody waited for).",
		}, []string{"registry", "result"}),
		fillsInProgress: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeboat_proxy_fills_in_progress",
			Help: "Blob downloads into the cache in progress (holding a download slot).",
		}),
		fillsQueued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeboat_proxy_fills_queued",
			Help: "Blob downloads waiting for a download slot of their registry.",
		}),
		fillWaiters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeboat_proxy_fill_clients",
			Help: "Clients reading a blob download in progress.",
		}),
		busy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_proxy_busy_responses_total",
			Help: "Requests answered unavailable because no upstream slot of their registry freed within their budget, by registry and kind (blob: a download slot; request: a slot for a manifest, HEAD or tag request).",
		}, []string{"registry", "kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.upstreamBytes, m.stale, m.digestMismatch, m.fills, m.fillsInProgress, m.fillsQueued, m.fillWaiters, m.busy)
	}
	return m
}

// initRegistry creates every labelled series of registry at zero.
func (m *metrics) initRegistry(registry string) {
	m.upstreamBytes.WithLabelValues(registry)
	for _, reason := range upstream.Reasons() {
		if reason != upstream.ReasonDenied {
			m.stale.WithLabelValues(registry, reason)
		}
	}
	for _, kind := range mismatchKinds {
		m.digestMismatch.WithLabelValues(registry, kind)
	}
	for _, result := range fillResultLabels {
		m.fills.WithLabelValues(registry, result)
	}
	for _, kind := range busyKinds {
		m.busy.WithLabelValues(registry, kind)
	}
}
