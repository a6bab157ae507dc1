// Package charts holds lifeboat's Helm chart (charts/lifeboat) and its tests:
// helm lint, the rendered objects decoded strictly into Kubernetes API types
// and checked, the values schema, and the chart's contract with the lifeboat
// binary (its config file, configure-containerd's flags, the metric names
// the alerts and the dashboard query).
package charts

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

const (
	installHelm = "go install helm.sh/helm/v3/cmd/helm@v3.22.0"
	chart       = "lifeboat"
	fullValues  = "testdata/full-values.yaml"
	release     = "rel"
	namespace   = "lb"
)

// helmBinary finds helm on PATH or in $(go env GOPATH)/bin. Without it the
// test fails in CI and is skipped elsewhere, naming the install command.
func helmBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", "helm")
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
				return p
			}
		}
	}
	missingTool(t, "helm not found on PATH or in $(go env GOPATH)/bin; install it with: "+installHelm)
	return ""
}

// missingTool fails the test in CI and skips it elsewhere.
func missingTool(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// runHelm runs helm and returns its combined output.
func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), helmBinary(t), args...)
	// Keep helm away from the user's repositories, plugins and caches.
	home := t.TempDir()
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// manifests is a `helm template` output split into its objects.
type manifests struct {
	docs map[string][]byte // "Kind/name" -> one YAML document
}

// render runs helm template on the chart with args (-f, --set) and splits
// the output; every object is decoded strictly into its API type, so a
// field the API does not know fails here.
func render(t *testing.T, args ...string) manifests {
	t.Helper()
	out, err := runHelm(t, append([]string{"template", release, chart, "--namespace", namespace}, args...)...)
	require.NoError(t, err, "helm template %v:\n%s", args, out)
	m := manifests{docs: map[string][]byte{}}
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(out, -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		require.NoError(t, yaml.Unmarshal([]byte(doc), &head), doc)
		require.NotEmpty(t, head.Kind, doc)
		key := head.Kind + "/" + head.Metadata.Name
		require.NotContains(t, m.docs, key, "rendered twice")
		m.docs[key] = []byte(doc)
		decodeKnown(t, head.APIVersion, head.Kind, []byte(doc))
	}
	return m
}

func stripComments(doc string) string {
	var b strings.Builder
	for line := range strings.Lines(doc) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// decodeKnown decodes one object strictly into the type of its kind; the
// prometheus-operator kinds, whose Go types this module does not have, are
// only checked for their apiVersion here and inspected as maps by the tests.
func decodeKnown(t *testing.T, apiVersion, kind string, doc []byte) {
	t.Helper()
	var into any
	switch apiVersion + " " + kind {
	case "apps/v1 DaemonSet":
		into = &daemonSet{}
	case "v1 ConfigMap":
		into = &configMap{}
	case "v1 Service":
		into = &service{}
	case "v1 ServiceAccount":
		into = &serviceAccount{}
	case "batch/v1 Job":
		into = &job{}
	case "rbac.authorization.k8s.io/v1 Role":
		into = &role{}
	case "rbac.authorization.k8s.io/v1 RoleBinding":
		into = &roleBinding{}
	case "v1 Secret":
		into = &secret{}
	case "networking.k8s.io/v1 NetworkPolicy":
		into = &networkPolicy{}
	case "monitoring.coreos.com/v1 ServiceMonitor", "monitoring.coreos.com/v1 PrometheusRule":
		return
	default:
		t.Fatalf("unexpected object %s %s rendered:\n%s", apiVersion, kind, doc)
	}
	require.NoError(t, yaml.UnmarshalStrict(doc, into), "%s %s does not decode strictly:\n%s", apiVersion, kind, doc)
}

// get decodes the object kind/name strictly into into.
func (m manifests) get(t *testing.T, kind, name string, into any) {
	t.Helper()
	doc, ok := m.docs[kind+"/"+name]
	require.True(t, ok, "%s/%s not rendered; rendered: %v", kind, name, m.keys())
	require.NoError(t, yaml.UnmarshalStrict(doc, into))
}

// object decodes a custom resource into a map.
func (m manifests) object(t *testing.T, kind, name string) map[string]any {
	t.Helper()
	doc, ok := m.docs[kind+"/"+name]
	require.True(t, ok, "%s/%s not rendered; rendered: %v", kind, name, m.keys())
	var obj map[string]any
	require.NoError(t, yaml.Unmarshal(doc, &obj))
	return obj
}

func (m manifests) keys() []string {
	var keys []string
	for k := range m.docs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// dig walks a decoded custom resource.
func dig(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			require.True(t, ok, "%v: not a map at %q", path, k)
			v, ok = m[k]
			require.True(t, ok, "%v: no key %q", path, k)
		case int:
			l, ok := v.([]any)
			require.True(t, ok, "%v: not a list at %d", path, k)
			require.Less(t, k, len(l), "%v: index %d", path, k)
			v = l[k]
		}
	}
	return v
}

func findContainer(t *testing.T, cs []container, name string) container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return container{}
}

