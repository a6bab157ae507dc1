package credentials

import "github.com/prometheus/client_golang/prometheus"

// Results of a plugin or helper call, as the calls metric labels them.
const (
	resultOK       = "ok"
	resultNotFound = "not-found" // a helper that holds nothing for the registry
	resultError    = "error"
	resultTimeout  = "timeout"
)

// metrics count plugin and helper calls and docker config reloads. Labels
// are configured names (a provider's name, a helper's suffix), never an
// image or a registry.
type metrics struct {
	calls   *prometheus.CounterVec
	reloads *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_credentials_calls_total",
			Help: "Credential provider plugin and docker credential helper runs, by kind (plugin, helper), name and result (ok, not-found, error, timeout). Answers served from a plugin's cache are not runs.",
		}, []string{"kind", "name", "result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_credentials_docker_config_reloads_total",
			Help: "Times the docker config file was found changed and read again, by result (ok; error: the previous content is kept).",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.calls, m.reloads)
	}
	return m
}
