package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// containerd configs: root, state and sockets in dir (@D@), the native
// snapshotter, registry hosts from @D@/certs.d.
const containerd16Config = `version = 2
root = "@D@/root"
state = "@D@/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "@D@/c.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "@D@/opt"
[plugins."io.containerd.grpc.v1.cri"]
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "@D@/certs.d"
`

const containerd2Config = `version = 4
root = "@D@/root"
state = "@D@/state"
disabled_plugins = ["io.containerd.nri.v1.nri"]
[plugins."io.containerd.server.v1.grpc"]
  address = "@D@/c.sock"
[plugins."io.containerd.server.v1.ttrpc"]
  address = "@D@/c.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "@D@/opt"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "native"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "@D@/certs.d"
[plugins."io.containerd.transfer.v1.local"]
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/amd64"
    snapshotter = "native"
`

// containerdBins are the containerd versions under test: Debian's 1.6 and
// 2.x from go install. CONTAINERD16 and CONTAINERD2 override the paths.
// A version that is missing skips (fails in CI) only the tests of that
// version: get says so.
type containerdBins struct {
	path    map[string]string
	missing map[string]string // version -> why, with the install command
}

// containerdBinaries finds the containerd versions; the tests need root.
func containerdBinaries(t *testing.T) containerdBins {
	t.Helper()
	if os.Geteuid() != 0 {
		missingContainerd(t, "containerd tests need root")
	}
	gopath, err := exec.Command("go", "env", "GOPATH").Output()
	require.NoError(t, err)
	b := containerdBins{path: map[string]string{
		"1.6": envOr("CONTAINERD16", "/usr/bin/containerd"),
		"2.x": envOr("CONTAINERD2", filepath.Join(strings.TrimSpace(string(gopath)), "bin", "containerd")),
	}, missing: map[string]string{}}
	install := map[string]string{
		"1.6": "apt-get install -y containerd",
		"2.x": "go install github.com/containerd/containerd/v2/cmd/containerd@v2.4.2",
	}
	for v, bin := range b.path {
		out, err := exec.Command(bin, "--version").Output()
		major := regexp.MustCompile(` v?(\d+)\.\d+\.`).FindStringSubmatch(string(out))
		if err != nil || major == nil || major[1] != v[:1] {
			b.missing[v] = fmt.Sprintf("containerd %s not found at %s (%v %q); install it with: %s", v, bin, err, out, install[v])
		}
	}
	return b
}

// get is the binary of version, or skips the test (fails it in CI) when
// that version is missing.
func (b containerdBins) get(t *testing.T, version string) string {
	t.Helper()
	if msg, ok := b.missing[version]; ok {
		missingContainerd(t, msg)
	}
	return b.path[version]
}

func missingContainerd(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// containerd is a running containerd with its own root, state and socket.
type containerd struct {
	dir  string
	is   runtime.ImageServiceClient
	stop func()
}

// Stop stops containerd (each one holds inotify instances, a limited
// resource) and removes its directory.
func (c *containerd) Stop() { c.stop() }

// startContainerdOn runs bin with a fresh root and state, reading registry
// hosts from hostsDir, which it leaves as it is. It returns containerd,
// its log and its config file.
func startContainerdOn(t *testing.T, bin, version, hostsDir string) (*containerd, *syncBuffer, string) {
	t.Helper()
	return startContainerdEdited(t, bin, version, hostsDir, nil)
}

// startContainerdEdited is startContainerdOn with the config template
// passed through edit first (when not nil).
func startContainerdEdited(t *testing.T, bin, version, hostsDir string, edit func(config string) string) (*containerd, *syncBuffer, string) {
	t.Helper()
	// Not t.TempDir(): the socket path must stay under 104 bytes.
	dir, err := os.MkdirTemp("", "ctd")
	require.NoError(t, err)
	tmpl := containerd2Config
	if version == "1.6" {
		tmpl = containerd16Config
	}
	if edit != nil {
		tmpl = edit(tmpl)
	}
	tmpl = strings.ReplaceAll(tmpl, `"@D@/certs.d"`, strconv.Quote(hostsDir))
	cfg := filepath.Join(dir, "config.toml")
	require.NoError(t, os.WriteFile(cfg, []byte(strings.ReplaceAll(tmpl, "@D@", dir)), 0o644))

	logs := &syncBuffer{}
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			if t.Failed() {
				t.Logf("containerd %s log:\n%s", version, logs.String())
			}
			os.RemoveAll(dir)
		})
	}
	t.Cleanup(stop)
	sock := filepath.Join(dir, "c.sock")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "containerd socket never appeared:\n%s", logs.String())
		time.Sleep(10 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	rs := runtime.NewRuntimeServiceClient(conn)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, err = rs.Version(ctx, &runtime.VersionRequest{}, grpc.WaitForReady(true))
		cancel()
		if err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "CRI not ready: %v\n%s", err, logs.String())
		time.Sleep(20 * time.Millisecond)
	}
	return &containerd{dir: dir, is: runtime.NewImageServiceClient(conn), stop: stop}, logs, cfg
}