func findVolume(t *testing.T, vs []volume, name string) volume {
	t.Helper()
	for _, v := range vs {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %q", name)
	return volume{}
}

// mounts is a container's volume mounts as name -> path, with ":ro" for
// read-only ones.
func mounts(c container) map[string]string {
	out := map[string]string{}
	for _, m := range c.VolumeMounts {
		out[m.Name] = m.MountPath
		if m.ReadOnly {
			out[m.Name] += ":ro"
		}
	}
	return out
}

// strs converts a list of string-typed values (Capability, ...); empty is nil.
func strs[S ~string](in []S) []string {
	var out []string
	for _, s := range in {
		out = append(out, string(s))
	}
	return out
}

func deref[T any](t *testing.T, p *T) T {
	t.Helper()
	require.NotNil(t, p)
	return *p
}

// lifeboatConfig is lifeboat's config file as docs/configuration.md documents it;
// decoding the rendered file strictly into it catches a key lifeboat does
// not have and a duration written as a number. TestBinaryAcceptsConfig
// checks the same file against lifeboat itself.
type lifeboatConfig struct {
	Listen               string           `json:"listen"`
	MetricsListen        string           `json:"metricsListen"`
	AdminListen          string           `json:"adminListen"`
	DataDir              string           `json:"dataDir"`
	DefaultRegistry      string           `json:"defaultRegistry"`
	DockerConfig         *string          `json:"dockerConfig"`
	ProviderConfig       string           `json:"imageCredentialProviderConfig"`
	ProviderBinDir       string           `json:"imageCredentialProviderBinDir"`
	CredentialTimeout    string           `json:"credentialTimeout"`
	PrivateContent       string           `json:"privateContent"`
	PrivateDuringOutage  string           `json:"privateDuringOutage"`
	LogLevel             string           `json:"logLevel"`
	LogFormat            string           `json:"logFormat"`
	TagTTL               string           `json:"tagTTL"`
	MaxStaleness         string           `json:"maxStaleness"`
	ServeStaleOnNotFound bool             `json:"serveStaleOnNotFound"`
	Timeouts             *lbTimeouts      `json:"timeouts"`
	Breaker              *lbBreaker       `json:"breaker"`
	MaxBlobSize          int64            `json:"maxBlobSize"`
	MaxConcurrentFills   int              `json:"maxConcurrentFills"`
	MaxSize              string           `json:"maxSize"`
	MinFreeDisk          string           `json:"minFreeDisk"`
	PrefetchInterval     string           `json:"prefetchInterval"`
	Prefetch             []lbPrefetch     `json:"prefetch"`
	Upstreams            []lifeboatUpstrm `json:"upstreams"`
	NodeCheck            *lbNodeCheck     `json:"nodeCheck"`
}

// lbNodeCheck is what lifeboat checks of the runtime's configuration for
// lifeboat_node_config_ok.
type lbNodeCheck struct {
	ContainerdHostsDir string `json:"containerdHostsDir"`
	ContainerdConfig   string `json:"containerdConfig"`
	CRIOConfDir        string `json:"crioConfDir"`
	HostRoot           string `json:"hostRoot"`
	OnlyIfPresent      bool   `json:"onlyIfPresent"`
}

type lbPrefetch struct {
	Ref       string   `json:"ref"`
	Platforms []string `json:"platforms"`
}

type lbTimeouts struct {
	Dial           string `json:"dial"`
	TLSHandshake   string `json:"tlsHandshake"`
	ResponseHeader string `json:"responseHeader"`
	Revalidate     string `json:"revalidate"`
	Request        string `json:"request"`
	BodyStall      string `json:"bodyStall"`
}

type lbBreaker struct {
	Failures   int    `json:"failures"`
	Backoff    string `json:"backoff"`
	MaxBackoff string `json:"maxBackoff"`
}

type lifeboatUpstrm struct {
	Name                 string      `json:"name"`
	URL                  string      `json:"url"`
	CAFile               string      `json:"caFile"`
	TagTTL               *string     `json:"tagTTL"`
	MaxStaleness         *string     `json:"maxStaleness"`
	ServeStaleOnNotFound *bool       `json:"serveStaleOnNotFound"`
	InsecureSkipVerify   bool        `json:"insecureSkipVerify"`
	PrivateContent       string      `json:"privateContent"`
	PrivateDuringOutage  string      `json:"privateDuringOutage"`
	Timeouts             *lbTimeouts `json:"timeouts"`
	Breaker              *lbBreaker  `json:"breaker"`
}

func (m manifests) lifeboatConfig(t *testing.T, name string) (lifeboatConfig, string) {
	t.Helper()
	var cm configMap
	m.get(t, "ConfigMap", name, &cm)
	raw, ok := cm.Data["lifeboat.yaml"]
	require.True(t, ok, "ConfigMap %s has no lifeboat.yaml", name)
	var cfg lifeboatConfig
	require.NoError(t, yaml.UnmarshalStrict([]byte(raw), &cfg), raw)
	return cfg, raw
}

func TestLint(t *testing.T) {
	t.Parallel()
	for name, args := range map[string][]string{
		"defaults":    nil,
		"full values": {"-f", fullValues},
		"k3s":         {"--set", "containerd.hostsDir=/var/lib/rancher/k3s/agent/etc/containerd/certs.d"},
		"crio":        {"--set", "runtime=crio"},
		"auto":        {"--set", "runtime=auto"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			out, err := runHelm(t, append([]string{"lint", "--strict", chart}, args...)...)
			require.NoError(t, err, out)
			assert.Contains(t, out, "0 chart(s) failed")
		})
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	m := render(t)
	const name = release + "-lifeboat"
	const cleanup = name + "-cleanup"
	assert.ElementsMatch(t, []string{
		"ServiceAccount/" + name, "ConfigMap/" + name, "DaemonSet/" + name,
		"ServiceAccount/" + cleanup, "Role/" + cleanup, "RoleBinding/" + cleanup,
		"DaemonSet/" + cleanup, "Job/" + cleanup + "-wait",
		"Service/" + name + "-peers", "Role/" + name + "-peers", "RoleBinding/" + name + "-peers", "Secret/" + name + "-peer-token",
	}, m.keys(), "monitoring objects are off by default; the cluster tier on")

	var ds daemonSet
	m.get(t, "DaemonSet", name, &ds)
	assert.Equal(t, namespace, ds.Namespace)
	pod := ds.Spec.Template.Spec
	assert.True(t, pod.HostNetwork, "containerd reaches lifeboat on the node's loopback")
	assert.Equal(t, "ClusterFirstWithHostNet", string(pod.DNSPolicy))
	assert.Equal(t, map[string]string{"kubernetes.io/os": "linux"}, pod.NodeSelector)
	require.Len(t, pod.Tolerations, 1)
	assert.Equal(t, "Exists", string(pod.Tolerations[0].Operator))
	assert.Empty(t, pod.Tolerations[0].Key, "tolerate every taint")
	assert.Empty(t, string(pod.Tolerations[0].Effect))
	assert.Equal(t, "system-node-critical", pod.PriorityClassName)
	assert.Equal(t, int64(30), deref(t, pod.TerminationGracePeriodSeconds))
	assert.True(t, deref(t, pod.AutomountServiceAccountToken), "lifeboat watches the peers' EndpointSlices (peers_test.go)")
	assert.Equal(t, name, pod.ServiceAccountName)
	assert.Equal(t, ds.Spec.Selector.MatchLabels, map[string]string{
		"app.kubernetes.io/name": "lifeboat", "app.kubernetes.io/instance": release,
	})
	for k, v := range ds.Spec.Selector.MatchLabels {
		assert.Equal(t, v, ds.Spec.Template.Labels[k])
	}

	assert.Equal(t, "RollingUpdate", string(ds.Spec.UpdateStrategy.Type))
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	require.NotNil(t, ru)
	assert.Equal(t, "0", ru.MaxSurge.String(), "never two pods on one data directory")
	assert.Equal(t, "1", ru.MaxUnavailable.String())

	// The lifeboat container.
	require.Len(t, pod.Containers, 1)
	c := findContainer(t, pod.Containers, "lifeboat")
	assert.Equal(t, "ghcr.io/lifeboat-dev/lifeboat:0.1.0", c.Image, "tag defaults to the chart's appVersion")
	assert.Equal(t, []string{"serve", "--config=/etc/lifeboat/config/lifeboat.yaml"}, c.Args)
	require.NotNil(t, c.LivenessProbe)
	require.NotNil(t, c.LivenessProbe.HTTPGet)
	assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
	assert.Equal(t, "metrics", c.LivenessProbe.HTTPGet.Port.String())
	assert.Empty(t, c.LivenessProbe.HTTPGet.Host, "metrics bound to 0.0.0.0: kubelet probes the node IP")
	require.NotNil(t, c.ReadinessProbe)
	require.NotNil(t, c.ReadinessProbe.HTTPGet)
	assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	assert.Equal(t, "metrics", c.ReadinessProbe.HTTPGet.Port.String())
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	assert.Equal(t, map[string]int32{"registry": 5000, "metrics": 5090, "peer": 5001}, ports)

	sc := c.SecurityContext
	require.NotNil(t, sc)
	assert.True(t, deref(t, sc.RunAsNonRoot))
	assert.Equal(t, int64(65532), deref(t, sc.RunAsUser), "the image's nonroot user")
	assert.Equal(t, int64(65532), deref(t, sc.RunAsGroup))
	assert.True(t, deref(t, sc.ReadOnlyRootFilesystem))
	assert.False(t, deref(t, sc.AllowPrivilegeEscalation))
	require.NotNil(t, sc.Capabilities)
	assert.Equal(t, []string{"ALL"}, strs(sc.Capabilities.Drop))
	assert.Empty(t, sc.Capabilities.Add)
	assert.Equal(t, "RuntimeDefault", string(deref(t, sc.SeccompProfile).Type))
	require.NotNil(t, pod.SecurityContext)
	assert.Equal(t, int64(65532), deref(t, pod.SecurityContext.FSGroup), "config and credentials readable by the nonroot user")

	mem := c.Resources.Requests[resMemory]
	cpu := c.Resources.Requests[resCPU]
	limit := c.Resources.Limits[resMemory]
	assert.Equal(t, "64Mi", mem.String())
	assert.Equal(t, "50m", cpu.String())
	assert.Equal(t, "256Mi", limit.String())
	assert.NotContains(t, c.Resources.Limits, resCPU, "no CPU limit")

	assert.Equal(t, map[string]string{
		"data":   "/var/lib/lifeboat",
		"config": "/etc/lifeboat/config:ro",
		// What lifeboat_node_config_ok and lifeboat doctor check, read-only.
		"containerd-config": "/etc/containerd:ro",
		"containerd-hosts":  "/etc/containerd/certs.d:ro",
		"peer-token":        "/etc/lifeboat/peer:ro",
	}, mounts(c), "no credentials without credentials.existingSecret")
	data := findVolume(t, pod.Volumes, "data")
	require.NotNil(t, data.HostPath)
	assert.Equal(t, "/var/lib/lifeboat", data.HostPath.Path)
	assert.Equal(t, "DirectoryOrCreate", string(deref(t, data.HostPath.Type)))
	cfgVol := findVolume(t, pod.Volumes, "config")
	require.NotNil(t, cfgVol.ConfigMap)
	assert.Equal(t, name, cfgVol.ConfigMap.Name)

	// The init containers: the data directory's owner, then containerd.
	require.Len(t, pod.InitContainers, 2)
	assert.Equal(t, "fix-permissions", pod.InitContainers[0].Name)
	fix := pod.InitContainers[0]
	assert.Contains(t, strings.Join(fix.Command, " "), "chown -R 65532:65532 /var/lib/lifeboat")
	assert.Equal(t, []string{"CHOWN", "DAC_OVERRIDE", "FOWNER"}, strs(fix.SecurityContext.Capabilities.Add))
	assert.Equal(t, map[string]string{"data": "/var/lib/lifeboat"}, mounts(fix))

	cc := pod.InitContainers[1]
	assert.Equal(t, "configure-containerd", cc.Name)
	assert.Equal(t, c.Image, cc.Image)
	assert.Equal(t, []string{
		"configure-containerd",
		"--hosts-dir=/etc/containerd/certs.d",
		"--mirror=http://127.0.0.1:5000",
		"--registries=docker.io=https://registry-1.docker.io,ghcr.io=https://ghcr.io,quay.io=https://quay.io," +
			"registry.k8s.io=https://registry.k8s.io,gcr.io=https://gcr.io,mcr.microsoft.com=https://mcr.microsoft.com," +
			"public.ecr.aws=https://public.ecr.aws",
		"--dial-timeout=1s",
		"--containerd-config=/etc/containerd/config.toml",
	}, cc.Args)
	ccsc := cc.SecurityContext
	require.NotNil(t, ccsc)
	assert.Equal(t, int64(0), deref(t, ccsc.RunAsUser), "the host's containerd dir is root's")
	assert.Equal(t, []string{"ALL"}, strs(ccsc.Capabilities.Drop))
	assert.Empty(t, ccsc.Capabilities.Add)
	assert.Equal(t, map[string]string{
		"containerd-hosts":  "/etc/containerd/certs.d",
		"containerd-config": "/etc/containerd:ro",
	}, mounts(cc), "mounted at the node's own paths, so the config_path check compares like with like")
	hosts := findVolume(t, pod.Volumes, "containerd-hosts")
	require.NotNil(t, hosts.HostPath)
	assert.Equal(t, "/etc/containerd/certs.d", hosts.HostPath.Path)
	assert.Equal(t, "/etc/containerd", findVolume(t, pod.Volumes, "containerd-config").HostPath.Path)
	for _, ic := range pod.InitContainers {
		assert.NotContains(t, mounts(ic), "config", "%s: init containers never see lifeboat's config", ic.Name)
	}

	// The config file.
	cfg, _ := m.lifeboatConfig(t, name)
	assert.Equal(t, "127.0.0.1:5000", cfg.Listen, "the registry API on loopback only")
	assert.Equal(t, "0.0.0.0:5090", cfg.MetricsListen, "Prometheus scrapes the node IP")
	assert.Equal(t, "127.0.0.1:5091", cfg.AdminListen, "the admin API stays on the node, where the admin commands look by default")
	assert.Equal(t, "20GiB", cfg.MaxSize, "a real cap")
	assert.Equal(t, "25%", cfg.MinFreeDisk, "above kubelet's thresholds: TestDiskDefaultsClearKubelet")
	assert.Equal(t, "/var/lib/lifeboat", cfg.DataDir)
	assert.Empty(t, deref(t, cfg.DockerConfig), "anonymous: no ~/.docker/config.json lookup either")
	assert.Equal(t, "json", cfg.LogFormat)
	assert.Equal(t, "info", cfg.LogLevel)
	assert.Equal(t, "docker.io", cfg.DefaultRegistry)
	assert.Equal(t, "0s", cfg.TagTTL)
	assert.Nil(t, cfg.Timeouts, "lifeboat's own defaults")
	assert.Nil(t, cfg.Breaker)
	var names []string
	for _, u := range cfg.Upstreams {
		names = append(names, u.Name)
	}
	assert.Equal(t, []string{"docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "gcr.io", "mcr.microsoft.com", "public.ecr.aws"}, names)
	assert.Equal(t, "https://registry-1.docker.io", cfg.Upstreams[0].URL)

	var sa serviceAccount
	m.get(t, "ServiceAccount", name, &sa)
	assert.False(t, deref(t, sa.AutomountServiceAccountToken))
}

// TestDiskDefaultsClearKubelet: on a filesystem lifeboat shares with
// kubelet (the default hostPath), the free-disk floor keeps the cache from
// pushing the disk to kubelet's image garbage collection or its disk
// eviction thresholds (their defaults), with a margin for the minute
// between eviction passes; and the cache has a cap. The chart README
// ("Disk") explains the numbers.
func TestDiskDefaultsClearKubelet(t *testing.T) {
	t.Parallel()
	const (
		imageGCLowThresholdPercent  = 80 // image GC frees down to this much used
		imageGCHighThresholdPercent = 85 // and starts at this much used
		imagefsAvailablePercent     = 15 // evictionHard imagefs.available
		nodefsAvailablePercent      = 10 // evictionHard nodefs.available
		margin                      = 5  // percentage points
	)
	cfg, _ := render(t).lifeboatConfig(t, release+"-lifeboat")
	pct, ok := strings.CutSuffix(cfg.MinFreeDisk, "%")
	require.True(t, ok, "minFreeDisk %q: a percentage, so it scales with the node's disk as kubelet's thresholds do", cfg.MinFreeDisk)
	floor, err := strconv.ParseFloat(pct, 64)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, floor, float64(100-imageGCLowThresholdPercent+margin), "above the free space image GC restores")
	for _, threshold := range []int{100 - imageGCHighThresholdPercent, imagefsAvailablePercent, nodefsAvailablePercent} {
		assert.Greater(t, floor, float64(threshold+margin))
	}
	assert.NotEqual(t, "0", cfg.MaxSize, "a cap by default")
	assert.Regexp(t, `^[0-9]+GiB$`, cfg.MaxSize)
}

// TestCleanupHook checks the post-delete hook that removes lifeboat's
// hosts.toml files from every node on uninstall.
func TestCleanupHook(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, fullname string
		args           []string
	}{
		{"defaults", release + "-lifeboat", nil},
		{"full values", "lifeboat-full", []string{"-f", fullValues}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := render(t, tc.args...)
			cleanup := tc.fullname + "-cleanup"
			var ds, cds daemonSet
			m.get(t, "DaemonSet", tc.fullname, &ds)
			m.get(t, "DaemonSet", cleanup, &cds)
			for _, hook := range []struct {
				kind, name, weight string
				meta               map[string]string
			}{
				{"DaemonSet", cleanup, "0", cds.Annotations},
			} {
				assert.Equal(t, "post-delete", hook.meta["helm.sh/hook"], hook.name)
				assert.Equal(t, hook.weight, hook.meta["helm.sh/hook-weight"], hook.name)
			}
			install := findContainer(t, ds.Spec.Template.Spec.InitContainers, "configure-containerd")
			remove := findContainer(t, cds.Spec.Template.Spec.InitContainers, "remove-containerd-config")
			assert.Equal(t, install.Image, remove.Image)
			want := []string{"configure-containerd", "--remove"}
			for _, a := range install.Args[1:] {
				if strings.HasPrefix(a, "--hosts-dir=") || strings.HasPrefix(a, "--mirror=") || strings.HasPrefix(a, "--registries=") {
					want = append(want, a)
				}
			}
			assert.Equal(t, want, remove.Args, "undoes exactly what the install wrote")
			assert.Equal(t, mounts(install)["containerd-hosts"], mounts(remove)["containerd-hosts"])
			assert.Equal(t, findVolume(t, ds.Spec.Template.Spec.Volumes, "containerd-hosts").HostPath.Path,
				findVolume(t, cds.Spec.Template.Spec.Volumes, "containerd-hosts").HostPath.Path)
			// The same nodes as lifeboat's pods.
			assert.Equal(t, ds.Spec.Template.Spec.NodeSelector, cds.Spec.Template.Spec.NodeSelector)
			assert.Equal(t, ds.Spec.Template.Spec.Tolerations, cds.Spec.Template.Spec.Tolerations)
			assert.Equal(t, ds.Spec.Template.Spec.Affinity, cds.Spec.Template.Spec.Affinity)
			assert.True(t, cds.Spec.Template.Spec.HostNetwork, "cleans the node even with a broken pod network")
			for k, v := range cds.Spec.Selector.MatchLabels {
				assert.Equal(t, v, cds.Spec.Template.Labels[k])
			}
			matches := func(sel, labels map[string]string) bool {
				for k, v := range sel {
					if labels[k] != v {
						return false
					}
				}
				return true
			}
			assert.False(t, matches(ds.Spec.Selector.MatchLabels, cds.Spec.Template.Labels),
				"lifeboat's selector (DaemonSet, metrics Service) must not match the cleanup pods")
			assert.Equal(t, "cleanup", cds.Spec.Selector.MatchLabels["app.kubernetes.io/component"])

			var j job
			m.get(t, "Job", cleanup+"-wait", &j)
			assert.Equal(t, "post-delete", j.Annotations["helm.sh/hook"])
			assert.Equal(t, "1", j.Annotations["helm.sh/hook-weight"], "after the DaemonSet")
			assert.Equal(t, "hook-failed", j.Annotations["helm.sh/hook-output-log-policy"])
			for _, a := range []map[string]string{j.Annotations, cds.Annotations} {
				policies := strings.Split(a["helm.sh/hook-delete-policy"], ",")
				assert.ElementsMatch(t, []string{"before-hook-creation", "hook-succeeded", "hook-failed"}, policies,
					"nothing is left behind, whatever happens")
			}
			assert.Equal(t, int32(0), deref(t, j.Spec.BackoffLimit))
			assert.Equal(t, "Never", string(j.Spec.Template.Spec.RestartPolicy))
			wait := findContainer(t, j.Spec.Template.Spec.Containers, "wait")
			assert.Equal(t, []string{"kubectl"}, wait.Command)
			assert.Equal(t, "rollout", wait.Args[0])
			assert.Equal(t, "status", wait.Args[1])
			assert.Equal(t, "daemonset/"+cleanup, wait.Args[2])
			assert.Contains(t, wait.Args, "--namespace="+namespace)
			assert.Equal(t, cleanup, j.Spec.Template.Spec.ServiceAccountName)
			assert.True(t, j.Spec.Template.Spec.HostNetwork, "waits for the nodes even with a broken pod network")
			assert.False(t, matches(ds.Spec.Selector.MatchLabels, j.Spec.Template.Labels))

			var r role
			m.get(t, "Role", cleanup, &r)
			require.Len(t, r.Rules, 1, "read its own DaemonSet, nothing else")
			assert.Equal(t, []string{"apps"}, r.Rules[0].APIGroups)
			assert.Equal(t, []string{"daemonsets"}, r.Rules[0].Resources)
			assert.ElementsMatch(t, []string{"get", "list", "watch"}, r.Rules[0].Verbs)
			var rb roleBinding
			m.get(t, "RoleBinding", cleanup, &rb)
			assert.Equal(t, cleanup, rb.RoleRef.Name)
			require.Len(t, rb.Subjects, 1)
			assert.Equal(t, cleanup, rb.Subjects[0].Name)
			assert.Equal(t, namespace, rb.Subjects[0].Namespace)
			for _, kind := range []string{"ServiceAccount", "Role", "RoleBinding"} {
				var meta struct {
					Metadata struct {
						Annotations map[string]string `json:"annotations"`
					} `json:"metadata"`
				}
				require.NoError(t, yaml.Unmarshal(m.docs[kind+"/"+cleanup], &meta))
				assert.Equal(t, "post-delete", meta.Metadata.Annotations["helm.sh/hook"], kind)
				assert.Equal(t, "-1", meta.Metadata.Annotations["helm.sh/hook-weight"], "%s before the pods that use it", kind)
			}
		})
	}

	t.Run("disabled", func(t *testing.T) {
		t.Parallel()
		for _, set := range []string{"cleanup.enabled=false", "containerd.configure=false"} {
			m := render(t, "--set", set)
			for _, k := range m.keys() {
				assert.NotContains(t, k, "cleanup", set)
			}
		}
	})
}

