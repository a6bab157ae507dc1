package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
)

// node2Metrics is node 2's lifeboat's metrics listener: on its veth
// address, which the host reaches.
var node2Metrics = "http://" + node2IP + ":5090"

// peersValues turn the cluster tier on (the chart's default) and point
// lifeboat at the API server on the node's loopback: there is no
// kube-proxy to route the kubernetes Service (on node 2 the harness
// forwards 127.0.0.1:6443 to the API server).
const peersValues = `peers:
  enabled: true
extraEnv:
  - name: KUBERNETES_SERVICE_HOST
    value: 127.0.0.1
  - name: KUBERNETES_SERVICE_PORT
    value: "6443"
`

// scenarioTwoNodes: node 1 has lifeboat and the app's image cached; the
// registry goes down; node 2 joins (its containerd comes with lifeboat's
// image, as an air-gapped node's would), lifeboat starts there, and a pod
// pinned to node 2 starts from node 1's cache through the peer API.
func scenarioTwoNodes(t *testing.T, c *cluster) {
	require.NoError(t, e2e.reg.up())
	installWithPeers(t, c)
	// The app's image, pulled through node 1's lifeboat while the
	// registry is up (after scenario 7 its cache may hold it already).
	require.NoError(t, c.apply(deployment(testNS, app, e2e.appRef)))
	old := currentPods(t, c)
	_, err := c.kubectl("delete", "pod", "-n", testNS, "-l", "app="+app, "--wait=false")
	require.NoError(t, err)
	_, _, err = c.waitNewReady(testNS, "app="+app, old, time.Now(), podTimeout)
	require.NoError(t, err, "the app on node 1 with the registry up")
	// The control's image (scenario 5's tag), cached on node 1 only.
	const cacheV2 = "cache-v2"
	require.NoError(t, c.apply(pinnedPod(cacheV2, nodeName, e2e.newRef)))
	_, _, err = c.waitNewReady(testNS, "app="+cacheV2, nil, time.Now(), podTimeout)
	require.NoError(t, err, "%s on node 1 with the registry up", e2e.newRef)
	_, err = c.kubectl("delete", "pod", "-n", testNS, cacheV2, "--wait=false")
	require.NoError(t, err)

	e2e.reg.down()
	t.Cleanup(func() { _ = e2e.reg.up() })
	served0 := scrape(t).sum("lifeboat_peer_served_bytes_total")

	boot := time.Now()
	imgs := map[string]v1.Image{sandboxImage: e2e.nodeImgs[sandboxImage], busyboxImage: e2e.nodeImgs[busyboxImage]}
	n2, err := c.bootNode2(imgs, e2e.lifeboatTar)
	e2e.node2 = n2
	t.Cleanup(func() {
		start := time.Now()
		assert.NoError(t, n2.stop(), "node 2's teardown")
		e2e.node2 = nil
		t.Logf("node 2 torn down in %s", time.Since(start).Round(10*time.Millisecond))
	})
	require.NoError(t, err, "node 2's containerd")
	note(t, "node 2's containerd up with its images in %s", time.Since(boot).Round(10*time.Millisecond))

	join := time.Now()
	require.NoError(t, n2.join())
	nodeReady := time.Since(join)
	var lb corev1.Pod
	err = waitFor(n2.kubelet, 3*time.Minute, "lifeboat ready on node 2", func() error {
		pods, err := c.pods(releaseNS, "app.kubernetes.io/name=lifeboat")
		if err != nil {
			return err
		}
		for _, p := range pods {
			if p.Spec.NodeName == node2Name && ready(p) {
				lb = p
				return nil
			}
		}
		return fmt.Errorf("not yet: %s", describePods(pods))
	})
	lifeboatReady := time.Since(join)
	requireOnNode2(t, c, err)
	// Each lifeboat counts the ready lifeboats in the EndpointSlices,
	// itself included.
	err = waitFor(nil, 2*time.Minute, "both lifeboats seeing two peers", func() error {
		for _, base := range []string{metricsURL, node2Metrics} {
			m, err := fetchMetrics(base)
			if err != nil {
				return err
			}
			if n := m.sum("lifeboat_peers_ready"); n != 2 {
				return fmt.Errorf("%s: lifeboat_peers_ready %v", base, n)
			}
		}
		return nil
	})
	peersReady := time.Since(join)
	requireOnNode2(t, c, err)

	created := time.Now()
	require.NoError(t, c.apply(pinnedPod(node2App, node2Name, e2e.appRef)))
	pod, took, err := c.waitNewReady(testNS, "app="+node2App, nil, created, podTimeout)
	total := time.Since(join)
	requireOnNode2(t, c, err)
	assert.Equal(t, node2Name, pod.Spec.NodeName)
	note(t, "node 2 joined: Ready %s after its kubelet started; lifeboat (%s) ready at %s; both lifeboats see two peers at %s",
		nodeReady.Round(10*time.Millisecond), lb.Name, lifeboatReady.Round(10*time.Millisecond), peersReady.Round(10*time.Millisecond))
	note(t, "pod on node 2 created to Running (registry down): %s", took.Round(10*time.Millisecond))
	measured(t, total, "node 2's kubelet started to its pod Running, registry down")
	checkNoPullFailure(t, c, []string{pod.Name})

	m1, m2 := scrape(t), scrapeAt(t, node2Metrics)
	received := m2.sum("lifeboat_peer_received_bytes_total")
	served := m1.sum("lifeboat_peer_served_bytes_total") - served0
	upstream := m2.sum("lifeboat_upstream_fetched_bytes_total")
	note(t, "node 2's lifeboat: %.0f bytes received from peers, %.0f from upstream; peer requests ok: %.0f",
		received, upstream, m2.sum("lifeboat_peer_requests_total", `result="ok"`))
	note(t, "node 1's lifeboat: %.0f bytes served to peers", served)
	assert.GreaterOrEqual(t, received, float64(4<<20), "node 2 got the image's 4 MiB layer from its peer")
	assert.GreaterOrEqual(t, served, float64(4<<20), "node 1 served the image's 4 MiB layer")
	assert.Zero(t, upstream, "node 2's lifeboat fetched nothing from the registry (it is down)")
	assert.Positive(t, m2.sum("lifeboat_proxy_stale_responses_total"), "node 2 served the tag it never saw stale, from its peer's")

	step(t, "control-peer-cut-off", func(t *testing.T) { controlPeerCutOff(t, c) })
}

