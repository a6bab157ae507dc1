package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
)

const (
	releaseNS   = "lifeboat"
	release     = "lifeboat"
	app         = "app"
	mirror      = "http://127.0.0.1:5000"
	metricsURL  = "http://127.0.0.1:5090"
	upgradeTag  = "e2e-upgrade"
	podTimeout  = 2 * time.Minute
	eventSettle = 2 * time.Second // kubelet records events asynchronously
)

// adminHosts is the hosts.toml an admin wrote for the test registry
// before lifeboat came: containerd speaks plain HTTP to it. lifeboat must
// merge it (its host first, the admin's after), back it up and restore it
// byte for byte on uninstall.
const adminHosts = `# The admin's own: registry.test speaks plain HTTP.
server = "http://registry.test:5055"

[host."http://registry.test:5055"]
  capabilities = ["pull", "resolve"]
`

// TestScenarios runs issue 15's scenarios in order: each builds on the
// state the one before left (lifeboat installed, the image cached).
func TestScenarios(t *testing.T) {
	c := e2e.c
	require.NotNil(t, c, "TestMain did not start the cluster")
	var before map[string][]byte // the hosts directory before install
	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"1-install", func(t *testing.T) { before = scenarioInstall(t, c) }},
		{"2-pull-through-lifeboat", func(t *testing.T) { scenarioPullThrough(t, c) }},
		{"3-registry-down", func(t *testing.T) { scenarioOutage(t, c, "down") }},
		{"4-registry-hangs", func(t *testing.T) { scenarioOutage(t, c, "hang") }},
		{"5-uncached-tag-during-outage", func(t *testing.T) { scenarioUncached(t, c) }},
		{"6-upgrade-while-pods-restart", func(t *testing.T) { scenarioUpgrade(t, c) }},
		{"7-uninstall", func(t *testing.T) { scenarioUninstall(t, c, before) }},
		{"8-two-nodes", func(t *testing.T) { scenarioTwoNodes(t, c) }},
	}
	for _, s := range steps {
		if !step(t, s.name, s.fn) && s.name < "3" {
			// Nothing after works without lifeboat installed and the image cached.
			t.Fatalf("%s failed: the later scenarios need it", s.name)
		}
	}
}

// scenarioInstall: helm install; the DaemonSet becomes ready; every
// mirrored registry's hosts.toml lists lifeboat first; the admin's file
// is merged and backed up; /readyz answers. It returns the hosts
// directory as it was before the install.
func scenarioInstall(t *testing.T, c *cluster) map[string][]byte {
	dir := filepath.Join(c.hostsDir, registryName)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(adminHosts), 0o644))
	before := readTree(t, c.hostsDir)

	values := writeValues(t, c)
	ctx, cancel := withTimeout(4 * time.Minute)
	defer cancel()
	start := time.Now()
	_, err := c.helm(ctx, e2e.helm, "install", release, e2e.chart, "-n", releaseNS, "--create-namespace", "-f", values, "--wait", "--timeout=3m")
	require.NoError(t, err)
	helmTook := time.Since(start)
	ds, err := c.daemonSet(releaseNS, release)
	require.NoError(t, err)
	note(t, "helm install --wait returned after %s with %d of %d lifeboat pods ready",
		helmTook.Round(10*time.Millisecond), ds.Status.NumberReady, ds.Status.DesiredNumberScheduled)
	_, err = c.kubectl("rollout", "status", "-n", releaseNS, "daemonset/"+release, "--timeout=3m")
	require.NoError(t, err, "lifeboat pods: %s", podsOf(c, releaseNS, "app.kubernetes.io/name=lifeboat"))
	measured(t, time.Since(start), "helm install to DaemonSet ready (kubectl rollout status)")

	// Every registry the init container was given has lifeboat first.
	require.NoError(t, c.getJSON(&ds, "get", "daemonset", "-n", releaseNS, release))
	var registries []string
	for _, ic := range ds.Spec.Template.Spec.InitContainers {
		for _, a := range ic.Args {
			if list, ok := strings.CutPrefix(a, "--registries="); ok && ic.Name == "configure-containerd" {
				for _, r := range strings.Split(list, ",") {
					name, _, _ := strings.Cut(r, "=")
					registries = append(registries, name)
				}
			}
		}
	}
	require.Contains(t, registries, registryName)
	for _, r := range registries {
		b, err := os.ReadFile(filepath.Join(c.hostsDir, r, "hosts.toml"))
		if !assert.NoError(t, err, r) {
			continue
		}
		hosts := hostTables(b)
		assert.True(t, len(hosts) > 0 && hosts[0] == mirror, "%s: hosts %v, want %s first", r, hosts, mirror)
	}
	note(t, "%d registries' hosts.toml list %s first: %s", len(registries), mirror, strings.Join(registries, " "))

	// The admin's file: merged after lifeboat's host, and backed up.
	merged, err := os.ReadFile(filepath.Join(dir, "hosts.toml"))
	require.NoError(t, err)
	assert.Equal(t, []string{mirror, "http://" + registryName}, hostTables(merged), "merged hosts.toml:\n%s", merged)
	backup, err := os.ReadFile(filepath.Join(dir, "hosts.toml.lifeboat-backup"))
	require.NoError(t, err)
	assert.Equal(t, adminHosts, string(backup), "the backup is the admin's file, byte for byte")

	resp, err := http.Get(metricsURL + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "/readyz")
	return before
}