// TestContainersLockedDown checks every container the chart runs: no
// privilege escalation, a read-only root filesystem, all capabilities
// dropped (init containers add back only what they need), requests set.
func TestContainersLockedDown(t *testing.T) {
	t.Parallel()
	for name, args := range map[string][]string{"defaults": nil, "full values": {"-f", fullValues},
		"runtime crio": {"--set", "runtime=crio"}, "runtime auto": {"--set", "runtime=auto"}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := render(t, args...)
			var pods []podSpecOf
			for _, k := range m.keys() {
				kind, n, _ := strings.Cut(k, "/")
				switch kind {
				case "DaemonSet":
					var ds daemonSet
					m.get(t, kind, n, &ds)
					pods = append(pods, podSpecOf{k, ds.Spec.Template.Spec.SecurityContext, ds.Spec.Template.Spec.InitContainers, ds.Spec.Template.Spec.Containers})
				case "Job":
					var j job
					m.get(t, kind, n, &j)
					pods = append(pods, podSpecOf{k, j.Spec.Template.Spec.SecurityContext, j.Spec.Template.Spec.InitContainers, j.Spec.Template.Spec.Containers})
				}
			}
			require.Len(t, pods, 3)
			allowedAdds := map[string][]string{"fix-permissions": {"CHOWN", "DAC_OVERRIDE", "FOWNER"}}
			for _, p := range pods {
				for _, c := range slices.Concat(p.init, p.containers) {
					where := p.name + " " + c.Name
					sc := c.SecurityContext
					require.NotNil(t, sc, where)
					assert.False(t, deref(t, sc.AllowPrivilegeEscalation), where)
					assert.True(t, deref(t, sc.ReadOnlyRootFilesystem), where)
					assert.Nil(t, sc.Privileged, where)
					require.NotNil(t, sc.Capabilities, where)
					assert.Equal(t, []string{"ALL"}, strs(sc.Capabilities.Drop), where)
					assert.Equal(t, allowedAdds[c.Name], strs(sc.Capabilities.Add), where)
					// Root only where the host's directories need it.
					uid, nonRoot := sc.RunAsUser, sc.RunAsNonRoot
					if p.pod != nil && uid == nil {
						uid = p.pod.RunAsUser
					}
					if p.pod != nil && nonRoot == nil {
						nonRoot = p.pod.RunAsNonRoot
					}
					if slices.Contains([]string{"fix-permissions", "configure-containerd", "remove-containerd-config", "configure-crio", "remove-crio-config"}, c.Name) {
						assert.Equal(t, int64(0), deref(t, uid), where)
					} else {
						assert.NotEqual(t, int64(0), deref(t, uid), where)
						assert.True(t, deref(t, nonRoot), where)
					}
					assert.NotEmpty(t, c.Resources.Requests, where)
					assert.Contains(t, c.Resources.Limits, resMemory, where)
				}
			}
		})
	}
}

