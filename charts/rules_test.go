package charts

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

const installPromtool = "apt-get install -y prometheus"

// promtoolBinary finds promtool (Debian's prometheus package). Without it
// the test fails in CI and is skipped elsewhere, naming the install command.
func promtoolBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	missingTool(t, "promtool not found on PATH; install it with: "+installPromtool)
	return ""
}

// The promtool unit-test file format (promtool test rules).
type (
	promTestFile struct {
		RuleFiles          []string       `json:"rule_files"`
		EvaluationInterval string         `json:"evaluation_interval"`
		Tests              []promTestCase `json:"tests"`
	}
	promTestCase struct {
		Interval      string          `json:"interval"`
		InputSeries   []promSeries    `json:"input_series"`
		AlertRuleTest []promAlertTest `json:"alert_rule_test"`
	}
	promSeries struct {
		Series string `json:"series"`
		Values string `json:"values"`
	}
	promAlertTest struct {
		EvalTime  string         `json:"eval_time"`
		Alertname string         `json:"alertname"`
		ExpAlerts []promExpAlert `json:"exp_alerts"`
	}
	promExpAlert struct {
		ExpLabels      map[string]string `json:"exp_labels"`
		ExpAnnotations map[string]string `json:"exp_annotations"`
	}
)

// scenario is one promtool test of one alert: series sampled every
// minute, and what must be firing at some evaluation times.
type scenario struct {
	kind   string            // fires, quiet, or first (a counter's first increment from 0)
	series map[string]string // series -> promtool values ("0 0 1x10", "_" for no sample)
	evals  []evalAt
}

// evalAt is an evaluation: at minutes after the start (plus the alert's
// for: when afterFor), the alerts firing have these labels (the
// expression's; the rule's own labels are added), none when empty.
type evalAt struct {
	at       int
	afterFor bool
	fire     []map[string]string
	value    string // $value in the annotations of a firing alert
}

const (
	inst = `instance="10.0.0.1:9090", job="rel-lifeboat-metrics", namespace="lb"`
	reg  = `registry="docker.io"`
)

func at(min int, fire ...map[string]string) evalAt { return evalAt{at: min, fire: fire} }

func afterFor(min int, fire ...map[string]string) evalAt {
	return evalAt{at: min, afterFor: true, fire: fire}
}