// writeValues writes the chart values every install uses and returns
// their path: lifeboat's image, the test registry as an extra upstream,
// the run's containerd and data directories.
func writeValues(t *testing.T, c *cluster) string {
	t.Helper()
	values := filepath.Join(c.runDir, "values.yaml")
	repo, tag, _ := strings.Cut(e2e.lifeboatRef[strings.LastIndex(e2e.lifeboatRef, "/")+1:], ":")
	repo = e2e.lifeboatRef[:strings.LastIndex(e2e.lifeboatRef, "/")+1] + repo
	require.NoError(t, os.WriteFile(values, fmt.Appendf(nil, `image:
  repository: %s
  tag: %s
extraUpstreams:
  - name: %s
    url: http://%s
containerd:
  hostsDir: %s
  configFile: %s
dataDir:
  hostPath: %s
config:
  logFormat: text
`, repo, tag, registryName, registryName, c.hostsDir, c.containerdConfig, c.path("lifeboat-data")), 0o644))
	return values
}

// scenarioPullThrough: a Deployment with imagePullPolicy: Always pulls the
// test image through lifeboat, proven by lifeboat's metrics and by who
// the registry saw.
func scenarioPullThrough(t *testing.T, c *cluster) {
	m0 := scrape(t)
	start := time.Now()
	require.NoError(t, c.apply(deployment(testNS, app, e2e.appRef)))
	pod, took, err := c.waitNewReady(testNS, "app="+app, nil, start, podTimeout)
	require.NoError(t, err)
	measured(t, took, "Deployment created to pod Running (first pull, registry up)")
	time.Sleep(eventSettle)
	ev, err := c.pullEventsFor(testNS, []string{pod.Name})
	require.NoError(t, err)
	note(t, "kubelet: %s", strings.Join(ev.pulled, "; "))

	m1 := scrape(t)
	fetched := m1.sum("lifeboat_upstream_fetched_bytes_total", `registry="`+registryName+`"`) -
		m0.sum("lifeboat_upstream_fetched_bytes_total", `registry="`+registryName+`"`)
	misses := m1.sum("lifeboat_registry_requests_total", `result="miss"`) - m0.sum("lifeboat_registry_requests_total", `result="miss"`)
	note(t, "lifeboat metrics: %.0f bytes fetched from %s, %.0f misses", fetched, registryName, misses)
	assert.GreaterOrEqual(t, fetched, float64(4<<20), "lifeboat fetched the image's 4 MiB layer from upstream")
	assert.Positive(t, misses, "lifeboat answered misses")
	note(t, "requests the registry saw, by client: %v", e2e.reg.agentCounts())
	assert.Positive(t, e2e.reg.requestsBy("lifeboat"), "the registry saw lifeboat")
	assert.Empty(t, e2e.reg.requestsNotBy("lifeboat"), "only lifeboat went to the registry (containerd never did)")
}

