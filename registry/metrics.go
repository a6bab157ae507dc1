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
//
// newMetrics creates at zero the series an alert or the dashboard reads,
// for every value of those fixed sets (this package has no registry
// label): a series that first appears at 1 has no earlier sample, so
// rate() and increase() read its first increment as nothing and an alert
// on it does not fire. requests: result "error" for every kind × method;
// hit, miss, stale and aborted for manifests, blobs and tag lists × GET
// and HEAD (a result a route cannot have, as a HEAD that aborted, stays
// at 0). served: both sources. The duration histogram is created at its
// first observation: no alert reads it.
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
	for _, k := range kinds {
		for _, method := range methods {
			m.requests.WithLabelValues(string(k), method, "error")
		}
	}
	for _, k := range []kind{kindManifest, kindBlob, kindTags} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			for _, result := range []string{string(proxy.Hit), string(proxy.Miss), string(proxy.Stale), "aborted"} {
				m.requests.WithLabelValues(string(k), method, result)
			}
		}
	}
	m.served.WithLabelValues("cache")
	m.served.WithLabelValues("upstream")
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.served)
	}
	return m
}

// The closed sets of the kind and method labels.
var (
	kinds   = [...]kind{kindBase, kindManifest, kindBlob, kindTags, kindReferrers, kindUnsupport}
	methods = [...]string{http.MethodGet, http.MethodHead, "other"}
)

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
