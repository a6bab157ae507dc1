package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// countingRegistry is a registry on loopback, named localhost:<port> (a
// name /etc/hosts resolves), that counts the requests it gets by client:
// lifeboat (its User-Agent) or anyone else (the containers/image client
// pulling from the registry itself).
type countingRegistry struct {
	srv  *httptest.Server
	Name string // localhost:<port>
	mu   sync.Mutex
	hits map[string]int // "lifeboat" or "direct"
}

func startCountingRegistry(t *testing.T) *countingRegistry {
	t.Helper()
	r := &countingRegistry{hits: map[string]int{}}
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.Contains(req.URL.Path, "/manifests/") || strings.Contains(req.URL.Path, "/blobs/") {
			who := "direct"
			if strings.HasPrefix(req.UserAgent(), "lifeboat/") {
				who = "lifeboat"
			}
			r.mu.Lock()
			r.hits[who]++
			r.mu.Unlock()
		}
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Stop)
	r.Name = "localhost:" + r.srv.URL[strings.LastIndex(r.srv.URL, ":")+1:]
	return r
}

func (r *countingRegistry) Stop() { r.srv.CloseClientConnections(); r.srv.Close() }

// counts is the manifest and blob requests so far, from lifeboat and direct.
func (r *countingRegistry) counts() (fromLifeboat, direct int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hits["lifeboat"], r.hits["direct"]
}

// reset forgets what was counted (the test's own pushes).
func (r *countingRegistry) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.hits)
}

func (r *countingRegistry) push(t *testing.T, repoTag string, img v1.Image) {
	t.Helper()
	ref, err := name.ParseReference(strings.TrimPrefix(r.srv.URL, "http://")+"/"+repoTag, name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Write(ref, img, remote.WithContext(t.Context())))
}

// gate is lifeboat's way to the registry: a reverse proxy that the test
// stops to take the upstream away from lifeboat while the registry itself
// stays up for the runtime's fallback.
func startGate(t *testing.T, to string) *httptest.Server {
	t.Helper()
	u, err := url.Parse(to)
	require.NoError(t, err)
	gate := httptest.NewServer(httputil.NewSingleHostReverseProxy(u))
	t.Cleanup(gate.Close)
	return gate
}

// configureCRIO runs `lifeboat configure-crio` and returns its stdout.
func configureCRIO(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), binary, append([]string{"configure-crio", "--reload=false", "--registries-conf="}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "configure-crio %v:\n%s%s", args, stdout.String(), stderr.String())
	assert.Empty(t, stderr.String(), "no warnings")
	return stdout.String()
}

// skopeoPull copies ref with skopeo, configured by registriesConf alone
// (no --tls-verify: registries.conf's insecure = true is what allows plain
// HTTP), and returns the manifest digest and how long it took.
func skopeoPull(t *testing.T, skopeo, registriesConf, ref string) (string, time.Duration, error) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	start := time.Now()
	out, err := exec.CommandContext(t.Context(), skopeo, "--registries-conf", registriesConf,
		"copy", "--retry-times=0", "docker://"+ref, "dir:"+dst).CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return string(out), took, err
	}
	raw, err := os.ReadFile(filepath.Join(dst, "manifest.json"))
	require.NoError(t, err)
	sum := sha256.Sum256(raw)
	return "sha256:" + hex.EncodeToString(sum[:]), took, nil
}