// scenarioOutage: with the registry down (mode "down": connections
// refused) or hanging ("hang": accepted, never answered), a deleted pod
// and a rollout restart both reach Running without a pull failure, with
// the image on the node and without it.
func scenarioOutage(t *testing.T, c *cluster, mode string) {
	// Start from a healthy upstream, so that lifeboat's circuit breaker
	// is closed and the first requests of the outage pay its full cost.
	require.NoError(t, e2e.reg.up())
	waitCircuitClosed(t)
	stale0 := scrape(t).sum("lifeboat_proxy_stale_responses_total", `registry="`+registryName+`"`)

	if mode == "hang" {
		require.NoError(t, e2e.reg.hang())
	} else {
		e2e.reg.down()
	}
	t.Cleanup(func() { _ = e2e.reg.up() })
	for _, removed := range []bool{false, true} {
		suffix := ""
		if removed {
			suffix = "-image-removed"
		}
		step(t, "delete-pod"+suffix, func(t *testing.T) {
			if removed {
				require.NoError(t, c.removeImage(e2e.appRef))
			}
			old := currentPods(t, c)
			start := time.Now()
			_, err := c.kubectl("delete", "pod", "-n", testNS, "-l", "app="+app, "--wait=false")
			require.NoError(t, err)
			pod, took, err := c.waitNewReady(testNS, "app="+app, old, start, podTimeout)
			require.NoError(t, err)
			measured(t, took, "pod deleted to new pod Running")
			checkNoPullFailure(t, c, []string{pod.Name})
		})
		step(t, "rollout-restart"+suffix, func(t *testing.T) {
			if removed {
				require.NoError(t, c.removeImage(e2e.appRef))
			}
			old := currentPods(t, c)
			took, err := c.rolloutRestart(testNS, app, podTimeout)
			require.NoError(t, err, "pods: %s", podsOf(c, testNS, "app="+app))
			measured(t, took, "rollout restart to rollout complete")
			var fresh []string
			for _, p := range currentPods(t, c) {
				if !slices.Contains(old, p) {
					fresh = append(fresh, p)
				}
			}
			checkNoPullFailure(t, c, fresh)
		})
	}
	stale := scrape(t).sum("lifeboat_proxy_stale_responses_total", `registry="`+registryName+`"`) - stale0
	note(t, "lifeboat served %.0f stale answers for %s", stale, registryName)
	assert.Positive(t, stale, "lifeboat counted its stale answers")
}

// waitCircuitClosed asks lifeboat for the app's tag until its circuit
// breaker for the test registry is closed (a success closes it; while it
// is open only a probe after its backoff reaches upstream).
func waitCircuitClosed(t *testing.T) {
	t.Helper()
	series := `registry="` + registryName + `"`
	require.NoError(t, waitFor(nil, 90*time.Second, "lifeboat's circuit to "+registryName+" closed", func() error {
		if open := scrape(t).sum("lifeboat_upstream_circuit_open", series); open != 0 {
			resp, err := http.Head(mirror + "/v2/e2e/app/manifests/v1?ns=" + registryName)
			if err == nil {
				resp.Body.Close()
			}
			return fmt.Errorf("lifeboat_upstream_circuit_open{%s} = %v", series, open)
		}
		return nil
	}))
}

// checkNoPullFailure: no ErrImagePull or ImagePullBackOff event for the
// pods, and kubelet's Pulled message.
func checkNoPullFailure(t *testing.T, c *cluster, pods []string) {
	t.Helper()
	time.Sleep(eventSettle)
	ev, err := c.pullEventsFor(testNS, pods)
	require.NoError(t, err)
	assert.Empty(t, ev.failures, "pull failures")
	for _, p := range ev.pulled {
		note(t, "kubelet: %s", p)
	}
}

func currentPods(t *testing.T, c *cluster) []string {
	t.Helper()
	pods, err := c.pods(testNS, "app="+app)
	require.NoError(t, err)
	return podNames(pods)
}

func podsOf(c *cluster, ns, selector string) string {
	pods, err := c.pods(ns, selector)
	if err != nil {
		return err.Error()
	}
	return describePods(pods)
}