// alertScenarios are, per alert the chart ships, a series that fires it,
// one that must not, and the first increment of a counter created at 0
// (with, for the counters, the same increment on a series that appears at
// 1, as lifeboat's counters did before they were initialized: it never
// fires, which is why they are).
var alertScenarios = map[string][]scenario{
	"LifeboatDown": {
		{"fires", map[string]string{`up{` + inst + `}`: "1 1 0x30"}, []evalAt{
			afterFor(1), // the condition holds from 2m: pending, not yet firing
			afterFor(3, map[string]string{"instance": "10.0.0.1:9090", "job": "rel-lifeboat-metrics", "namespace": "lb"}),
		}},
		{"quiet", map[string]string{
			`up{` + inst + `}`: "1x30",
			`up{instance="10.0.0.2:9090", job="other", namespace="lb"}`: "0x30", // not lifeboat
		}, []evalAt{afterFor(3)}},
		{"first", map[string]string{`up{` + inst + `}`: "0x30"}, []evalAt{ // down from its first scrape
			afterFor(1, map[string]string{"instance": "10.0.0.1:9090", "job": "rel-lifeboat-metrics", "namespace": "lb"}),
		}},
	},
	"LifeboatUpstreamCircuitOpen": {
		{"fires", map[string]string{
			`lifeboat_upstream_circuit_open{` + inst + `, ` + reg + `}`:                          "0 0 1x30",
			`lifeboat_upstream_circuit_open{instance="b", job="j", namespace="lb", ` + reg + `}`: "0x30",
		}, []evalAt{afterFor(1), afterFor(3, map[string]string{"registry": "docker.io"})}},
		{"quiet", map[string]string{`lifeboat_upstream_circuit_open{` + inst + `, ` + reg + `}`: "0 1 1 0x30"}, // a short open: the breaker's probe succeeded
			[]evalAt{afterFor(3)}},
		{"first", map[string]string{`lifeboat_upstream_circuit_open{` + inst + `, ` + reg + `}`: "1x30"}, // open from the start
			[]evalAt{afterFor(1, map[string]string{"registry": "docker.io"})}},
	},
	"LifeboatServingStale": {
		{"fires", map[string]string{`lifeboat_proxy_stale_responses_total{` + inst + `, ` + reg + `, reason="5xx"}`: "0 0 0 5x10"},
			[]evalAt{at(2), at(4, map[string]string{"registry": "docker.io", "reason": "5xx"})}},
		{"quiet", map[string]string{
			`lifeboat_proxy_stale_responses_total{` + inst + `, ` + reg + `, reason="5xx"}`:     "0x20",
			`lifeboat_proxy_stale_responses_total{` + inst + `, ` + reg + `, reason="refused"}`: "7x20", // old stale answers
		}, []evalAt{at(10)}},
		{"first", map[string]string{
			`lifeboat_proxy_stale_responses_total{` + inst + `, ` + reg + `, reason="refused"}`: "0 0 0 1x10",
			`lifeboat_proxy_stale_responses_total{` + inst + `, ` + reg + `, reason="timeout"}`: "_ _ _ 1x10", // lazily created: never seen
		}, []evalAt{at(4, map[string]string{"registry": "docker.io", "reason": "refused"}), at(6, map[string]string{"registry": "docker.io", "reason": "refused"})}},
	},
	"LifeboatFillErrors": {
		{"fires", map[string]string{`lifeboat_proxy_fills_total{` + inst + `, ` + reg + `, result="error"}`: "0 0 3x10"},
			[]evalAt{at(1), at(3, map[string]string{"registry": "docker.io", "result": "error"})}},
		{"quiet", map[string]string{
			`lifeboat_proxy_fills_total{` + inst + `, ` + reg + `, result="error"}`:     "0x20",
			`lifeboat_proxy_fills_total{` + inst + `, ` + reg + `, result="ok"}`:        "0+5x20",
			`lifeboat_proxy_fills_total{` + inst + `, ` + reg + `, result="abandoned"}`: "0+1x20", // clients left: not a failure
			`lifeboat_proxy_fills_total{` + inst + `, ` + reg + `, result="yielded"}`:   "0+1x20",
		}, []evalAt{at(5)}},
		{"first", map[string]string{
			`lifeboat_proxy_fills_total{` + inst + `, ` + reg + `, result="too_large"}`: "0 0 1x10",
			`lifeboat_proxy_fills_total{` + inst + `, ` + reg + `, result="error"}`:     "_ _ 1x10", // lazily created: never seen
		}, []evalAt{at(3, map[string]string{"registry": "docker.io", "result": "too_large"})}},
	},
	"LifeboatDigestMismatch": {
		{"fires", map[string]string{`lifeboat_proxy_digest_mismatches_total{` + inst + `, ` + reg + `, kind="blob"}`: "0 0 2x20"},
			[]evalAt{at(1), at(3, map[string]string{"registry": "docker.io", "kind": "blob"})}},
		{"quiet", map[string]string{`lifeboat_proxy_digest_mismatches_total{` + inst + `, ` + reg + `, kind="blob"}`: "0 0 2x20"},
			[]evalAt{at(14)}}, // ten minutes after the last one
		{"first", map[string]string{
			`lifeboat_proxy_digest_mismatches_total{` + inst + `, ` + reg + `, kind="manifest"}`: "0 0 1x20",
			`lifeboat_proxy_digest_mismatches_total{` + inst + `, ` + reg + `, kind="blob"}`:     "_ _ 1x20", // lazily created: never seen
		}, []evalAt{at(3, map[string]string{"registry": "docker.io", "kind": "manifest"}), at(8, map[string]string{"registry": "docker.io", "kind": "manifest"})}},
	},
	"LifeboatRequestsFailing": {
		{"fires", map[string]string{`lifeboat_registry_requests_total{` + inst + `, kind="manifest", method="GET", result="error"}`: "0 0 3+3x40"},
			[]evalAt{afterFor(1), afterFor(3, map[string]string{"kind": "manifest"})}},
		{"quiet", map[string]string{
			`lifeboat_registry_requests_total{` + inst + `, kind="blob", method="GET", result="hit"}`:   "0+10x40",
			`lifeboat_registry_requests_total{` + inst + `, kind="blob", method="GET", result="error"}`: "0 1 2 3 3x40", // three minutes of errors
		}, []evalAt{afterFor(3)}},
		{"first", map[string]string{`lifeboat_registry_requests_total{` + inst + `, kind="tags", method="GET", result="error"}`: "0 0 1+1x40"},
			// The first error, at 2m, starts the for: firing at 2m + for.
			[]evalAt{afterFor(1), afterFor(2, map[string]string{"kind": "tags"})}},
	},
	"LifeboatPeerContentRejected": {
		{"fires", map[string]string{`lifeboat_peer_requests_total{` + inst + `, kind="blob", result="rejected"}`: "0 0 2x10"},
			[]evalAt{at(1), at(3, map[string]string{"kind": "blob"})}},
		{"quiet", map[string]string{
			`lifeboat_peer_requests_total{` + inst + `, kind="blob", result="rejected"}`: "0x20",
			`lifeboat_peer_requests_total{` + inst + `, kind="blob", result="ok"}`:       "0+5x20",
		}, []evalAt{at(5)}},
		{"first", map[string]string{`lifeboat_peer_requests_total{` + inst + `, kind="manifest", result="rejected"}`: "0 0 1x10"},
			[]evalAt{at(3, map[string]string{"kind": "manifest"})}},
	},
	"LifeboatPeersUnreachable": {
		{"fires", map[string]string{`lifeboat_peer_requests_total{` + inst + `, kind="blob", result="circuit_open"}`: "0 0 0 100+10x40"},
			[]evalAt{afterFor(1), afterFor(4, map[string]string{"instance": "10.0.0.1:9090"})}},
		{"quiet", map[string]string{`lifeboat_peer_requests_total{` + inst + `, kind="blob", result="error"}`: "0 0 0 10x40"}, // a few failures, once
			[]evalAt{afterFor(4)}},
		{"first", map[string]string{`lifeboat_peer_requests_total{` + inst + `, kind="blob", result="error"}`: "0+30x40"},
			[]evalAt{afterFor(3, map[string]string{"instance": "10.0.0.1:9090"})}},
	},
	"LifeboatRateLimitLow": {
		{"fires", map[string]string{`lifeboat_upstream_ratelimit_remaining{` + inst + `, ` + reg + `}`: "100 50 5x10"},
			[]evalAt{at(1), {at: 2, fire: []map[string]string{{"registry": "docker.io"}}, value: "5"}}},
		{"quiet", map[string]string{`lifeboat_upstream_ratelimit_remaining{` + inst + `, ` + reg + `}`: "100 50 20x10"},
			[]evalAt{at(5)}},
		{"first", map[string]string{`lifeboat_upstream_ratelimit_remaining{` + inst + `, ` + reg + `}`: "3x10"}, // low at the first answer
			[]evalAt{{at: 0, fire: []map[string]string{{"registry": "docker.io"}}, value: "3"}}},
	},
	"LifeboatDiskHeadroomLow": {
		{"fires", map[string]string{
			`lifeboat_cache_size_bytes{` + inst + `}`:          "1000x40",
			`lifeboat_cache_max_size_bytes{` + inst + `}`:      "800x40",
			`lifeboat_cache_free_disk_bytes{` + inst + `}`:     "50x40",
			`lifeboat_cache_min_free_disk_bytes{` + inst + `}`: "100x40",
		}, []evalAt{afterFor(-1), afterFor(1,
			map[string]string{"instance": "10.0.0.1:9090", "job": "rel-lifeboat-metrics", "namespace": "lb", "limit": "cap"},
			map[string]string{"instance": "10.0.0.1:9090", "job": "rel-lifeboat-metrics", "namespace": "lb", "limit": "free-disk floor"},
		)}},
		{"quiet", map[string]string{
			`lifeboat_cache_size_bytes{` + inst + `}`:                                   "1000 1000 700x40", // eviction caught up
			`lifeboat_cache_max_size_bytes{` + inst + `}`:                               "800x40",
			`lifeboat_cache_free_disk_bytes{` + inst + `}`:                              "500x40",
			`lifeboat_cache_min_free_disk_bytes{` + inst + `}`:                          "100x40",
			`lifeboat_cache_size_bytes{instance="b", job="j", namespace="lb"}`:          "5000x40", // no cap
			`lifeboat_cache_max_size_bytes{instance="b", job="j", namespace="lb"}`:      "0x40",
			`lifeboat_cache_free_disk_bytes{instance="b", job="j", namespace="lb"}`:     "500x40",
			`lifeboat_cache_min_free_disk_bytes{instance="b", job="j", namespace="lb"}`: "0x40", // no floor
		}, []evalAt{afterFor(1)}},
		{"first", map[string]string{ // before the first eviction pass every gauge but the cap is 0
			`lifeboat_cache_size_bytes{` + inst + `}`:          "0x40",
			`lifeboat_cache_max_size_bytes{` + inst + `}`:      "800x40",
			`lifeboat_cache_free_disk_bytes{` + inst + `}`:     "0x40",
			`lifeboat_cache_min_free_disk_bytes{` + inst + `}`: "0x40",
		}, []evalAt{afterFor(1)}},
	},
	"LifeboatRuntimeBypassesLifeboat": {
		{"fires", map[string]string{
			`lifeboat_node_config_ok{` + inst + `}`:                          "1 1 0x30",
			`lifeboat_node_config_ok{instance="b", job="j", namespace="lb"}`: "1x30",
		}, []evalAt{afterFor(1), afterFor(3, map[string]string{"instance": "10.0.0.1:9090", "job": "rel-lifeboat-metrics", "namespace": "lb"})}},
		{"quiet", map[string]string{`lifeboat_node_config_ok{` + inst + `}`: "1 0 0 1x30"}, // a short gap: the init container rewrote the files
			[]evalAt{afterFor(3)}},
		{"first", map[string]string{`lifeboat_node_config_ok{` + inst + `}`: "0x30"}, // bypassed from the start
			[]evalAt{afterFor(1, map[string]string{"instance": "10.0.0.1:9090", "job": "rel-lifeboat-metrics", "namespace": "lb"})}},
	},
}

