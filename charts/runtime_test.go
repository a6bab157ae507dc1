package charts

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const defaultRegistries = "--registries=docker.io=https://registry-1.docker.io,ghcr.io=https://ghcr.io,quay.io=https://quay.io," +
	"registry.k8s.io=https://registry.k8s.io,gcr.io=https://gcr.io,mcr.microsoft.com=https://mcr.microsoft.com," +
	"public.ecr.aws=https://public.ecr.aws"

// installAndCleanup are lifeboat's DaemonSet and the cleanup hook's.
func installAndCleanup(t *testing.T, m manifests) (install, cleanup daemonSet) {
	t.Helper()
	m.get(t, "DaemonSet", release+"-lifeboat", &install)
	m.get(t, "DaemonSet", release+"-lifeboat-cleanup", &cleanup)
	return install, cleanup
}

func initNames(cs []container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// hostPaths are the hostPath volumes of a pod: path -> type.
func hostPaths(vs []volume) map[string]string {
	out := map[string]string{}
	for _, v := range vs {
		if v.HostPath != nil {
			out[v.HostPath.Path] = string(deref2(v.HostPath.Type))
		}
	}
	return out
}

func deref2[T ~string](p *T) T {
	if p == nil {
		return ""
	}
	return *p
}

func TestRuntimeCRIO(t *testing.T) {
	t.Parallel()
	m := render(t, "--set", "runtime=crio")
	ds, cds := installAndCleanup(t, m)
	pod := ds.Spec.Template.Spec
	assert.Equal(t, []string{"fix-permissions", "configure-crio"}, initNames(pod.InitContainers))
	assert.True(t, pod.HostPID, "configure-crio sends SIGHUP to crio")
	cc := findContainer(t, pod.InitContainers, "configure-crio")
	assert.Equal(t, []string{
		"configure-crio",
		"--conf-dir=/etc/containers/registries.conf.d",
		"--registries-conf=/etc/containers/registries.conf",
		"--mirror=http://127.0.0.1:5000",
		defaultRegistries,
		"--reload=true",
	}, cc.Args)
	assert.Equal(t, map[string]string{
		"crio-conf-dir":        "/etc/containers/registries.conf.d",
		"crio-registries-conf": "/etc/containers:ro",
	}, mounts(cc), "the node's own paths; registries.conf read only")
	assert.Equal(t, map[string]string{
		"/var/lib/lifeboat":                 "DirectoryOrCreate",
		"/etc/containers/registries.conf.d": "DirectoryOrCreate",
		"/etc/containers":                   "DirectoryOrCreate",
	}, hostPaths(pod.Volumes), "nothing of containerd's: a CRI-O node gets no /etc/containerd")

	cpod := cds.Spec.Template.Spec
	assert.Equal(t, []string{"remove-crio-config"}, initNames(cpod.InitContainers))
	assert.True(t, cpod.HostPID)
	rm := findContainer(t, cpod.InitContainers, "remove-crio-config")
	assert.Equal(t, []string{"configure-crio", "--remove", "--conf-dir=/etc/containers/registries.conf.d", "--reload=true"}, rm.Args)
	assert.Equal(t, map[string]string{"crio-conf-dir": "/etc/containers/registries.conf.d"}, mounts(rm))
	assert.Equal(t, map[string]string{"/etc/containers/registries.conf.d": "DirectoryOrCreate"}, hostPaths(cpod.Volumes))

	// Without reload, no hostPID; containerd's configuration off has no say.
	m = render(t, "--set", "runtime=crio", "--set", "crio.reload=false", "--set", "containerd.configure=false",
		"--set", "crio.registriesConf=", "--set", "crio.force=true")
	ds, cds = installAndCleanup(t, m)
	assert.False(t, ds.Spec.Template.Spec.HostPID)
	assert.False(t, cds.Spec.Template.Spec.HostPID)
	cc = findContainer(t, ds.Spec.Template.Spec.InitContainers, "configure-crio")
	assert.Equal(t, []string{"configure-crio", "--conf-dir=/etc/containers/registries.conf.d", "--registries-conf=",
		"--mirror=http://127.0.0.1:5000", defaultRegistries, "--reload=false", "--force"}, cc.Args)
	assert.Equal(t, map[string]string{"crio-conf-dir": "/etc/containers/registries.conf.d"}, mounts(cc), "no registries.conf to read")

	// crio.configure=false: nothing of the runtime's, no cleanup hook.
	m = render(t, "--set", "runtime=crio", "--set", "crio.configure=false")
	var plain daemonSet
	m.get(t, "DaemonSet", release+"-lifeboat", &plain)
	assert.Equal(t, []string{"fix-permissions"}, initNames(plain.Spec.Template.Spec.InitContainers))
	assert.False(t, plain.Spec.Template.Spec.HostPID)
	for _, k := range m.keys() {
		assert.NotContains(t, k, "cleanup")
	}
}

func TestRuntimeContainerdHasNoCRIO(t *testing.T) {
	t.Parallel()
	ds, cds := installAndCleanup(t, render(t))
	assert.Equal(t, []string{"fix-permissions", "configure-containerd"}, initNames(ds.Spec.Template.Spec.InitContainers))
	assert.Equal(t, []string{"remove-containerd-config"}, initNames(cds.Spec.Template.Spec.InitContainers))
	assert.False(t, ds.Spec.Template.Spec.HostPID, "no hostPID where no crio is signalled")
	assert.False(t, cds.Spec.Template.Spec.HostPID)
	for path := range hostPaths(ds.Spec.Template.Spec.Volumes) {
		assert.NotContains(t, path, "containers", "nothing of CRI-O's")
	}
}

func TestRuntimeAuto(t *testing.T) {
	t.Parallel()
	m := render(t, "--set", "runtime=auto")
	ds, cds := installAndCleanup(t, m)
	pod := ds.Spec.Template.Spec
	assert.Equal(t, []string{"fix-permissions", "configure-containerd", "configure-crio"}, initNames(pod.InitContainers))
	assert.True(t, pod.HostPID)
	ctd := findContainer(t, pod.InitContainers, "configure-containerd")
	assert.Equal(t, []string{
		"configure-containerd", "--hosts-dir=/etc/containerd/certs.d", "--mirror=http://127.0.0.1:5000", defaultRegistries,
		"--dial-timeout=1s", "--containerd-config=/etc/containerd/config.toml",
		"--host-root=/host", "--only-if-present=/run/containerd/containerd.sock,/etc/containerd/config.toml",
	}, ctd.Args)
	crio := findContainer(t, pod.InitContainers, "configure-crio")
	assert.Equal(t, []string{
		"configure-crio", "--conf-dir=/etc/containers/registries.conf.d", "--registries-conf=/etc/containers/registries.conf",
		"--mirror=http://127.0.0.1:5000", defaultRegistries, "--reload=true",
		"--host-root=/host", "--only-if-present=/run/crio/crio.sock,/etc/crio",
	}, crio.Args)
	for _, c := range []container{ctd, crio} {
		assert.Equal(t, map[string]string{"host-etc": "/host/etc", "host-run": "/host/run:ro"}, mounts(c), c.Name)
	}
	// Only directories that exist on every node, never created: a node
	// without containerd gets no /etc/containerd, one without CRI-O no
	// /etc/containers.
	assert.Equal(t, map[string]string{"/var/lib/lifeboat": "DirectoryOrCreate", "/etc": "Directory", "/run": "Directory"},
		hostPaths(pod.Volumes))

	cpod := cds.Spec.Template.Spec
	assert.Equal(t, []string{"remove-containerd-config", "remove-crio-config"}, initNames(cpod.InitContainers), "cleanup undoes whichever was written")
	assert.True(t, cpod.HostPID)
	assert.Equal(t, []string{"configure-containerd", "--remove", "--hosts-dir=/etc/containerd/certs.d", "--mirror=http://127.0.0.1:5000",
		defaultRegistries, "--host-root=/host"}, findContainer(t, cpod.InitContainers, "remove-containerd-config").Args)
	assert.Equal(t, []string{"configure-crio", "--remove", "--conf-dir=/etc/containers/registries.conf.d", "--reload=true", "--host-root=/host"},
		findContainer(t, cpod.InitContainers, "remove-crio-config").Args)
	assert.Equal(t, map[string]string{"/etc": "Directory", "/run": "Directory"}, hostPaths(cpod.Volumes))

	// k3s's containerd under /var/lib/rancher: /var is mounted too, and
	// its socket counts.
	m = render(t, "--set", "runtime=auto",
		"--set", "containerd.hostsDir=/var/lib/rancher/k3s/agent/etc/containerd/certs.d",
		"--set", "containerd.configFile=/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
		"--set", "containerd.detect={/run/k3s/containerd/containerd.sock}")
	ds, _ = installAndCleanup(t, m)
	ctd = findContainer(t, ds.Spec.Template.Spec.InitContainers, "configure-containerd")
	assert.Contains(t, ctd.Args, "--only-if-present=/run/k3s/containerd/containerd.sock,/var/lib/rancher/k3s/agent/etc/containerd/config.toml")
	assert.Equal(t, map[string]string{"host-etc": "/host/etc", "host-run": "/host/run:ro", "host-var": "/host/var"}, mounts(ctd))
	assert.Equal(t, "Directory", hostPaths(ds.Spec.Template.Spec.Volumes)["/var"])
}

// TestBinaryConfiguresEitherRuntime runs the real binary with the init
// containers' and the cleanup hook's arguments for runtime crio and auto,
// on a temporary root standing for a node's: each runtime is configured
// where it is, nothing is created where it is not, and the cleanup hook
// leaves the node as it was.
func TestBinaryConfiguresEitherRuntime(t *testing.T) {
	t.Parallel()
	bin := lifeboatBinary(t)
	for _, tc := range []struct {
		name    string
		runtime string
		node    []string // what the node has
		want    []string // what the install writes
	}{
		{"crio on a CRI-O node", "crio", []string{"etc/crio/crio.conf", "etc/containers/registries.conf"},
			[]string{"etc/containers/registries.conf.d/50-lifeboat.conf"}},
		{"auto on a CRI-O node", "auto", []string{"run/crio/crio.sock", "etc/containers/registries.conf"},
			[]string{"etc/containers/registries.conf.d/50-lifeboat.conf"}},
		{"auto on a containerd node", "auto", []string{"run/containerd/containerd.sock", "etc/containerd/config.toml"},
			[]string{"etc/containerd/certs.d/docker.io/hosts.toml", "etc/containerd/certs.d/public.ecr.aws/hosts.toml"}},
		{"auto on a node with both", "auto", []string{"run/containerd/containerd.sock", "etc/crio/crio.conf"},
			[]string{"etc/containerd/certs.d/docker.io/hosts.toml", "etc/containers/registries.conf.d/50-lifeboat.conf"}},
		{"auto on a node with neither", "auto", []string{"etc/containers/registries.conf"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			for _, f := range tc.node {
				require.NoError(t, os.MkdirAll(filepath.Join(root, filepath.Dir(f)), 0o755))
				require.NoError(t, os.WriteFile(filepath.Join(root, f), nil, 0o644))
			}
			before := tree(t, root)
			ds, cds := installAndCleanup(t, render(t, "--set", "runtime="+tc.runtime))
			// The node's paths under root: --host-root for auto; for crio,
			// the paths the chart mounts at their own place.
			local := func(args []string) []string {
				out := slices.Clone(args[:0:0])
				for _, a := range args {
					switch {
					case a == "--host-root=/host":
						a = "--host-root=" + root
					case a == "--reload=true":
						a = "--reload=false" // never signal a crio running where the test runs
					case tc.runtime == "crio" && (strings.HasPrefix(a, "--conf-dir=") || strings.HasPrefix(a, "--registries-conf=")):
						k, v, _ := strings.Cut(a, "=")
						a = k + "=" + filepath.Join(root, v)
					}
					out = append(out, a)
				}
				return out
			}
			for _, c := range ds.Spec.Template.Spec.InitContainers[1:] {
				runLifeboat(t, bin, local(c.Args)...)
			}
			var wrote []string
			for _, f := range tree(t, root) {
				if !slices.Contains(before, f) && !strings.HasSuffix(f, "/") {
					wrote = append(wrote, f)
				}
			}
			for _, w := range tc.want {
				assert.Contains(t, wrote, w)
			}
			if tc.want == nil {
				assert.Empty(t, wrote, "no runtime, nothing written")
			}
			absent := func() {
				t.Helper()
				if !slices.ContainsFunc(tc.node, func(f string) bool { return strings.Contains(f, "containerd") }) {
					assert.NoDirExists(t, filepath.Join(root, "etc", "containerd"), "no /etc/containerd on a node without containerd")
				}
				if !slices.ContainsFunc(tc.node, func(f string) bool { return strings.Contains(f, "crio") }) {
					assert.NoDirExists(t, filepath.Join(root, "etc", "containers", "registries.conf.d"), "no registries.conf.d on a node without CRI-O")
				}
			}
			absent()

			for _, c := range cds.Spec.Template.Spec.InitContainers {
				runLifeboat(t, bin, local(c.Args)...)
			}
			// Every file as it was; a runtime's empty directory that the
			// install created may stay (as a hostPath mount's would).
			files := func(paths []string) []string {
				return slices.DeleteFunc(slices.Clone(paths), func(p string) bool { return strings.HasSuffix(p, "/") })
			}
			assert.Equal(t, files(before), files(tree(t, root)), "the cleanup hook removes every file it wrote")
			absent()
		})
	}
}

// tree lists every file and directory (with a trailing /) under root.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			rel += "/"
		}
		out = append(out, rel)
		return nil
	}))
	return out
}

