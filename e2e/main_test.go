package e2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The harness's settings, from the environment (make e2e sets them).
type settings struct {
	runDir      string // everything the cluster writes: LIFEBOAT_E2E_RUN_DIR
	binDir      string // the Kubernetes binaries: LIFEBOAT_E2E_BIN
	helm        string // HELM
	chart       string // the chart from the working tree
	lifeboatTar string // make image-tarball's output: LIFEBOAT_E2E_IMAGE
	lifeboatRef string // its reference: LIFEBOAT_E2E_IMAGE_REF
}

func loadSettings() settings {
	get := func(key, def string) string {
		if v := os.Getenv(key); v != "" {
			return v
		}
		return def
	}
	chart, _ := filepath.Abs("../charts/lifeboat")
	tar, _ := filepath.Abs(get("LIFEBOAT_E2E_IMAGE", "../bin/lifeboat-image.tar"))
	return settings{
		runDir:      get("LIFEBOAT_E2E_RUN_DIR", "/var/lib/lifeboat-e2e"),
		binDir:      get("LIFEBOAT_E2E_BIN", "/var/cache/lifeboat-e2e/bin"),
		helm:        get("HELM", "helm"),
		chart:       chart,
		lifeboatTar: tar,
		lifeboatRef: get("LIFEBOAT_E2E_IMAGE_REF", "ghcr.io/lifeboat-dev/lifeboat:e2e"),
	}
}

// missing lists what the machine lacks, each with how to get it.
func (s settings) missing() []string {
	var miss []string
	if os.Geteuid() != 0 {
		miss = append(miss, "root (the cluster runs containers and edits /etc/hosts)")
	}
	for _, b := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl"} {
		if !exists(filepath.Join(s.binDir, b)) {
			miss = append(miss, fmt.Sprintf("%s in %s (e2e/build-kube.sh %s)", b, s.binDir, s.binDir))
		}
	}
	tools := map[string]string{
		"etcd": "etcd-server", "runc": "runc", "ctr": "containerd", "ip": "iproute2",
		"/usr/bin/containerd": "containerd", "/usr/lib/cni/bridge": "containernetworking-plugins",
		"/usr/lib/cni/host-local": "containernetworking-plugins", "/usr/lib/cni/loopback": "containernetworking-plugins",
		busyboxBin: "busybox-static", "conntrack": "conntrack", "socat": "socat",
		// Scenario 8's second node: its namespaces, and its control's rule.
		"nsenter": "util-linux", "unshare": "util-linux", "iptables": "iptables",
	}
	for tool, pkg := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			miss = append(miss, fmt.Sprintf("%s (apt-get install %s)", tool, pkg))
		}
	}
	if _, err := exec.LookPath(s.helm); err != nil {
		miss = append(miss, "helm (go install helm.sh/helm/v3/cmd/helm@v3.22.0, or HELM=...)")
	}
	if !exists(s.lifeboatTar) {
		miss = append(miss, s.lifeboatTar+" (make image-tarball IMAGE="+s.lifeboatRef+")")
	}
	return miss
}

// e2e is what the scenarios share: the cluster, the test registry and
// the settings. Set by TestMain before any test runs.
var e2e struct {
	settings
	c        *cluster
	reg      *upstream
	pauseBin string
	nodeImgs map[string]v1.Image // the images a node needs without a registry, by reference
	node2    *secondNode         // scenario 8's second node, while it runs
	appRef   string              // the test workload's image, cached by lifeboat in scenario 2
	newRef   string              // a tag pushed but never pulled (scenario 5)
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) (code int) {
	s := loadSettings()
	if miss := s.missing(); len(miss) > 0 {
		msg := "e2e: cannot run here, missing:\n  " + strings.Join(miss, "\n  ")
		fmt.Fprintln(os.Stderr, msg)
		if os.Getenv("CI") != "" {
			return 1
		}
		fmt.Fprintln(os.Stderr, "e2e: skipped (set CI=1 to make this a failure)")
		return 0
	}
	e2e.settings = s
	runDir := filepath.Join(s.runDir, "run")
	if exists(runDir) {
		logf("a previous run left %s: cleaning it up", runDir)
		if err := cleanupRunDir(runDir); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: cleanup of the previous run:", err)
			return 1
		}
	}
	err := os.MkdirAll(runDir, 0o755)
	if err == nil {
		err = noteSystemDirs(runDir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}

	var once sync.Once
	var c *cluster
	teardown := func() {
		once.Do(func() {
			start := time.Now()
			if e2e.reg != nil {
				e2e.reg.down()
			}
			var err error
			if e2e.node2 != nil {
				err = e2e.node2.stop()
			}
			if c != nil {
				err = errors.Join(err, c.teardown())
			} else {
				err = errors.Join(err, cleanupRunDir(runDir))
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "e2e: teardown:", err)
				code = 1
			}
			logf("teardown in %s", time.Since(start).Round(time.Millisecond))
		})
	}
	// ^C or a CI timeout: stop the cluster before going.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Fprintln(os.Stderr, "e2e: interrupted, tearing down")
		teardown()
		os.Exit(1)
	}()
	defer teardown()

	if err := errors.Join(addHosts("127.0.0.1", nodeName, registryHost), addHosts(node2IP, node2Name)); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: /etc/hosts:", err)
		return 1
	}
	start := time.Now()
	c, err = startCluster(runDir, s.binDir)
	if err == nil {
		e2e.c = c
		err = prepare(c)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: setup:", err)
		return 1
	}
	logf("cluster and images ready in %s", time.Since(start).Round(time.Millisecond))
	code = m.Run()
	printResults()
	return code
}