// TestCRIOMirrorWithSkopeoAndPodman: containers/image, the library CRI-O
// pulls with, reads the drop-in `lifeboat configure-crio` writes and pulls
// through lifeboat's path prefix (the registry is localhost:<port>, so the
// prefix is localhost_<port>): the registry sees only lifeboat; with the
// upstream gone, cached images still pull; a miss falls back to the
// registry itself, and fails fast once that is down too.
func TestCRIOMirrorWithSkopeoAndPodman(t *testing.T) {
	t.Parallel()
	skopeo := requireTool(t, "skopeo", "apt-get install -y skopeo")
	reg := startCountingRegistry(t)
	img := upstreamtest.RandomImage(t, 256<<10, 2)
	for _, repo := range []string{"team/app:v1", "team/other:v1", "team/third:v1", "team/direct:v1"} {
		reg.push(t, repo, img)
	}
	reg.reset()
	want, err := img.Digest()
	require.NoError(t, err)
	confDir := filepath.Join(t.TempDir(), "registries.conf.d")
	dropIn := filepath.Join(confDir, "50-lifeboat.conf")
	registry := "--registries=" + reg.Name + "=http://" + reg.Name

	// A dead lifeboat never blocks a pull: nothing listens at the mirror,
	// containers/image goes to the registry itself.
	dead := freeAddr(t)
	assert.Equal(t, "wrote "+dropIn+"\n", configureCRIO(t, "--conf-dir", confDir, "--mirror", "http://"+dead, registry))
	got, took, err := skopeoPull(t, skopeo, dropIn, reg.Name+"/team/direct:v1")
	require.NoError(t, err, got)
	assert.Equal(t, want.String(), got)
	assert.Less(t, took, 10*time.Second)
	fromLifeboat, direct := reg.counts()
	assert.Zero(t, fromLifeboat)
	assert.Positive(t, direct)
	t.Logf("lifeboat dead: pulled from the registry itself in %s (%d requests there)", took, direct)

	gate := startGate(t, reg.srv.URL)
	lb := startLifeboat(t, t.TempDir(), "--upstream", reg.Name+"="+gate.URL, "--default-registry", reg.Name)
	assert.Equal(t, "updated "+dropIn+"\n", configureCRIO(t, "--conf-dir", confDir, "--mirror", lb.URL, registry))
	drop, err := os.ReadFile(dropIn)
	require.NoError(t, err)
	assert.Contains(t, string(drop), `location = "`+lb.Host+`/localhost_`)
	t.Logf("%s:\n%s", dropIn, drop)

	// Cold: through lifeboat only.
	_, directBefore := reg.counts()
	got, _, err = skopeoPull(t, skopeo, dropIn, reg.Name+"/team/app:v1")
	require.NoError(t, err, got)
	assert.Equal(t, want.String(), got)
	fromLifeboat, direct = reg.counts()
	assert.Positive(t, fromLifeboat, "lifeboat fetched it")
	assert.Equal(t, directBefore, direct, "skopeo never asked the registry itself")
	assert.Contains(t, lb.logs.String(), `"path":"/v2/localhost_`, "the registry came as a path prefix")
	t.Logf("cold pull: the registry answered %d requests from lifeboat, %d from skopeo", fromLifeboat, direct-directBefore)
	podmanPull(t, dropIn, reg.Name+"/team/app:v1", want.String())

	// The upstream gone for lifeboat: cached pulls are served by lifeboat.
	gate.Close()
	fromLifeboat, direct = reg.counts()
	got, _, err = skopeoPull(t, skopeo, dropIn, reg.Name+"/team/app:v1")
	require.NoError(t, err, got)
	assert.Equal(t, want.String(), got)
	got, _, err = skopeoPull(t, skopeo, dropIn, reg.Name+"/team/app@"+want.String())
	require.NoError(t, err, got)
	podmanPull(t, dropIn, reg.Name+"/team/app:v1", want.String())
	l2, d2 := reg.counts()
	assert.Equal(t, [2]int{fromLifeboat, direct}, [2]int{l2, d2}, "served from lifeboat's cache: the registry saw nothing")

	// A miss: lifeboat fails fast, containers/image pulls from the registry itself.
	got, took, err = skopeoPull(t, skopeo, dropIn, reg.Name+"/team/other:v1")
	require.NoError(t, err, got)
	assert.Equal(t, want.String(), got)
	_, d3 := reg.counts()
	assert.Greater(t, d3, d2, "the fallback went to the registry itself")
	assert.Less(t, took, 10*time.Second)
	t.Logf("miss with the upstream gone: %s, through the fallback (%d requests at the registry from skopeo)", took, d3-d2)

	// And when the registry is down too, the pull fails fast, having tried both.
	reg.Stop()
	out, took, err := skopeoPull(t, skopeo, dropIn, reg.Name+"/team/third:v1")
	require.Error(t, err)
	assert.Contains(t, out, "Mirrors also failed")
	assert.Contains(t, out, lb.Host+"/localhost_")
	assert.Less(t, took, 10*time.Second)
	t.Logf("miss with lifeboat's upstream and the registry down: failed in %s", took)

	// --remove takes the drop-in away.
	assert.Equal(t, "removed "+dropIn+" and its directory\n", configureCRIO(t, "--conf-dir", confDir, "--remove"))
	assert.NoDirExists(t, confDir)
}

// podmanPull pulls ref with podman (root, vfs storage of the test's own),
// configured by registriesConf alone, and checks the image's digest. It
// skips (fails in CI) without podman.
func podmanPull(t *testing.T, registriesConf, ref, want string) {
	t.Helper()
	podman := requireTool(t, "podman", "apt-get install -y podman")
	// podman refuses a runroot longer than 50 characters: t.TempDir's are.
	store, err := os.MkdirTemp("", "lb-podman-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(store) })
	base := []string{"--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "run"),
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"}
	cmd := exec.CommandContext(t.Context(), podman, append(base, "pull", "--quiet", ref)...)
	cmd.Env = append(os.Environ(), "CONTAINERS_REGISTRIES_CONF="+registriesConf)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "podman pull: %s", out)
	inspect := exec.CommandContext(t.Context(), podman, append(base, "image", "inspect", "--format", "{{.Digest}}", ref)...)
	inspect.Env = cmd.Env
	out, err = inspect.CombinedOutput()
	require.NoError(t, err, "podman image inspect: %s", out)
	assert.Equal(t, want, strings.TrimSpace(string(out)))
}