// TestNodeCheckFollowsRuntime: lifeboat checks (lifeboat_node_config_ok)
// the files the init containers write, mounted read-only where they are.
func TestNodeCheckFollowsRuntime(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		runtime string
		want    lbNodeCheck
		mounts  map[string]string
	}{
		{"containerd", lbNodeCheck{ContainerdHostsDir: "/etc/containerd/certs.d", ContainerdConfig: "/etc/containerd/config.toml"},
			map[string]string{"containerd-config": "/etc/containerd:ro", "containerd-hosts": "/etc/containerd/certs.d:ro"}},
		{"crio", lbNodeCheck{CRIOConfDir: "/etc/containers/registries.conf.d"},
			map[string]string{"crio-conf-dir": "/etc/containers/registries.conf.d:ro"}},
		{"auto", lbNodeCheck{ContainerdHostsDir: "/etc/containerd/certs.d", ContainerdConfig: "/etc/containerd/config.toml",
			CRIOConfDir: "/etc/containers/registries.conf.d", HostRoot: "/host", OnlyIfPresent: true},
			map[string]string{"host-etc": "/host/etc:ro"}},
	} {
		t.Run(tc.runtime, func(t *testing.T) {
			t.Parallel()
			m := render(t, "--set", "runtime="+tc.runtime)
			cfg, _ := m.lifeboatConfig(t, release+"-lifeboat")
			require.NotNil(t, cfg.NodeCheck)
			assert.Equal(t, tc.want, *cfg.NodeCheck)
			var ds daemonSet
			m.get(t, "DaemonSet", release+"-lifeboat", &ds)
			got := mounts(findContainer(t, ds.Spec.Template.Spec.Containers, "lifeboat"))
			for name, at := range tc.mounts {
				assert.Equal(t, at, got[name], name)
			}
		})
	}
	m := render(t, "--set", "containerd.configure=false")
	cfg, _ := m.lifeboatConfig(t, release+"-lifeboat")
	assert.Nil(t, cfg.NodeCheck, "nothing written, nothing checked")
}