type podSpecOf struct {
	name             string
	pod              *podSecurityContext
	init, containers []container
}

func TestFullValues(t *testing.T) {
	t.Parallel()
	m := render(t, "-f", fullValues)
	const name = "lifeboat-full"
	var ds daemonSet
	m.get(t, "DaemonSet", name, &ds)
	pod := ds.Spec.Template.Spec
	c := findContainer(t, pod.Containers, "lifeboat")
	assert.Equal(t, "registry.example.com/mirror/lifeboat:1.2.3", c.Image)
	assert.Equal(t, "Always", string(c.ImagePullPolicy))
	assert.Equal(t, []string{"image-pull"}, []string{pod.ImagePullSecrets[0].Name})

	// k3s: the hosts dir and containerd's config from the values, at the same paths.
	const k3sHosts = "/var/lib/rancher/k3s/agent/etc/containerd/certs.d"
	cc := findContainer(t, pod.InitContainers, "configure-containerd")
	assert.Equal(t, []string{
		"configure-containerd",
		"--hosts-dir=" + k3sHosts,
		"--mirror=http://127.0.0.1:5055",
		"--registries=docker.io=https://registry-1.docker.io,ghcr.io=https://ghcr.io,registry.internal:5000=https://registry.internal:5000",
		"--dial-timeout=2s",
		"--containerd-config=/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
		"--force",
	}, cc.Args)
	assert.Equal(t, map[string]string{
		"containerd-hosts":  k3sHosts,
		"containerd-config": "/var/lib/rancher/k3s/agent/etc/containerd:ro",
	}, mounts(cc))
	assert.Equal(t, k3sHosts, findVolume(t, pod.Volumes, "containerd-hosts").HostPath.Path)
	assert.Equal(t, "/var/lib/rancher/k3s/agent/etc/containerd", findVolume(t, pod.Volumes, "containerd-config").HostPath.Path)

	// Upstream credentials: the Secret's key mounted read-only as config.json.
	creds := findVolume(t, pod.Volumes, "credentials")
	require.NotNil(t, creds.Secret)
	assert.Equal(t, "upstream-creds", creds.Secret.SecretName)
	require.Len(t, creds.Secret.Items, 1)
	assert.Equal(t, "config.json", creds.Secret.Items[0].Key)
	assert.Equal(t, "config.json", creds.Secret.Items[0].Path)
	assert.Equal(t, int32(0o440), deref(t, creds.Secret.DefaultMode))
	assert.Equal(t, "/etc/lifeboat/credentials:ro", mounts(c)["credentials"])
	assert.Equal(t, "/etc/lifeboat/ca:ro", mounts(c)["internal-ca"])
	for _, ic := range pod.InitContainers {
		assert.NotContains(t, mounts(ic), "credentials", ic.Name)
	}
	cfg, _ := m.lifeboatConfig(t, name)
	assert.Equal(t, "/etc/lifeboat/credentials/config.json", deref(t, cfg.DockerConfig))

	// The node's credential provider config and plugins, read-only at the
	// node's own paths; the private-content policy.
	const eks = "/etc/eks/image-credential-provider"
	assert.Equal(t, eks+"/config.json:ro", mounts(c)["credential-provider-config"])
	assert.Equal(t, eks+":ro", mounts(c)["credential-provider-bin"])
	assert.Equal(t, eks+"/config.json", findVolume(t, pod.Volumes, "credential-provider-config").HostPath.Path)
	assert.Equal(t, eks, findVolume(t, pod.Volumes, "credential-provider-bin").HostPath.Path)
	assert.Equal(t, eks+"/config.json", cfg.ProviderConfig)
	assert.Equal(t, eks, cfg.ProviderBinDir)
	assert.Equal(t, "3s", cfg.CredentialTimeout)
	assert.Equal(t, "verify", cfg.PrivateContent)
	assert.Equal(t, "deny", cfg.PrivateDuringOutage)
	assert.Equal(t, "shared", cfg.Upstreams[1].PrivateContent, "a registry's own policy")

	// Ports, addresses, probes.
	assert.Equal(t, "127.0.0.1:5055", cfg.Listen)
	assert.Equal(t, "10.0.0.1:9191", cfg.MetricsListen)
	assert.Equal(t, "127.0.0.1:5092", cfg.AdminListen)
	assert.Equal(t, "10.0.0.1", c.LivenessProbe.HTTPGet.Host, "kubelet must probe where metrics listen")
	assert.Equal(t, "10.0.0.1", c.ReadinessProbe.HTTPGet.Host)
	assert.Equal(t, int32(20), c.LivenessProbe.PeriodSeconds)

	// The config file: every key set, durations as strings.
	assert.Equal(t, "ghcr.io", cfg.DefaultRegistry)
	assert.Equal(t, "debug", cfg.LogLevel)
	assert.Equal(t, "text", cfg.LogFormat)
	assert.Equal(t, "30s", cfg.TagTTL)
	assert.Equal(t, "720h", cfg.MaxStaleness)
	assert.Equal(t, int64(10737418240), cfg.MaxBlobSize, "large sizes stay integers")
	assert.Equal(t, 8, cfg.MaxConcurrentFills)
	assert.Equal(t, "0", cfg.MaxSize)
	assert.Equal(t, "5%", cfg.MinFreeDisk)
	assert.Equal(t, "30m", cfg.PrefetchInterval)
	assert.Equal(t, []lbPrefetch{{Ref: "ghcr.io/example/pause:3.10"}, {Ref: "docker.io/library/nginx:1.27", Platforms: []string{"linux/amd64", "linux/arm64"}}}, cfg.Prefetch)
	assert.Equal(t, &lbTimeouts{Dial: "2s", TLSHandshake: "4s", ResponseHeader: "8s", Revalidate: "1s", Request: "8s", BodyStall: "45s"}, cfg.Timeouts)
	assert.Equal(t, &lbBreaker{Failures: 4, Backoff: "3s", MaxBackoff: "2m"}, cfg.Breaker)
	require.Len(t, cfg.Upstreams, 3)
	hub := cfg.Upstreams[0]
	assert.Equal(t, "5m", deref(t, hub.TagTTL))
	assert.Equal(t, "168h", deref(t, hub.MaxStaleness))
	assert.True(t, deref(t, hub.ServeStaleOnNotFound))
	assert.Equal(t, &lbTimeouts{Revalidate: "800ms"}, hub.Timeouts)
	assert.Equal(t, &lbBreaker{Failures: 5}, hub.Breaker)
	assert.Nil(t, cfg.Upstreams[1].TagTTL, "unset per-upstream keys inherit")
	internal := cfg.Upstreams[2]
	assert.Equal(t, "registry.internal:5000", internal.Name)
	assert.Equal(t, "/etc/lifeboat/ca/ca.pem", internal.CAFile)
	assert.Equal(t, &lbBreaker{Failures: 2, Backoff: "1s", MaxBackoff: "30s"}, internal.Breaker)

	// Security context and the data directory's owner follow the values.
	assert.Equal(t, int64(10001), deref(t, c.SecurityContext.RunAsUser))
	fix := findContainer(t, pod.InitContainers, "fix-permissions")
	assert.Equal(t, "registry.example.com/mirror/busybox:1.37.0", fix.Image)
	assert.Contains(t, strings.Join(fix.Command, " "), "chown -R 10001:10001 /var/lib/lifeboat")
	data := findVolume(t, pod.Volumes, "data")
	assert.Equal(t, "/mnt/fast/lifeboat", data.HostPath.Path)
	assert.Equal(t, "Directory", string(deref(t, data.HostPath.Type)), "a dedicated disk that did not mount is not created on the root filesystem")
	assert.Equal(t, "/var/lib/lifeboat", mounts(c)["data"])

	// Scheduling.
	assert.Equal(t, map[string]string{"kubernetes.io/os": "linux", "node-role.example.com/worker": "true"}, pod.NodeSelector)
	require.Len(t, pod.Tolerations, 1)
	assert.Equal(t, "dedicated", pod.Tolerations[0].Key)
	require.NotNil(t, pod.Affinity)
	require.NotNil(t, pod.Affinity.NodeAffinity)
	assert.Equal(t, "lifeboat-critical", pod.PriorityClassName)
	assert.Equal(t, int64(45), deref(t, pod.TerminationGracePeriodSeconds))
	assert.Equal(t, "10%", ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.String())
	assert.Equal(t, "0", ds.Spec.UpdateStrategy.RollingUpdate.MaxSurge.String())
	assert.Equal(t, "platform", ds.Spec.Template.Annotations["example.com/team"])
	assert.NotEmpty(t, ds.Spec.Template.Annotations["checksum/config"])
	assert.Equal(t, "node", ds.Spec.Template.Labels["example.com/tier"])
	assert.Equal(t, "lifeboat-sa", pod.ServiceAccountName)
	assert.Equal(t, "GOMEMLIMIT", c.Env[len(c.Env)-1].Name, "extraEnv after the chart's own")
	cpuLimit := c.Resources.Limits[resCPU]
	assert.Equal(t, "1", cpuLimit.String())

	// The headless metrics Service, and the ServiceMonitor selecting it.
	var svc service
	m.get(t, "Service", name+"-metrics", &svc)
	assert.Equal(t, "None", svc.Spec.ClusterIP)
	assert.Equal(t, ds.Spec.Selector.MatchLabels, svc.Spec.Selector)
	require.Len(t, svc.Spec.Ports, 1)
	assert.Equal(t, int32(9191), svc.Spec.Ports[0].Port)
	assert.Equal(t, "metrics", svc.Spec.Ports[0].TargetPort.String())

	sm := m.object(t, "ServiceMonitor", name)
	assert.Equal(t, "monitoring.coreos.com/v1", sm["apiVersion"])
	assert.Equal(t, "kube-prometheus-stack", dig(t, sm, "metadata", "labels", "release"))
	for k, v := range dig(t, sm, "spec", "selector", "matchLabels").(map[string]any) {
		assert.Equal(t, v, svc.Labels[k], "ServiceMonitor selects the metrics Service by %s", k)
	}
	assert.Equal(t, []any{namespace}, dig(t, sm, "spec", "namespaceSelector", "matchNames"))
	assert.Equal(t, "metrics", dig(t, sm, "spec", "endpoints", 0, "port"))
	assert.Equal(t, "/metrics", dig(t, sm, "spec", "endpoints", 0, "path"))
	assert.Equal(t, "15s", dig(t, sm, "spec", "endpoints", 0, "interval"))
	assert.Len(t, dig(t, sm, "spec", "endpoints", 0, "relabelings"), 2, "node label plus the values' one")

	// Alerts.
	rules := alertRules(t, m, name)
	assert.NotContains(t, rules, "LifeboatRequestsFailing", "disabled in the values")
	for alert, want := range map[string]struct{ expr, dur string }{
		"LifeboatDown":                    {`up{job="lifeboat-scrape", namespace="lb"} == 0`, "5m"},
		"LifeboatUpstreamCircuitOpen":     {"lifeboat_upstream_circuit_open", "5m"},
		"LifeboatServingStale":            {"rate(lifeboat_proxy_stale_responses_total[5m])) > 0", ""},
		"LifeboatFillErrors":              {`rate(lifeboat_proxy_fills_total{result!~"ok|abandoned|yielded"}[10m])) > 0`, "0s"},
		"LifeboatDiskHeadroomLow":         {"lifeboat_cache_min_free_disk_bytes", "15m"},
		"LifeboatRuntimeBypassesLifeboat": {"lifeboat_node_config_ok == 0", "10m"},
		"LifeboatDigestMismatch":          {"lifeboat_proxy_digest_mismatches_total", ""},
		"LifeboatRateLimitLow":            {"lifeboat_upstream_ratelimit_remaining) < 25", ""},
		"LifeboatFillsBusy":               {"lifeboat_proxy_fills_in_progress", "10m"},
		"LifeboatPeerContentRejected":     {`lifeboat_peer_requests_total{result="rejected"}`, ""},
		"LifeboatPeersUnreachable":        {`lifeboat_peer_requests_total{result=~"error|circuit_open"}`, "10m"},
	} {
		r, ok := rules[alert]
		if assert.True(t, ok, "alert %s missing", alert) {
			assert.Contains(t, r["expr"], want.expr, alert)
			if want.dur != "" {
				assert.Equal(t, want.dur, r["for"], alert)
			}
			if alert != "LifeboatFillsBusy" {
				assert.NotEmpty(t, dig(t, r, "labels", "severity"), alert)
				assert.NotEmpty(t, dig(t, r, "annotations", "summary"), alert)
			}
		}
	}

	// The dashboard.
	var dash configMap
	m.get(t, "ConfigMap", name+"-dashboard", &dash)
	assert.Equal(t, "monitoring", dash.Namespace)
	assert.Equal(t, "1", dash.Labels["grafana_dashboard"])
	assert.Equal(t, "Infrastructure", dash.Annotations["grafana_folder"])
	var d struct {
		UID    string           `json:"uid"`
		Title  string           `json:"title"`
		Panels []map[string]any `json:"panels"`
	}
	require.NoError(t, json.Unmarshal([]byte(dash.Data["lifeboat.json"]), &d))
	assert.Equal(t, "lifeboat-overview", d.UID)
	assert.Greater(t, len(d.Panels), 10)
}

