package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the proxy's: stale answers, verification failures and blob
// downloads. Labels are configured registry names and fixed words.
type metrics struct {
	upstreamBytes   *prometheus.CounterVec
	stale           *prometheus.CounterVec
	digestMismatch  *prometheus.CounterVec
	fills           *prometheus.CounterVec
	fillsInProgress prometheus.Gauge
	fillWaiters     prometheus.Gauge
}

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
	}
	if reg != nil {
		reg.MustRegister(m.upstreamBytes, m.stale, m.digestMismatch, m.fills, m.fillsInProgress, m.fillWaiters)
	}
	return m
}