// scenarioUncached: the registry is down and the tag was never cached.
// The pod fails with an event that says why, and starts by itself once
// the registry is back.
func scenarioUncached(t *testing.T, c *cluster) {
	const name = "uncached"
	e2e.reg.down()
	t.Cleanup(func() {
		_ = e2e.reg.up()
		_, _ = c.kubectl("delete", "deployment", "-n", testNS, name, "--wait=false")
	})
	start := time.Now()
	require.NoError(t, c.apply(deployment(testNS, name, e2e.newRef)))
	var failure string
	var failed time.Duration
	require.NoError(t, waitFor(nil, podTimeout, "a pull failure event", func() error {
		pods, err := c.pods(testNS, "app="+name)
		if err != nil {
			return err
		}
		ev, err := c.pullEventsFor(testNS, podNames(pods))
		if err != nil {
			return err
		}
		for _, f := range ev.failures {
			if strings.Contains(f, "Failed to pull image") {
				failure, failed = f, time.Since(start)
				return nil
			}
		}
		return fmt.Errorf("no failure yet: %s", describePods(pods))
	}))
	measured(t, failed, "Deployment created to the pull failure event")
	note(t, "kubelet's event: %s", failure)
	assert.Contains(t, failure, e2e.newRef, "the event names the image")
	assert.Regexp(t, `connection refused|unavailable|503|502|lifeboat`, failure, "the event names the cause")
	// containerd asks with HEAD and puts the status line into the error:
	// lifeboat's reason is in a GET's body and in its log.
	resp, err := http.Get(mirror + "/v2/e2e/app/manifests/v2?ns=" + registryName)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	note(t, "lifeboat's own answer to that request: %s %s", resp.Status, bytes.TrimSpace(body))
	logs, err := c.kubectl("logs", "-n", releaseNS, "daemonset/"+release)
	require.NoError(t, err)
	var logged []string
	for line := range strings.Lines(logs) {
		if strings.Contains(line, "/e2e/app/manifests/v2") && !strings.Contains(line, "status=200") {
			logged = append(logged, strings.TrimSpace(line))
		}
	}
	if assert.NotEmpty(t, logged, "lifeboat logs the failed pull of e2e/app:v2") {
		note(t, "lifeboat's log: %s", logged[0])
	}

	// Wait for the back-off, so the recovery is kubelet's own retry.
	require.NoError(t, waitFor(nil, time.Minute, "ImagePullBackOff", func() error {
		pods, err := c.pods(testNS, "app="+name)
		if err != nil {
			return err
		}
		if d := describePods(pods); !strings.Contains(d, "ImagePullBackOff") {
			return fmt.Errorf("not backing off: %s", d)
		}
		return nil
	}))
	require.NoError(t, e2e.reg.up())
	back := time.Now()
	_, took, err := c.waitNewReady(testNS, "app="+name, nil, back, 5*time.Minute)
	require.NoError(t, err)
	measured(t, took, "registry back to pod Running, by itself (kubelet's back-off retry)")
}