// alertRules is the PrometheusRule's rules by alert name.
func alertRules(t *testing.T, m manifests, name string) map[string]map[string]any {
	t.Helper()
	pr := m.object(t, "PrometheusRule", name)
	assert.Equal(t, "monitoring.coreos.com/v1", pr["apiVersion"])
	out := map[string]map[string]any{}
	for _, g := range dig(t, pr, "spec", "groups").([]any) {
		for _, r := range dig(t, g, "rules").([]any) {
			rule := r.(map[string]any)
			out[rule["alert"].(string)] = rule
		}
	}
	return out
}

func TestConfigChecksumRollsPods(t *testing.T) {
	t.Parallel()
	checksum := func(args ...string) string {
		var ds daemonSet
		render(t, args...).get(t, "DaemonSet", release+"-lifeboat", &ds)
		sum := ds.Spec.Template.Annotations["checksum/config"]
		require.Len(t, sum, 64)
		return sum
	}
	base := checksum()
	assert.NotEqual(t, base, checksum("--set", "config.logLevel=debug"), "a config change rolls the pods")
	assert.NotEqual(t, base, checksum("--set", "config.tagTTL=5m"))
	assert.NotEqual(t, base, checksum("--set", "credentials.existingSecret=creds"), "dockerConfig is in the config")
	assert.Equal(t, base, checksum("--set", "podAnnotations.a=b"), "what is not config does not change it")

}

