package upstream

import (
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the upstream request, circuit and rate-limit metrics, shared
// by every Client of a process. The registry label is a configured
// registry name, never a value a client or upstream chose.
//
// Series start at zero: a counter that first appears at 1 has no earlier
// sample, and rate() and increase() read its first increment as nothing,
// so an alert on it would not fire. NewMetrics knows no registry; New
// initializes each one's series when its Client is built (a registry
// added later is initialized when its Client is): the requests counter
// for every status class, and the circuit gauge at 0 (breakerReporter).
// The rate-limit gauge is left out until upstream sends the header: a 0
// would say the budget is spent.
type Metrics struct {
	requests    *prometheus.CounterVec
	circuitOpen *prometheus.GaugeVec
	rateLimit   *prometheus.GaugeVec
}

// NewMetrics builds the metrics and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_upstream_requests_total",
			Help: "HTTP requests sent to upstream registries (token service included), by registry and status class (2xx, 3xx, 4xx, 5xx, or error when no answer came).",
		}, []string{"registry", "status_class"}),
		circuitOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lifeboat_upstream_circuit_open",
			Help: "1 while the registry's circuit breaker is open (upstream failing; cached content served without asking it), else 0.",
		}, []string{"registry"}),
		rateLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lifeboat_upstream_ratelimit_remaining",
			Help: "Pulls the registry says remain in its rate-limit window (its ratelimit-remaining header, as Docker Hub sends), last seen.",
		}, []string{"registry"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.circuitOpen, m.rateLimit)
	}
	return m
}

// statusClasses is the closed set of the status_class label.
var statusClasses = [...]string{"2xx", "3xx", "4xx", "5xx", "error"}

// initRegistry creates registry's request series at zero. A nil *Metrics
// does nothing.
func (m *Metrics) initRegistry(registry string) {
	if m == nil {
		return
	}
	for _, class := range statusClasses {
		m.requests.WithLabelValues(registry, class)
	}
}

// instrument counts every request sent upstream. A nil *Metrics counts
// nothing.
func (m *Metrics) instrument(registry string, next http.RoundTripper) http.RoundTripper {
	if m == nil {
		return next
	}
	return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(r)
		class := "error"
		if err == nil {
			class = statusClass(resp.StatusCode)
			if v, ok := rateLimitRemaining(resp.Header.Get("Ratelimit-Remaining")); ok {
				m.rateLimit.WithLabelValues(registry).Set(v)
			}
		}
		m.requests.WithLabelValues(registry, class).Inc()
		return resp, err
	})
}

// statusClass is 2xx, 3xx, 4xx or 5xx; a status outside 200-599 (a 1xx
// never reaches here) counts as error, keeping the label set closed.
func statusClass(code int) string {
	if code < 200 || code > 599 {
		return "error"
	}
	return strconv.Itoa(code/100) + "xx"
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

// breakerReporter logs the breaker's transitions and keeps the circuit
// gauge, which starts at 0 so an alert on it has a series to read.
func breakerReporter(registry string, log *slog.Logger, m *Metrics) func(open bool, reason string) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	set := func(float64) {}
	if m != nil {
		g := m.circuitOpen.WithLabelValues(registry)
		set = g.Set
	}
	set(0)
	return func(open bool, reason string) {
		if open {
			set(1)
			log.Warn("circuit breaker opened: answering from cache without waiting on upstream", "registry", registry, "reason", reason)
			return
		}
		set(0)
		log.Info("circuit breaker closed: upstream answers again", "registry", registry)
	}
}