// scenarioUpgrade: helm upgrade to another lifeboat image while pods keep
// restarting. No pull fails during the roll, and the cache survives it.
func scenarioUpgrade(t *testing.T, c *cluster) {
	require.NoError(t, e2e.reg.up())
	repo := e2e.lifeboatRef[:strings.LastIndex(e2e.lifeboatRef, ":")]
	img, err := upgradeImage(e2e.lifeboatTar, upgradeTag)
	require.NoError(t, err)
	require.NoError(t, c.importImages(map[string]v1.Image{repo + ":" + upgradeTag: img}))

	// Churn: as soon as the app's pod is Running, delete it, until the
	// upgrade is over. Each replacement pulls (imagePullPolicy: Always).
	var (
		mu      sync.Mutex
		churned []string
		slowest time.Duration
		stuck   error
		stop    = make(chan struct{})
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			pods, err := c.pods(testNS, "app="+app)
			start := time.Now()
			if err == nil {
				_, err = c.kubectl("delete", "pod", "-n", testNS, "-l", "app="+app, "--wait=false")
			}
			if err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			pod, took, err := c.waitNewReady(testNS, "app="+app, podNames(pods), start, podTimeout)
			mu.Lock()
			churned = append(churned, podNames(pods)...)
			churned = append(churned, pod.Name)
			slowest = max(slowest, took)
			if err != nil && stuck == nil {
				stuck = err
			}
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	ctx, cancel := withTimeout(4 * time.Minute)
	defer cancel()
	start := time.Now()
	_, err = c.helm(ctx, e2e.helm, "upgrade", release, e2e.chart, "-n", releaseNS, "--reuse-values", "--set", "image.tag="+upgradeTag)
	if err == nil {
		_, err = c.kubectl("rollout", "status", "-n", releaseNS, "daemonset/"+release, "--timeout=3m")
	}
	took := time.Since(start)
	time.Sleep(3 * time.Second) // one more restart after the new pod is ready
	close(stop)
	<-done
	require.NoError(t, err)
	measured(t, took, "helm upgrade to the new DaemonSet pod ready")
	mu.Lock()
	require.NoError(t, stuck, "a pod did not start during the upgrade")
	note(t, "slowest app pod start during the upgrade: %s", slowest.Round(10*time.Millisecond))
	mu.Unlock()

	pods, err := c.pods(releaseNS, "app.kubernetes.io/name=lifeboat")
	require.NoError(t, err)
	require.Len(t, pods, 1)
	assert.Equal(t, repo+":"+upgradeTag, pods[0].Spec.Containers[0].Image)

	_, _, err = c.waitNewReady(testNS, "app="+app, nil, time.Now(), podTimeout)
	require.NoError(t, err)
	all := slices.Compact(slices.Sorted(slices.Values(append(churned, currentPods(t, c)...))))
	time.Sleep(eventSettle)
	ev, err := c.pullEventsFor(testNS, all)
	require.NoError(t, err)
	note(t, "%d app pods during the upgrade, %d pulls succeeded", len(all), len(ev.pulled))
	assert.Empty(t, ev.failures, "pull failures during the upgrade")

	// The cache survived: with the registry down and the image gone
	// from the node, the new lifeboat serves the whole image.
	e2e.reg.down()
	t.Cleanup(func() { _ = e2e.reg.up() })
	require.NoError(t, c.removeImage(e2e.appRef))
	old := currentPods(t, c)
	start = time.Now()
	_, err = c.kubectl("delete", "pod", "-n", testNS, "-l", "app="+app, "--wait=false")
	require.NoError(t, err)
	pod, took, err := c.waitNewReady(testNS, "app="+app, old, start, podTimeout)
	require.NoError(t, err)
	note(t, "after the upgrade, registry down, image removed from the node: Running in %s", took.Round(10*time.Millisecond))
	checkNoPullFailure(t, c, []string{pod.Name})
}

// scenarioUninstall: helm uninstall; the post-delete hook restores every
// hosts.toml byte for byte and nothing is left behind. Then the control
// run: without lifeboat, with the registry down, the pod sits in
// ImagePullBackOff.
func scenarioUninstall(t *testing.T, c *cluster, before map[string][]byte) {
	require.NotNil(t, before, "scenario 1 did not run")
	ctx, cancel := withTimeout(6 * time.Minute)
	defer cancel()
	start := time.Now()
	out, err := c.helm(ctx, e2e.helm, "uninstall", release, "-n", releaseNS, "--wait", "--timeout=5m")
	require.NoError(t, err, "%s\nhook pods: %s", out, podsOf(c, releaseNS, "app.kubernetes.io/instance="+release))
	measured(t, time.Since(start), "helm uninstall, hooks included")

	after := readTree(t, c.hostsDir)
	assert.Equal(t, slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)), "the files in the hosts directory")
	for p, b := range before {
		assert.Equal(t, string(b), string(after[p]), "%s restored byte for byte", p)
	}
	note(t, "hosts directory after uninstall: %d files, as before install", len(after))
	// Helm deletes the hook's DaemonSet and Job without waiting for
	// their pods: the garbage collector removes those a moment later.
	uninstalled := time.Now()
	assert.NoError(t, waitFor(nil, time.Minute, "nothing left of the release", func() error {
		left, err := c.kubectl("get", "all,configmaps,secrets,serviceaccounts,roles,rolebindings,jobs", "-n", releaseNS,
			"-l", "app.kubernetes.io/instance="+release, "-o", "name")
		if err == nil && strings.TrimSpace(left) != "" {
			err = fmt.Errorf("left: %s", strings.Fields(left))
		}
		return err
	}))
	note(t, "the hook's pods gone %s after helm uninstall returned", time.Since(uninstalled).Round(100*time.Millisecond))

	step(t, "control-without-lifeboat", func(t *testing.T) {
		// With the registry up, the admin's own hosts.toml still works.
		require.NoError(t, e2e.reg.up())
		old := currentPods(t, c)
		_, err := c.kubectl("delete", "pod", "-n", testNS, "-l", "app="+app, "--wait=false")
		require.NoError(t, err)
		_, _, err = c.waitNewReady(testNS, "app="+app, old, time.Now(), podTimeout)
		require.NoError(t, err, "without lifeboat and with the registry up the pod starts")

		e2e.reg.down()
		old = currentPods(t, c)
		start := time.Now()
		_, err = c.kubectl("delete", "pod", "-n", testNS, "-l", "app="+app, "--wait=false")
		require.NoError(t, err)
		var state string
		require.NoError(t, waitFor(nil, podTimeout, "ImagePullBackOff", func() error {
			pods, err := c.pods(testNS, "app="+app)
			if err != nil {
				return err
			}
			for _, p := range pods {
				if slices.Contains(old, p.Name) {
					continue
				}
				if ready(p) {
					return fmt.Errorf("%s is Running without lifeboat and with the registry down", p.Name)
				}
				if state = describePods([]corev1.Pod{p}); strings.Contains(state, "ImagePullBackOff") {
					return nil
				}
			}
			return fmt.Errorf("not backing off yet: %s", describePods(pods))
		}))
		measured(t, time.Since(start), "pod deleted to ImagePullBackOff, without lifeboat")
		note(t, "%s", state)
		_ = e2e.reg.up()
	})
}