// TestValuesRejected checks that the schema and the templates refuse values
// that would render a broken or unsafe DaemonSet.
func TestValuesRejected(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"registryPort=notanumber"}, "registryPort"},
		{[]string{"registryPort=70000"}, "registryPort"},
		{[]string{"metrics.port=0"}, "metrics/port"},
		{[]string{"metrics.bindAddress=localhost"}, "bindAddress"},
		{[]string{"config.logLevel=verbose"}, "logLevel"},
		{[]string{"config.logFormat=xml"}, "logFormat"},
		{[]string{"config.tagTTL=5"}, "tagTTL"},
		{[]string{"config.tagTTL=5 minutes"}, "tagTTL"},
		{[]string{"config.timeouts.revalidate=fast"}, "revalidate"},
		{[]string{"config.timeouts.dail=1s"}, "dail"},
		{[]string{"config.maxSize=lots"}, "maxSize"},
		{[]string{"config.minFreeDisk=half"}, "minFreeDisk"},
		{[]string{"maxUnavailable=0"}, "maxUnavailable"},
		{[]string{"registries[0].name=docker.io/library"}, "name"},
		{[]string{"registries[0].url=registry-1.docker.io"}, "url"},
		{[]string{"containerd.hostsDir=etc/containerd/certs.d"}, "hostsDir"},
		{[]string{"runtime=docker"}, "runtime"},
		{[]string{"crio.confDir=registries.conf.d"}, "confDir"},
		{[]string{"crio.detect[0]=crio.sock"}, "detect"},
		{[]string{"crio.reload=sometimes"}, "reload"},
		{[]string{"dataDir.hostPath=lifeboat"}, "hostPath"},
		{[]string{"dataDir.hostPathType=File"}, "hostPathType"},
		{[]string{"adminPort=0"}, "adminPort"},
		{[]string{"metrics.port=5000"}, "metrics.port and registryPort are both 5000"},
		{[]string{"adminPort=5090"}, "adminPort and metrics.port are both 5090"},
		{[]string{"registryPort=7000", "adminPort=7000"}, "adminPort and registryPort are both 7000"},
		{[]string{"image.digest=latest"}, "digest"},
		{[]string{"tolerance=1"}, "tolerance"},
		{[]string{"metrics.prometheusRule.for.LifeboatDown=5 minutes"}, "LifeboatDown"},
		{[]string{"metrics.prometheusRule.for.LifeboatDwon=5m"}, "LifeboatDwon"},
		{[]string{"config.defaultRegistry=example.com"}, `config.defaultRegistry "example.com" is not among`},
		{[]string{"extraUpstreams[0].name=ghcr.io", "extraUpstreams[0].url=https://ghcr.io"}, "registry ghcr.io is listed twice"},
	} {
		t.Run(strings.Join(tc.set, ","), func(t *testing.T) {
			t.Parallel()
			args := []string{"template", release, chart}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			out, err := runHelm(t, args...)
			require.Error(t, err, "rendered:\n%s", out)
			assert.Contains(t, out, tc.want)
		})
	}
}