// prepare puts the images into containerd, starts the test registry with
// the test images, and creates what the scenarios share.
func prepare(c *cluster) error {
	var err error
	if e2e.pauseBin, err = buildPause(c.runDir); err != nil {
		return err
	}
	imgs, err := nodeImages(e2e.pauseBin, filepath.Join(c.binDir, "kubectl"))
	if err != nil {
		return err
	}
	e2e.nodeImgs = imgs
	if err := c.importImages(imgs); err != nil {
		return err
	}
	if err := c.importTarball(e2e.lifeboatTar); err != nil {
		return err
	}
	e2e.reg = newUpstream()
	if err := e2e.reg.up(); err != nil {
		return err
	}
	for tag, ref := range map[string]*string{"v1": &e2e.appRef, "v2": &e2e.newRef} {
		img, err := appImage(e2e.pauseBin, 4<<20)
		if err != nil {
			return err
		}
		r, err := e2e.reg.push("e2e/app:"+tag, img)
		if err != nil {
			return err
		}
		*ref = r.String()
	}
	e2e.reg.forget()
	if err := c.apply(hookPolicy); err != nil {
		return fmt.Errorf("the hook's admission policy: %w", err)
	}
	if _, err := c.kubectl("create", "namespace", testNS); err != nil {
		return err
	}
	// Pods are refused until the namespace's default ServiceAccount exists.
	return waitFor(nil, 30*time.Second, "ServiceAccount default", func() error {
		_, err := c.kubectl("get", "serviceaccount", "-n", testNS, "default")
		return err
	})
}

// The test workloads' namespace.
const testNS = "e2e"

// testNamespaces are the namespaces the scenarios create pods in: the
// teardown deletes them first.
var testNamespaces = []string{testNS, releaseNS}

// hookPolicy is the e2e cluster's stand-in for kube-proxy. The chart's
// post-delete Job calls the API server through the kubernetes Service,
// which no kube-proxy routes here, so the policy points the Job's
// container at the API server on loopback (the chart runs the Job on the
// host network). An ApplyConfiguration: a JSONPatch adding env objects crashed
// kube-apiserver 1.34.4's request handler.
const hookPolicy = `apiVersion: admissionregistration.k8s.io/v1beta1
kind: MutatingAdmissionPolicy
metadata:
  name: lifeboat-e2e-api-on-loopback
spec:
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE"]
        resources: ["pods"]
  matchConditions:
    - name: cleanup-wait
      expression: >-
        has(object.metadata.labels) &&
        object.metadata.labels.exists(k, k == 'app.kubernetes.io/component') &&
        object.metadata.labels['app.kubernetes.io/component'] == 'cleanup-wait'
  failurePolicy: Fail
  reinvocationPolicy: Never
  mutations:
    - patchType: ApplyConfiguration
      applyConfiguration:
        expression: >-
          Object{spec: Object.spec{containers: [Object.spec.containers{name: "wait", env: [
            Object.spec.containers.env{name: "KUBERNETES_SERVICE_HOST", value: "127.0.0.1"},
            Object.spec.containers.env{name: "KUBERNETES_SERVICE_PORT", value: "6443"}]}]}}
---
apiVersion: admissionregistration.k8s.io/v1beta1
kind: MutatingAdmissionPolicyBinding
metadata:
  name: lifeboat-e2e-api-on-loopback
spec:
  policyName: lifeboat-e2e-api-on-loopback
`

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s e2e: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// result is one scenario step's outcome, printed at the end.
type result struct {
	name     string
	status   string // PASS, FAIL, SKIP
	measured time.Duration
	detail   []string
}

var results struct {
	mu    sync.Mutex
	order []string
	by    map[string]*result
}

func resultFor(t *testing.T) *result {
	results.mu.Lock()
	defer results.mu.Unlock()
	if results.by == nil {
		results.by = map[string]*result{}
	}
	r, ok := results.by[t.Name()]
	if !ok {
		r = &result{name: t.Name()}
		results.by[t.Name()] = r
		results.order = append(results.order, t.Name())
	}
	return r
}

// step runs fn as subtest name, recording PASS/FAIL/SKIP and the time
// measure reports, if it does.
func step(t *testing.T, name string, fn func(t *testing.T)) bool {
	return t.Run(name, func(t *testing.T) {
		r := resultFor(t)
		t.Cleanup(func() {
			results.mu.Lock()
			defer results.mu.Unlock()
			switch {
			case t.Skipped():
				r.status = "SKIP"
			case t.Failed():
				r.status = "FAIL"
			default:
				r.status = "PASS"
			}
		})
		fn(t)
	})
}

// measured records the step's measured time.
func measured(t *testing.T, d time.Duration, what string) {
	t.Helper()
	r := resultFor(t)
	results.mu.Lock()
	r.measured = d
	results.mu.Unlock()
	note(t, "%s: %s", what, d.Round(10*time.Millisecond))
}

// note adds a line to the step's result, and logs it.
func note(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	t.Log(msg)
	r := resultFor(t)
	results.mu.Lock()
	r.detail = append(r.detail, msg)
	results.mu.Unlock()
}

func printResults() {
	results.mu.Lock()
	defer results.mu.Unlock()
	var b strings.Builder
	b.WriteString("\n== e2e results (measured: the time the step is about, not the test's run time)\n")
	for _, n := range results.order {
		r := results.by[n]
		if r.status == "" {
			continue
		}
		m := "-"
		if r.measured > 0 {
			m = r.measured.Round(10 * time.Millisecond).String()
		}
		fmt.Fprintf(&b, "%-4s %-8s %s\n", r.status, m, r.name)
		for _, d := range r.detail {
			fmt.Fprintf(&b, "              %s\n", d)
		}
	}
	fmt.Fprint(os.Stderr, b.String())
}

// withTimeout is a context for one helm or kubectl call.
func withTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
