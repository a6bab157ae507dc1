package registry

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	served   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_registry_requests_total",
			Help: "Registry API requests, by kind (base, manifest, blob, tags, unsupported), method and result (hit, miss, stale, error).",
		}, []string{"kind", "method", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lifeboat_registry_request_duration_seconds",
			Help:    "Time to answer a registry API request, body included, by kind and result.",
			Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"kind", "result"}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_registry_served_bytes_total",
			Help: "Response body bytes sent to clients, by source (cache: hits and stale answers; upstream: misses streamed while they are stored).",
		}, []string{"source"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.served)
	}
	return m
}