// startContainerd runs bin with a fresh root and a hosts.toml for registry
// that names mirror first and server as the fallback.
func startContainerd(t *testing.T, bin, version, registry, mirror, server string) *containerd {
	t.Helper()
	certs := t.TempDir()
	hosts := filepath.Join(certs, registry)
	require.NoError(t, os.MkdirAll(hosts, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(hosts, "hosts.toml"), fmt.Appendf(nil,
		"server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", server, mirror), 0o644))
	c, _, _ := startContainerdOn(t, bin, version, certs)
	return c
}

// pull pulls ref over CRI within limit and returns the repo digest.
func (c *containerd) pull(t *testing.T, ref string, limit time.Duration) (string, time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	start := time.Now()
	_, err := c.is.PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: ref}})
	took := time.Since(start)
	if err != nil {
		return "", took, err
	}
	st, err := c.is.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: ref}})
	require.NoError(t, err)
	digests := st.GetImage().GetRepoDigests()
	require.Len(t, digests, 1)
	return digests[0], took, nil
}

// TestContainerdPullsThroughOutages: a real containerd, 1.6 and 2.x, pulls
// through lifeboat over CRI with the failing registry itself as the
// hosts.toml fallback. In every failure mode, a cached image pulls, and an
// uncached one fails (lifeboat answers it at once; what containerd then does
// with its broken fallback is containerd's).
func TestContainerdPullsThroughOutages(t *testing.T) {
	t.Parallel()
	bins := containerdBinaries(t)
	const registry = "upstream.test"
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(tlsSrv.Close)

	for _, version := range []string{"1.6", "2.x"} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			up := upstreamtest.Start(t)
			img := upstreamtest.RandomImage(t, 512<<10, 2)
			up.Push(t, "team/app:v1", img)
			up.Push(t, "team/app:uncached", upstreamtest.RandomImage(t, 64<<10, 1))
			up.RequireToken("", "") // a bearer token service, as Docker Hub has
			imgDigest, _ := img.Digest()
			wantRepoDigest := registry + "/team/app@" + imgDigest.String()

			dataDir := t.TempDir()
			cfgFile := filepath.Join(t.TempDir(), "lifeboat.yaml")
			// Misses are bounded tighter than the default 10s to keep the test short.
			require.NoError(t, os.WriteFile(cfgFile, []byte("timeouts:\n  request: 3s\n"), 0o644))
			start := func(url string) *lifeboat {
				return startLifeboat(t, dataDir, "--config", cfgFile, "--upstream", registry+"="+url, "--default-registry", registry)
			}

			// Warm lifeboat's cache with a pull through it.
			lb := start(up.URL)
			c := startContainerd(t, bins.get(t, version), version, registry, lb.URL, up.URL)
			got, took, err := c.pull(t, registry+"/team/app:v1", time.Minute)
			require.NoError(t, err)
			assert.Equal(t, wantRepoDigest, got)
			t.Logf("containerd %s: cold pull through lifeboat %s", version, took.Round(time.Millisecond))
			c.Stop()
			assert.Positive(t, countMetric(scrape(t, lb), `lifeboat_registry_requests_total{kind="blob",method="GET",result="miss"}`))
			lb.Stop(t)

			for _, mode := range []struct {
				name string
				mode upstreamtest.Mode
				url  string // lifeboat's upstream and containerd's fallback, when not the running upstream
			}{
				{name: "hang", mode: upstreamtest.Hang},
				{name: "stall-body", mode: upstreamtest.StallBody},
				{name: "500", mode: upstreamtest.Status500},
				{name: "502", mode: upstreamtest.Status502},
				{name: "503", mode: upstreamtest.Status503},
				{name: "504", mode: upstreamtest.Status504},
				{name: "429", mode: upstreamtest.Status429},
				{name: "token-down", mode: upstreamtest.TokenDown},
				{name: "token-hang", mode: upstreamtest.TokenHang},
				{name: "dns", url: "http://lifeboat-upstream.invalid:5000"},
				{name: "tls", url: tlsSrv.URL},
				{name: "refused", url: "http://127.0.0.1:1"},
				// Last: a slow upstream still delivers, so afterwards the
				// "uncached" image is cached.
				{name: "slow", mode: upstreamtest.Slow},
			} {
				url := up.URL
				if mode.url != "" {
					url = mode.url
				}
				up.SetMode(mode.mode)
				lb := start(url)

				start := time.Now()
				resp, _ := lb.get(t, t.Context(), http.MethodHead, "/v2/team/app/manifests/v1")
				head := time.Since(start)
				require.Equal(t, http.StatusOK, resp.StatusCode, "%s: cached tag HEAD", mode.name)

				c := startContainerd(t, bins.get(t, version), version, registry, lb.URL, url)
				got, first, err := c.pull(t, registry+"/team/app:v1", 2*time.Minute)
				require.NoError(t, err, "%s: a cached image pulls", mode.name)
				assert.Equal(t, wantRepoDigest, got, mode.name)

				// More failures open the breaker; then the same pull again.
				for range 3 {
					lb.get(t, t.Context(), http.MethodHead, "/v2/team/app/manifests/v1")
				}
				c2 := startContainerd(t, bins.get(t, version), version, registry, lb.URL, url)
				got, open, err := c2.pull(t, registry+"/team/app:v1", 2*time.Minute)
				require.NoError(t, err, "%s: a cached image pulls with the breaker open", mode.name)
				assert.Equal(t, wantRepoDigest, got, mode.name)

				// An uncached image: lifeboat answers at once; containerd then
				// tries its fallback, which is down too.
				errorsBefore := countMetric(scrape(t, lb), `lifeboat_registry_requests_total{kind="manifest",method="HEAD",result="error"}`)
				_, missTook, missErr := c2.pull(t, registry+"/team/app:uncached", 10*time.Second)
				if mode.mode != upstreamtest.Slow && mode.mode != upstreamtest.StallBody {
					assert.Error(t, missErr, "%s: an uncached image cannot be pulled", mode.name)
					assert.Greater(t, countMetric(scrape(t, lb), `lifeboat_registry_requests_total{kind="manifest",method="HEAD",result="error"}`), errorsBefore,
						"%s: lifeboat answered the uncached tag with an error", mode.name)
				}
				t.Logf("containerd %s, %-10s: cached tag HEAD %6s; cached pull %6s, with the breaker open %6s; uncached pull %s after %s",
					version, mode.name, head.Round(time.Millisecond), first.Round(time.Millisecond), open.Round(time.Millisecond),
					outcome(missErr), missTook.Round(time.Millisecond))
				c.Stop()
				c2.Stop()
				lb.Stop(t)
				up.SetMode(upstreamtest.OK)
			}
		})
	}
}