// hostTables are the [host."..."] tables of a hosts.toml, in order: the
// order containerd tries them.
func hostTables(b []byte) []string {
	var hosts []string
	re := regexp.MustCompile(`^\s*\[host\."([^"]+)"\]`)
	for line := range strings.Lines(string(b)) {
		if m := re.FindStringSubmatch(line); m != nil {
			hosts = append(hosts, strings.TrimRight(m[1], "/"))
		}
	}
	return hosts
}

// readTree is every file under dir, by path relative to dir.
func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		files[rel] = b
		return err
	}))
	return files
}

// metrics is one scrape of lifeboat's /metrics.
type metrics []string

// scrape is node 1's lifeboat's metrics.
func scrape(t *testing.T) metrics {
	t.Helper()
	return scrapeAt(t, metricsURL)
}

// scrapeAt is the metrics of the lifeboat whose metrics listener is base.
func scrapeAt(t *testing.T, base string) metrics {
	t.Helper()
	m, err := fetchMetrics(base)
	require.NoError(t, err)
	return m
}

// fetchMetrics is one scrape of the metrics listener at base.
// scrapeClient bounds one scrape: a hung lifeboat must not hold a poll
// past its budget.
var scrapeClient = &http.Client{Timeout: 5 * time.Second}

func fetchMetrics(base string) (metrics, error) {
	resp, err := scrapeClient.Get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/metrics: %s", base, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var m metrics
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line := sc.Text(); !strings.HasPrefix(line, "#") {
			m = append(m, line)
		}
	}
	return m, nil
}

// sum adds the samples of metric whose labels contain every one of labels.
func (m metrics) sum(metric string, labels ...string) float64 {
	var total float64
	for _, line := range m {
		name, rest, _ := strings.Cut(line, " ")
		series := name
		if i := strings.IndexByte(line, '}'); i > 0 {
			series, rest = line[:i+1], strings.TrimSpace(line[i+1:])
		}
		if series != metric && !strings.HasPrefix(series, metric+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(series, l)
		}
		if v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64); ok && err == nil {
			total += v
		}
	}
	return total
}
