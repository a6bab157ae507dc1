package registry

import (
	"net/http"

	"github.com/lifeboat-dev/lifeboat/proxy"
	"github.com/prometheus/client_golang/prometheus"
)

// Every label value below comes from a fixed set lifeboat chooses, never
// from a request: a client could otherwise mint a series per request (each
// kept for the life of the process). kind is a route kind (route.go);
// method and result are mapped by methodLabel and resultLabel; source is
// "cache" or "upstream". No label names a registry, repository or digest.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	served   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_registry_requests_total",
			Help: "Registry API requests, by kind (base, manifest, blob, tags, referrers, unsupported), method (GET, HEAD, other) and result (hit, miss, stale, error; aborted: the client stopped taking the body; empty for /v2/).",
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

// methodLabel maps a request method to GET, HEAD or other: the method is
// any token a client cares to send (a 50 KB one is accepted).
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead:
		return method
	}
	return "other"
}

// resultLabel is hit, miss, stale, error, aborted, or "" (no source: /v2/).
func resultLabel(o outcome, rec *recorder) string {
	switch {
	case rec.err != nil:
		return "aborted"
	case o.err != nil || rec.status >= 400:
		return "error"
	}
	switch o.source {
	case proxy.Hit, proxy.Miss, proxy.Stale:
		return string(o.source)
	}
	return ""
}