func TestMetricsServiceWithoutServiceMonitor(t *testing.T) {
	t.Parallel()
	m := render(t, "--set", "metrics.service.enabled=true", "--set", "metrics.bindAddress=127.0.0.1")
	var svc service
	m.get(t, "Service", release+"-lifeboat-metrics", &svc)
	assert.Equal(t, "None", svc.Spec.ClusterIP)
	assert.NotContains(t, m.keys(), "ServiceMonitor/"+release+"-lifeboat")
	var ds daemonSet
	m.get(t, "DaemonSet", release+"-lifeboat", &ds)
	c := findContainer(t, ds.Spec.Template.Spec.Containers, "lifeboat")
	assert.Equal(t, "127.0.0.1", c.LivenessProbe.HTTPGet.Host, "loopback metrics: kubelet probes loopback")
	cfg, _ := m.lifeboatConfig(t, release+"-lifeboat")
	assert.Equal(t, "127.0.0.1:5090", cfg.MetricsListen)
}

// TestMetricNamesExist checks every lifeboat_* series the alerts and the
// dashboard query is declared (Name: "...") in lifeboat's Go sources.
func TestMetricNamesExist(t *testing.T) {
	t.Parallel()
	declared := declaredMetrics(t)
	require.Contains(t, declared, "lifeboat_registry_requests_total", "the declarations were not found")

	m := render(t, "--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.dashboard.enabled=true")
	var exprs []string
	for _, r := range alertRules(t, m, release+"-lifeboat") {
		exprs = append(exprs, r["expr"].(string))
	}
	var dash configMap
	m.get(t, "ConfigMap", release+"-lifeboat-dashboard", &dash)

	for source, text := range map[string]string{
		"PrometheusRule": strings.Join(exprs, "\n"),
		"dashboard":      dash.Data["lifeboat.json"],
	} {
		used := metricNames(text, declared)
		assert.GreaterOrEqual(t, len(used), 5, "%s queries too few lifeboat metrics to be checked", source)
		for _, name := range used {
			assert.Contains(t, declared, name, "%s uses %s, which lifeboat does not declare", source, name)
		}
	}
}

// metricNames is the lifeboat_* names in text, histogram and summary
// suffixes stripped when the base name is declared.
func metricNames(text string, declared map[string]bool) []string {
	seen := map[string]bool{}
	for _, name := range regexp.MustCompile(`lifeboat_[a-z_]+`).FindAllString(text, -1) {
		if !declared[name] {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, suffix); ok && declared[base] {
					name = base
				}
			}
		}
		seen[name] = true
	}
	var out []string
	for name := range seen {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// declaredMetrics greps the module's non-test Go sources for metric names.
func declaredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`Name:\s*"(lifeboat_[a-z_]+)"`)
	declared := map[string]bool{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "charts", "testdata", "vendor", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllSubmatch(src, -1) {
			declared[string(m[1])] = true
		}
		return nil
	})
	require.NoError(t, err)
	return declared
}

// TestNotes renders NOTES.txt through a chart copy in which it is an
// ordinary template (helm template leaves NOTES.txt out).
func TestNotes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.CopyFS(dir, os.DirFS(chart)))
	notes, err := os.ReadFile(filepath.Join(dir, "templates", "NOTES.txt"))
	require.NoError(t, err)
	require.NoError(t, os.Remove(filepath.Join(dir, "templates", "NOTES.txt")))
	// A ConfigMap whose data is the notes, so helm's YAML parse accepts it.
	wrapped := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n" +
		"{{- $notes := include \"notes.body\" . }}\n{{ $notes | indent 4 }}\n" +
		"{{- define \"notes.body\" }}\n" + string(notes) + "\n{{- end }}\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "templates", "notes.yaml"), []byte(wrapped), 0o644))

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"defaults", nil, []string{
			"crictl pull docker.io/library/alpine:3.20",
			"X-Lifeboat-Cache",
			"http://127.0.0.1:5000/v2/library/alpine/manifests/3.20?ns=docker.io",
			"curl -s http://127.0.0.1:5090/metrics",
			"rollout status daemonset/rel-lifeboat",
			"/etc/containerd/certs.d/docker.io/hosts.toml",
			"post-delete hook removes",
		}},
		{"runtime crio", []string{"--set", "runtime=crio", "--set", "crio.reload=false"}, []string{
			"CRI-O drop-in on each node:         /etc/containers/registries.conf.d/50-lifeboat.conf",
			"cat /etc/containers/registries.conf.d/50-lifeboat.conf",
			"http://127.0.0.1:5000/v2/docker.io/library/alpine/manifests/3.20'",
			"crio.reload is false",
			"removes the CRI-O drop-in from every node",
		}},
		{"runtime auto", []string{"--set", "runtime=auto"}, []string{
			"/etc/containerd/certs.d/<registry>/hosts.toml",
			"/etc/containers/registries.conf.d/50-lifeboat.conf",
			"runtime is auto: each node's init containers configure the runtime it has",
			"removes the hosts.toml files and CRI-O drop-ins",
		}},
		{"full values", []string{"-f", fullValues}, []string{
			"/var/lib/rancher/k3s/agent/etc/containerd/certs.d/docker.io/hosts.toml",
			"http://127.0.0.1:5055/v2/",
			"curl -s http://10.0.0.1:9191/metrics",
			"ServiceMonitor lifeboat-full",
			"Secret upstream-creds",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := runHelm(t, append([]string{"template", release, dir, "--namespace", namespace, "--show-only", "templates/notes.yaml"}, tc.args...)...)
			require.NoError(t, err, out)
			var cm configMap
			require.NoError(t, yaml.UnmarshalStrict([]byte(out), &cm), out)
			for _, w := range tc.want {
				assert.Contains(t, cm.Data["notes"], w)
			}
		})
	}
}