// TestAlertRules renders the chart's PrometheusRule, writes its groups as
// a Prometheus rules file (what ships is what is tested), checks it with
// promtool, and runs a promtool unit-test file per alert: alertScenarios,
// with the annotations each firing alert must expand to.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	promtool := promtoolBinary(t)
	m := render(t, "--set", "metrics.prometheusRule.enabled=true")
	pr := m.object(t, "PrometheusRule", release+"-lifeboat")
	dir := t.TempDir()
	rulesYAML, err := yaml.Marshal(map[string]any{"groups": dig(t, pr, "spec", "groups")})
	require.NoError(t, err)
	rulesFile := filepath.Join(dir, "rules.yaml")
	require.NoError(t, os.WriteFile(rulesFile, rulesYAML, 0o644))
	out, err := exec.CommandContext(t.Context(), promtool, "check", "rules", rulesFile).CombinedOutput()
	require.NoError(t, err, "promtool check rules:\n%s\n%s", out, rulesYAML)

	rules := alertRules(t, m, release+"-lifeboat")
	var names []string
	for name := range rules {
		names = append(names, name)
	}
	slices.Sort(names)
	for name := range alertScenarios {
		assert.Contains(t, names, name, "a scenario for an alert the chart does not ship")
	}
	args := []string{"test", "rules"}
	for _, name := range names {
		scenarios, ok := alertScenarios[name]
		if !assert.True(t, ok, "alert %s has no promtool scenarios", name) {
			continue
		}
		var kinds []string
		for _, s := range scenarios {
			kinds = append(kinds, s.kind)
		}
		assert.ElementsMatch(t, []string{"fires", "quiet", "first"}, kinds, name)
		file := promTestFile{RuleFiles: []string{rulesFile}, EvaluationInterval: "1m"}
		for _, s := range scenarios {
			file.Tests = append(file.Tests, promTest(t, name, rules[name], s))
		}
		b, err := yaml.Marshal(file)
		require.NoError(t, err)
		path := filepath.Join(dir, name+"_test.yaml")
		require.NoError(t, os.WriteFile(path, b, 0o644))
		args = append(args, path)
	}
	out, err = exec.CommandContext(t.Context(), promtool, args...).CombinedOutput()
	assert.NoError(t, err, "promtool test rules:\n%s", out)
	if t.Failed() {
		for _, p := range args[2:] {
			b, _ := os.ReadFile(p)
			t.Logf("%s:\n%s", filepath.Base(p), b)
		}
	}
}

