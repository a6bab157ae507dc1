package peers

import "github.com/prometheus/client_golang/prometheus"

// metrics are the cluster tier's. Labels are fixed words, never a peer's
// address, a repository or a digest.
type metrics struct {
	requests     *prometheus.CounterVec // sent to peers
	received     prometheus.Counter
	served       prometheus.Counter
	servedReqs   *prometheus.CounterVec // answered to peers
	ownerFetches *prometheus.CounterVec
	ready        prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_peer_requests_total",
			Help: "Requests this node sent to peers, by kind (blob, manifest, tag; replicate: asking the next owner to take a copy) and result (ok: verified and used; not_found; rejected: failed verification or storage; error: unavailable; circuit_open: not sent; denied: the peer refused the token; cancelled: another peer answered first).",
		}, []string{"kind", "result"}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lifeboat_peer_received_bytes_total",
			Help: "Verified bytes received from peers (blobs and manifests).",
		}),
		served: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lifeboat_peer_served_bytes_total",
			Help: "Bytes this node's peer API sent to peers.",
		}),
		servedReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_peer_served_requests_total",
			Help: "Requests this node's peer API answered, by kind (base, blob, manifest, tag) and result (hit, owner_fetch, replicate, not_found, unauthorized, error).",
		}, []string{"kind", "result"}),
		ownerFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_peer_owner_fetches_total",
			Help: "Misses a peer asked this node for as the digest's owner, by kind (blob, manifest; replica: a copy the owner above asked this one to take) and result (ok, error).",
		}, []string{"kind", "result"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeboat_peers_ready",
			Help: "Ready lifeboats in the cluster as this node sees them, itself included when it is ready.",
		}),
	}
	for _, kind := range []string{"blob", "manifest", "tag"} {
		for _, r := range []string{"ok", "not_found", "rejected", "error", "circuit_open"} {
			m.requests.WithLabelValues(kind, r)
		}
	}
	m.servedReqs.WithLabelValues("base", "unauthorized")
	for _, kind := range []string{"blob", "manifest"} {
		m.ownerFetches.WithLabelValues(kind, "ok")
		m.ownerFetches.WithLabelValues(kind, "error")
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.received, m.served, m.servedReqs, m.ownerFetches, m.ready)
	}
	return m
}