// errExited is returned when lifeboat exits before it serves.
var errExited = errors.New("lifeboat exited before serving")

// waitServing reads lifeboat's log until its "lifeboat serving" line and
// returns that line.
func waitServing(r *bufio.Scanner, log *bytes.Buffer) (string, error) {
	for r.Scan() {
		line := r.Text()
		log.WriteString(line + "\n")
		if strings.Contains(line, "lifeboat serving") {
			return line, nil
		}
	}
	return "", errExited
}

// TestBinaryAcceptsConfig starts the real lifeboat with the config files the
// chart renders: lifeboat rejects an unknown key or a bad value at start.
func TestBinaryAcceptsConfig(t *testing.T) {
	t.Parallel()
	bin := lifeboatBinary(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(ca, testCA(t), 0o644))
	creds := filepath.Join(dir, "config.json")
	require.NoError(t, os.WriteFile(creds, []byte(`{"auths":{}}`), 0o600))
	// The full values with the CA file somewhere that exists here.
	caValues := filepath.Join(dir, "ca-values.yaml")
	full, err := os.ReadFile(fullValues)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(caValues, bytes.ReplaceAll(full, []byte("/etc/lifeboat/ca/ca.pem"), []byte(ca)), 0o644))

	for _, tc := range []struct {
		name      string
		args      []string
		fullname  string
		upstreams string
	}{
		{"defaults", nil, release + "-lifeboat", "7"},
		{"full values", []string{"-f", caValues}, "lifeboat-full", "3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, raw := render(t, tc.args...).lifeboatConfig(t, tc.fullname)
			cfgFile := filepath.Join(t.TempDir(), "lifeboat.yaml")
			require.NoError(t, os.WriteFile(cfgFile, []byte(raw), 0o644))

			// Flags win over the file: loopback ports of our own, a temporary
			// data directory, and credentials that exist here.
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "serve", "--config", cfgFile,
				"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
				"--data-dir", t.TempDir(), "--docker-config", creds, "--image-credential-provider-config", "")
			cmd.Env = cleanEnv()
			stderr, err := cmd.StderrPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			var log bytes.Buffer
			line, err := waitServing(bufio.NewScanner(stderr), &log)
			if err != nil {
				_ = cmd.Wait()
				t.Fatalf("lifeboat refused the rendered config:\n%s\nconfig:\n%s", log.String(), raw)
			}
			assert.Regexp(t, `upstreams"?[:=]`+tc.upstreams+`\b`, line)
			addr := regexp.MustCompile(`metrics_listen"?[:=]"?([0-9.]+:[0-9]+)`).FindStringSubmatch(line)
			if assert.Len(t, addr, 2, line) {
				resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr[1] + "/readyz")
				if assert.NoError(t, err) {
					resp.Body.Close()
					assert.Equal(t, http.StatusOK, resp.StatusCode, "the readiness probe's path")
				}
			}
			require.NoError(t, cmd.Process.Signal(os.Interrupt))
			go func() { // drain the rest of the log so lifeboat never blocks on it
				for sc := bufio.NewScanner(stderr); sc.Scan(); {
				}
			}()
			assert.NoError(t, cmd.Wait())
		})
	}
}

// TestBinaryConfiguresContainerd runs the real configure-containerd with
// the init container's arguments, then the cleanup hook's, against a
// temporary hosts dir: the chart's flags exist and do what the chart means.
func TestBinaryConfiguresContainerd(t *testing.T) {
	t.Parallel()
	bin := lifeboatBinary(t)
	for _, tc := range []struct {
		name, fullname string
		args           []string
		mirror, dial   string
		servers        map[string]string
	}{
		{"defaults", release + "-lifeboat", nil, "http://127.0.0.1:5000", "1s", map[string]string{
			"docker.io": "https://registry-1.docker.io", "ghcr.io": "https://ghcr.io", "quay.io": "https://quay.io",
			"registry.k8s.io": "https://registry.k8s.io", "gcr.io": "https://gcr.io",
			"mcr.microsoft.com": "https://mcr.microsoft.com", "public.ecr.aws": "https://public.ecr.aws",
		}},
		{"full values", "lifeboat-full", []string{"-f", fullValues}, "http://127.0.0.1:5055", "2s", map[string]string{
			"docker.io": "https://registry-1.docker.io", "ghcr.io": "https://ghcr.io",
			"registry.internal:5000": "https://registry.internal:5000",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := render(t, tc.args...)
			var ds, cds daemonSet
			m.get(t, "DaemonSet", tc.fullname, &ds)
			m.get(t, "DaemonSet", tc.fullname+"-cleanup", &cds)
			install := findContainer(t, ds.Spec.Template.Spec.InitContainers, "configure-containerd").Args
			remove := findContainer(t, cds.Spec.Template.Spec.InitContainers, "remove-containerd-config").Args

			dir := t.TempDir()
			hosts := filepath.Join(dir, "certs.d")
			require.NoError(t, os.Mkdir(hosts, 0o755))
			ctdConfig := filepath.Join(dir, "config.toml")
			require.NoError(t, os.WriteFile(ctdConfig, []byte("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \""+hosts+"\"\n"), 0o644))
			local := func(args []string) []string {
				out := slices.Clone(args)
				for i, a := range out {
					switch {
					case strings.HasPrefix(a, "--hosts-dir="):
						out[i] = "--hosts-dir=" + hosts
					case strings.HasPrefix(a, "--containerd-config="):
						out[i] = "--containerd-config=" + ctdConfig
					}
				}
				return out
			}

			out, stderr := runLifeboat(t, bin, local(install)...)
			assert.NotContains(t, stderr, "warning", "containerd's config_path is the hosts dir")
			for name, server := range tc.servers {
				assert.Contains(t, out, name+": ")
				b, err := os.ReadFile(filepath.Join(hosts, name, "hosts.toml"))
				if assert.NoError(t, err, name) {
					assert.Contains(t, string(b), `server = "`+server+`"`, name)
					assert.Contains(t, string(b), `[host."`+tc.mirror+`"]`, name)
					assert.Contains(t, string(b), `dial_timeout = "`+tc.dial+`"`, name)
				}
			}
			entries, err := os.ReadDir(hosts)
			require.NoError(t, err)
			assert.Len(t, entries, len(tc.servers))

			runLifeboat(t, bin, local(remove)...)
			entries, err = os.ReadDir(hosts)
			require.NoError(t, err)
			assert.Empty(t, entries, "the cleanup hook leaves the hosts dir as it was")
		})
	}
}

func runLifeboat(t *testing.T, bin string, args ...string) (stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cleanEnv()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	require.NoError(t, cmd.Run(), "lifeboat %v:\n%s%s", args, o.String(), e.String())
	return o.String(), e.String()
}

// cleanEnv is the environment without LIFEBOAT_* variables, which would
// override what the chart renders.
func cleanEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "LIFEBOAT_") })
}