// promTest is one scenario as a promtool test case.
func promTest(t *testing.T, name string, rule map[string]any, s scenario) promTestCase {
	t.Helper()
	forDur := time.Duration(0)
	if f, ok := rule["for"].(string); ok {
		var err error
		forDur, err = time.ParseDuration(f)
		require.NoError(t, err, "%s: for %q", name, f)
	}
	staticLabels := map[string]string{}
	if l, ok := rule["labels"].(map[string]any); ok {
		for k, v := range l {
			staticLabels[k] = v.(string)
		}
	}
	annotations := map[string]string{}
	for k, v := range rule["annotations"].(map[string]any) {
		annotations[k] = v.(string)
	}
	tc := promTestCase{Interval: "1m"}
	for series, values := range s.series {
		tc.InputSeries = append(tc.InputSeries, promSeries{Series: series, Values: values})
	}
	slices.SortFunc(tc.InputSeries, func(a, b promSeries) int { return strings.Compare(a.Series, b.Series) })
	for _, e := range s.evals {
		when := time.Duration(e.at) * time.Minute
		if e.afterFor {
			when += forDur
		}
		require.GreaterOrEqual(t, when, time.Duration(0), "%s %s", name, s.kind)
		test := promAlertTest{EvalTime: fmt.Sprintf("%dm", int(when.Minutes())), Alertname: name, ExpAlerts: []promExpAlert{}}
		for _, labels := range e.fire {
			exp := promExpAlert{ExpLabels: map[string]string{}, ExpAnnotations: map[string]string{}}
			for k, v := range labels {
				exp.ExpLabels[k] = v
			}
			for k, v := range staticLabels {
				exp.ExpLabels[k] = v
			}
			for k, text := range annotations {
				exp.ExpAnnotations[k] = expand(t, name+" "+k, text, labels, e.value)
			}
			test.ExpAlerts = append(test.ExpAlerts, exp)
		}
		tc.AlertRuleTest = append(tc.AlertRuleTest, test)
	}
	return tc
}

// expand renders an annotation as Prometheus would for an alert with these
// labels and value; it fails on a label the alert does not have (which
// Prometheus would render as nothing).
func expand(t *testing.T, what, text string, labels map[string]string, value string) string {
	t.Helper()
	re := regexp.MustCompile(`\{\{ *\$(labels\.([a-zA-Z_][a-zA-Z0-9_]*)|value) *\}\}`)
	out := re.ReplaceAllStringFunc(text, func(m string) string {
		sub := re.FindStringSubmatch(m)
		if sub[1] == "value" {
			assert.NotEmpty(t, value, "%s uses $value: give the scenario's value", what)
			return value
		}
		v, ok := labels[sub[2]]
		assert.True(t, ok, "%s uses $labels.%s, which the alert does not have (it has %v)", what, sub[2], labels)
		return v
	})
	assert.NotContains(t, out, "{{", "%s: a template expand does not know", what)
	return out
}