func outcome(err error) string {
	if err == nil {
		return "succeeded"
	}
	if strings.Contains(err.Error(), "DeadlineExceeded") {
		return "timed out (containerd waiting on its fallback)"
	}
	return "failed"
}

// countMetric returns the value of one sample line of a scrape, 0 if absent.
func countMetric(scrape, series string) float64 {
	for _, line := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// TestContainerdImagesArePinned: with --containerd-socket, the images
// containerd holds are pinned in lifeboat's cache: a cap that evicts
// everything else keeps them.
func TestContainerdImagesArePinned(t *testing.T) {
	t.Parallel()
	bins := containerdBinaries(t)
	up := upstreamtest.Start(t)
	used := upstreamtest.RandomImage(t, 256<<10, 1)
	up.Push(t, "team/used:v1", used)
	other := upstreamtest.RandomImage(t, 256<<10, 1)
	up.Push(t, "team/other:v1", other)

	// A lifeboat to pull through first, then containerd holds team/used.
	dataDir := t.TempDir()
	lb := startLifeboat(t, dataDir, "--upstream", upstreamName+"="+up.URL, "--default-registry", upstreamName)
	c := startContainerd(t, bins.get(t, "2.x"), "2.x", upstreamName, lb.URL, up.URL)
	_, _, err := c.pull(t, upstreamName+"/team/used:v1", time.Minute)
	require.NoError(t, err)
	pullCrane(t, lb, "team/other:v1") // cached, but containerd does not hold it
	lb.Stop(t)

	cfg := filepath.Join(t.TempDir(), "lifeboat.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("maxSize: 1\nminFreeDisk: 0\neviction:\n  interval: 100ms\n  keepRecent: 1ms\n"), 0o644))
	lb = startLifeboat(t, dataDir, "--config", cfg, "--upstream", upstreamName+"="+up.URL, "--default-registry", upstreamName,
		"--containerd-socket", filepath.Join(c.dir, "c.sock"))
	usedDigest, _ := used.Digest()
	otherDigest, _ := other.Digest()
	require.Eventually(t, func() bool {
		code, out := lifeboatCLI(t, "ls", "--data-dir", dataDir, "--admin", lb.AdminURL, "-o", "json")
		return code == 0 && !strings.Contains(out, otherDigest.String()) && strings.Contains(out, usedDigest.String())
	}, 20*time.Second, 100*time.Millisecond, "over the cap, the image containerd holds stays and the other goes")
	_, out := lifeboatCLI(t, "ls", "--data-dir", dataDir, "--admin", lb.AdminURL)
	assert.Contains(t, out, "yes", "pinned:\n%s", out)
}