// controlPeerCutOff: node 2's lifeboat cannot reach node 1's peer port
// (rejected in node 2's network namespace). A pod on node 2 whose image
// only node 1 holds (scenario 5's tag) fails to pull.
func controlPeerCutOff(t *testing.T, c *cluster) {
	rule := []string{"OUTPUT", "-p", "tcp", "-d", node1IP, "--dport", "5001", "-j", "REJECT", "--reject-with", "tcp-reset"}
	require.NoError(t, node2Iptables(append([]string{"-I"}, rule...)...))
	t.Cleanup(func() { _ = node2Iptables(append([]string{"-D"}, rule...)...) })
	const name = "app-node2-control"
	errors0 := scrapeAt(t, node2Metrics).sum("lifeboat_peer_requests_total", `result="error"`)
	start := time.Now()
	require.NoError(t, c.apply(pinnedPod(name, node2Name, e2e.newRef)))
	var failure string
	require.NoError(t, waitFor(nil, podTimeout, "a pull failure event", func() error {
		ev, err := c.pullEventsFor(testNS, []string{name})
		if err != nil {
			return err
		}
		for _, f := range ev.failures {
			if strings.Contains(f, "Failed to pull image") {
				failure = f
				return nil
			}
		}
		pods, _ := c.pods(testNS, "app="+name)
		if len(pods) == 1 && ready(pods[0]) {
			return fmt.Errorf("%s is Running with its peer cut off: the control failed", name)
		}
		return fmt.Errorf("no failure yet: %s", describePods(pods))
	}))
	measured(t, time.Since(start), "pod created to the pull failure event, peer cut off")
	note(t, "kubelet's event: %s", failure)
	note(t, "node 2's lifeboat: %.0f failed peer requests",
		scrapeAt(t, node2Metrics).sum("lifeboat_peer_requests_total", `result="error"`)-errors0)
	_, _ = c.kubectl("delete", "pod", "-n", testNS, name, "--wait=false")
}

// node2Iptables runs iptables in node 2's network namespace.
func node2Iptables(args ...string) error {
	out, err := exec.Command("nsenter", append([]string{"--net=" + node2NetNSPath, "--", "iptables"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s in %s: %w: %s", strings.Join(args, " "), node2NetNS, err, out)
	}
	return nil
}

// installWithPeers installs (or upgrades) the release with the cluster
// tier on, and waits for the DaemonSet.
func installWithPeers(t *testing.T, c *cluster) {
	t.Helper()
	values := writeValues(t, c)
	peers := filepath.Join(c.runDir, "values-peers.yaml")
	require.NoError(t, os.WriteFile(peers, []byte(peersValues), 0o644))
	ctx, cancel := withTimeout(4 * time.Minute)
	defer cancel()
	start := time.Now()
	_, err := c.helm(ctx, e2e.helm, "upgrade", "--install", release, e2e.chart, "-n", releaseNS, "--create-namespace",
		"-f", values, "-f", peers, "--wait", "--timeout=3m")
	require.NoError(t, err)
	_, err = c.kubectl("rollout", "status", "-n", releaseNS, "daemonset/"+release, "--timeout=3m")
	require.NoError(t, err, "lifeboat pods: %s", podsOf(c, releaseNS, "app.kubernetes.io/name=lifeboat"))
	note(t, "lifeboat installed on node 1 with peers on in %s", time.Since(start).Round(10*time.Millisecond))
}

// node2App is the pod pinned to node 2.
const node2App = "app-node2"

// pinnedPod is a pod named name on node nodeName running image, pulled at
// every start.
func pinnedPod(name, nodeName, image string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %[1]s
  namespace: %[2]s
  labels:
    app: %[1]s
spec:
  nodeSelector:
    kubernetes.io/hostname: %[3]s
  terminationGracePeriodSeconds: 1
  enableServiceLinks: false
  automountServiceAccountToken: false
  containers:
    - name: app
      image: %[4]s
      imagePullPolicy: Always
`, name, testNS, nodeName, image)
}

// requireOnNode2 fails the test if err is not nil, with node 2's
// lifeboat's logs.
func requireOnNode2(t *testing.T, c *cluster, err error) {
	t.Helper()
	if err != nil {
		require.NoError(t, err, "%s", node2Logs(c))
	}
}

// node2Logs is the tail of node 2's lifeboat pod's logs, for a failure
// message.
func node2Logs(c *cluster) string {
	pods, err := c.pods(releaseNS, "app.kubernetes.io/name=lifeboat")
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods {
		if p.Spec.NodeName != node2Name {
			continue
		}
		out, err := c.kubectl("logs", "-n", releaseNS, p.Name, "--all-containers", "--tail=30")
		fmt.Fprintf(&b, "%s: %s\n%s", p.Name, describePods([]corev1.Pod{p}), out)
		if err != nil {
			fmt.Fprintf(&b, "(%v)\n", err)
		}
	}
	return b.String()
}
