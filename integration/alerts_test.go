package integration

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// alertFor shortens the alerts that wait (5m, 10m, 15m in the chart) so
// that the test does not; the others fire at their first evaluation.
var alertFor = map[string]string{
	"LifeboatDown":                "5s",
	"LifeboatUpstreamCircuitOpen": "5s",
	"LifeboatRequestsFailing":     "5s",
	"LifeboatDiskHeadroomLow":     "5s",
}

// TestAlertsFireInARealPrometheus runs Debian's Prometheus, scraping the
// built lifeboat every second with the chart's rules (rendered by helm,
// for: shortened), drives an outage with one stale answer, one digest
// mismatch and one failed download, and waits for the matching alerts to
// fire. Each counter is incremented once, after Prometheus has scraped it:
// a counter created at its first increment would appear at 1 with no
// earlier sample, rate() would read no change, and its alert would never
// fire. Then every query of the Grafana dashboard runs against the same
// Prometheus: each must parse and return a series.
func TestAlertsFireInARealPrometheus(t *testing.T) {
	t.Parallel()
	helm := requireTool(t, "helm", "go install helm.sh/helm/v3/cmd/helm@v3.22.0")
	requireTool(t, "prometheus", installPrometheus)
	dir := t.TempDir()
	renderRules(t, helm, filepath.Join(dir, "rules.yaml"))

	// outage.test goes down; its first failed answer opens its circuit, so
	// the outage makes exactly one stale answer for 5xx. faulty.test
	// corrupts and cuts bodies. outage.test reports a rate limit of 5.
	outage, faulty := upstreamtest.Start(t), upstreamtest.Start(t)
	outage.SetRateLimitRemaining("5")
	img := upstreamtest.RandomImage(t, 64<<10, 2)
	outage.Push(t, "team/app:v1", img)
	bad := upstreamtest.RandomImage(t, 64<<10, 1)
	faulty.Push(t, "team/bad:v1", bad)
	badLayers, err := bad.Layers()
	require.NoError(t, err)
	badLayer, err := badLayers[0].Digest()
	require.NoError(t, err)

	cfg := filepath.Join(dir, "lifeboat.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`defaultRegistry: outage.test
maxSize: "1"   # every eviction pass leaves the cache above its cap: LifeboatDiskHeadroomLow
eviction:
  interval: 1s
upstreams:
  - name: outage.test
    url: `+outage.URL+`
    breaker:
      failures: 1
      backoff: 10m
  - name: faulty.test
    url: `+faulty.URL+`
`), 0o644))
	// A one-node cluster tier, so the dashboard's peer panels have series.
	peer := freeAddr(t)
	lb := startLifeboat(t, t.TempDir(), "--config", cfg, "--peer-listen", peer, "--peers", peer, "--peer-token-file", writeToken(t))
	pullCrane(t, lb, "team/app:v1") // cached on outage.test

	promStart := time.Now() // the rate limit and the cache size are known from the first scrape
	prom := startPrometheus(t, dir, `global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [rules.yaml]
scrape_configs:
  - job_name: lifeboat
    static_configs:
      - targets: [`+strings.TrimPrefix(lb.MetricsURL, "http://")+`]
        labels: {namespace: lb}
`)
	// Prometheus has the counters at 0 before anything happens.
	require.Eventually(t, func() bool {
		s, err := prom.query(`count_over_time(lifeboat_proxy_fills_total{registry="faulty.test",result="error"}[1m]) >= 2`)
		return err == nil && len(s) == 1
	}, time.Minute, 250*time.Millisecond, "Prometheus scraped lifeboat's zeros twice")

	outage.SetMode(upstreamtest.Status503)
	resp, body := lb.get(t, t.Context(), http.MethodGet, "/v2/team/app/manifests/v1?ns=outage.test")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.Equal(t, "stale", resp.Header.Get("X-Lifeboat-Cache"))
	outageAt := time.Now()

	faulty.SetMode(upstreamtest.CorruptBodies)
	resp, body = lb.get(t, t.Context(), http.MethodGet, "/v2/team/bad/manifests/v1?ns=faulty.test")
	require.Equal(t, http.StatusBadGateway, resp.StatusCode, "%s", body)
	mismatchAt := time.Now()

	faulty.SetMode(upstreamtest.DieMidBody)
	// A connection of its own: Go's client sends a GET again when a reused
	// connection closes before an answer, and a second failed download
	// would hide a counter created at its first increment.
	once := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := once.Get(lb.URL + "/v2/team/bad/blobs/" + badLayer.String() + "?ns=faulty.test"); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body) // cut short, or a 503
		resp.Body.Close()
	}
	failedFillAt := time.Now()

	want := []struct {
		alert  string
		labels map[string]string
		since  time.Time
	}{
		{"LifeboatUpstreamCircuitOpen", map[string]string{"registry": "outage.test"}, outageAt},
		{"LifeboatServingStale", map[string]string{"registry": "outage.test", "reason": "5xx"}, outageAt},
		{"LifeboatDigestMismatch", map[string]string{"registry": "faulty.test", "kind": "manifest"}, mismatchAt},
		{"LifeboatRequestsFailing", map[string]string{"kind": "manifest"}, mismatchAt},
		{"LifeboatFillErrors", map[string]string{"registry": "faulty.test", "result": "error"}, failedFillAt},
		{"LifeboatRateLimitLow", map[string]string{"registry": "outage.test"}, promStart},
		{"LifeboatDiskHeadroomLow", map[string]string{"limit": "cap"}, promStart},
	}
	firing := map[int]time.Duration{}
	var last []promAlert
	deadline := time.Now().Add(time.Minute)
	for len(firing) < len(want) && time.Now().Before(deadline) {
		alerts, err := prom.alerts()
		require.NoError(t, err)
		last = alerts
		for i, w := range want {
			if _, ok := firing[i]; !ok && hasAlert(alerts, w.alert, w.labels, "firing") {
				firing[i] = time.Since(w.since)
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	for i, w := range want {
		if took, ok := firing[i]; assert.True(t, ok, "%s %v is not firing within a minute; alerts: %v", w.alert, w.labels, last) {
			t.Logf("%s %v firing %.1fs after its event (for: %s)", w.alert, w.labels, took.Seconds(), cmp.Or(alertFor[w.alert], "0s"))
		}
	}
	assert.False(t, hasAlert(last, "LifeboatDown", nil, ""), "lifeboat is up: %v", last)
	// Each event moved its counter by one, so the alerts above fired on a
	// first increment (a counter created by it would not have fired).
	metrics := scrape(t, lb)
	for _, series := range []string{
		`lifeboat_proxy_stale_responses_total{reason="5xx",registry="outage.test"}`,
		`lifeboat_proxy_digest_mismatches_total{kind="manifest",registry="faulty.test"}`,
		`lifeboat_proxy_fills_total{registry="faulty.test",result="error"}`,
		`lifeboat_registry_requests_total{kind="manifest",method="GET",result="error"}`,
	} {
		assert.Equal(t, 1.0, countMetric(metrics, series), series)
	}

	for _, q := range dashboardQueries(t) {
		series, err := prom.query(q)
		if assert.NoError(t, err, "dashboard query does not run") {
			assert.NotEmpty(t, series, "dashboard query returns no series: %s", q)
		}
	}
}

// hasAlert reports whether alerts holds name with these labels (and more)
// in state (any state when empty).
func hasAlert(alerts []promAlert, name string, labels map[string]string, state string) bool {
	for _, a := range alerts {
		if a.Labels["alertname"] != name || (state != "" && a.State != state) {
			continue
		}
		match := true
		for k, v := range labels {
			match = match && a.Labels[k] == v
		}
		if match {
			return true
		}
	}
	return false
}

// renderRules renders the chart's PrometheusRule with helm (job
// "lifeboat", namespace lb, for: shortened) and writes its groups to path
// as a Prometheus rules file.
func renderRules(t *testing.T, helm, path string) {
	t.Helper()
	args := []string{"template", "rel", filepath.Join("..", "charts", "lifeboat"), "--namespace", "lb",
		"--show-only", "templates/prometheusrule.yaml",
		"--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.prometheusRule.job=lifeboat"}
	for alert, d := range alertFor {
		args = append(args, "--set", "metrics.prometheusRule.for."+alert+"="+d)
	}
	cmd := exec.CommandContext(t.Context(), helm, args...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"), "HELM_DATA_HOME="+filepath.Join(home, "data"))
	out, err := cmd.Output()
	require.NoError(t, err, "helm %v: %s", args, out)
	var rule struct {
		Spec struct {
			Groups []map[string]any `yaml:"groups"`
		} `yaml:"spec"`
	}
	require.NoError(t, yaml.Unmarshal(out, &rule))
	require.NotEmpty(t, rule.Spec.Groups, "%s", out)
	b, err := yaml.Marshal(map[string]any{"groups": rule.Spec.Groups})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

// dashboardQueries is every PromQL query of the chart's Grafana dashboard,
// its variables replaced as Grafana would (every node, a 1m rate
// interval, a 5m range); label_values(m, l) becomes group by (l) (m).
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "charts", "lifeboat", "files", "dashboard.json"))
	require.NoError(t, err)
	var d struct {
		Panels     []dashboardPanel `json:"panels"`
		Templating struct {
			List []struct {
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(t, json.Unmarshal(raw, &d))
	var exprs []string
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_]+)\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := fmt.Sprint(v.Query)
		if m, ok := v.Query.(map[string]any); ok {
			q = fmt.Sprint(m["query"])
		}
		if sub := labelValues.FindStringSubmatch(q); sub != nil {
			q = "group by (" + sub[2] + ") (" + sub[1] + ")"
		}
		exprs = append(exprs, q)
	}
	require.Greater(t, len(exprs), 10, "the dashboard's queries were not found")
	replacer := strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "5m", "$instance", ".*")
	for i, e := range exprs {
		exprs[i] = replacer.Replace(e)
		require.NotContains(t, exprs[i], "$", "a dashboard variable the test does not replace")
	}
	return exprs
}

type dashboardPanel struct {
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}
