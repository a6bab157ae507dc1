package integration

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// buildFakeCred builds testdata/fakecred into dir under each of names (a
// provider plugin's name, or docker-credential-<helper>).
func buildFakeCred(t *testing.T, dir string, names ...string) {
	t.Helper()
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, names[0]), "./testdata/fakecred").CombinedOutput()
	require.NoError(t, err, "building the fake plugin: %s", out)
	for _, n := range names[1:] {
		require.NoError(t, os.Symlink(filepath.Join(dir, names[0]), filepath.Join(dir, n)))
	}
}

// fakeState is the directory the fake plugin or helper reads its behaviour
// from and logs its runs to.
type fakeState string

func (s fakeState) set(t *testing.T, kv ...string) {
	t.Helper()
	for i := 0; i+1 < len(kv); i += 2 {
		require.NoError(t, os.WriteFile(filepath.Join(string(s), kv[i]), []byte(kv[i+1]), 0o600))
	}
}

func (s fakeState) runs() int {
	b, _ := os.ReadFile(filepath.Join(string(s), "calls"))
	return strings.Count(string(b), "\n")
}

// replaceFile swaps a file's content in one rename, as kubelet updates a
// Secret volume.
func replaceFile(t *testing.T, path, body string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path+".new", []byte(body), 0o600))
	require.NoError(t, os.Rename(path+".new", path))
}

const providerConfig = `apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: fake-provider
    matchImages: ["` + upstreamName + `"]
    defaultCacheDuration: 1m
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    env:
      - name: FAKE_STATE
        value: "@STATE@"
`

// TestCredentialProviderPlugin: lifeboat pulls a private registry with the
// credentials a kubelet credential provider plugin gives (built here, as
// the node's ECR, GCP or ACR plugin would be installed): the plugin runs once
// per cache period, not per request; a plugin that hangs or fails leaves
// cached tags served stale and makes a miss fail fast.
func TestCredentialProviderPlugin(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	for _, r := range []string{"a", "b", "c", "d", "e"} {
		up.Push(t, "team/"+r+":v1", upstreamtest.RandomImage(t, 8<<10, 1))
	}
	up.RequireToken("node", "token-1")
	bin := t.TempDir()
	buildFakeCred(t, bin, "fake-provider")
	st := fakeState(t.TempDir())
	const period = 3 * time.Second
	st.set(t, "mode", "ok", "creds", "node:token-1", "key", "Registry", "duration", period.String(), "match", upstreamName)
	pc := filepath.Join(t.TempDir(), "providers.yaml")
	require.NoError(t, os.WriteFile(pc, []byte(strings.ReplaceAll(providerConfig, "@STATE@", string(st))), 0o600))
	cfg := filepath.Join(t.TempDir(), "lifeboat.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("credentialTimeout: 2s\n"), 0o644))
	dataDir := t.TempDir()
	start := func() *lifeboat {
		return startLifeboat(t, dataDir, "--config", cfg, "--upstream", upstreamName+"="+up.URL, "--default-registry", upstreamName,
			"--image-credential-provider-config", pc, "--image-credential-provider-bin-dir", bin)
	}
	lb := start()

	began := time.Now()
	for _, r := range []string{"a", "b", "c"} {
		pullCrane(t, lb, "team/"+r+":v1")
	}
	within := time.Since(began)
	require.Less(t, within, period, "the three pulls fit in one cache period")
	assert.Equal(t, 1, st.runs(), "three repositories, one cache period: one plugin run")
	// The plugin ran during the pulls: a whole period after they ended,
	// its answer has expired whenever it was given.
	time.Sleep(period + 100*time.Millisecond)
	pullCrane(t, lb, "team/d:v1")
	assert.Equal(t, 2, st.runs(), "a new period: one more run")
	assert.Contains(t, scrape(t, lb), `lifeboat_credentials_calls_total{kind="plugin",name="fake-provider",result="ok"} 2`)
	t.Logf("plugin runs: 1 for 3 repositories pulled in %s (cache period %s), 2 after 4 repositories over %s",
		within.Round(time.Millisecond), period, time.Since(began).Round(time.Millisecond))
	lb.Stop(t)

	for _, mode := range []string{"hang", "error"} {
		st.set(t, "mode", mode)
		lb := start() // no transport in memory: the plugin is asked again
		began := time.Now()
		resp, _ := lb.get(t, t.Context(), http.MethodHead, "/v2/team/a/manifests/v1")
		staleTook := time.Since(began)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: a cached tag is served", mode)
		assert.Equal(t, "stale", resp.Header.Get("X-Lifeboat-Cache"), mode)
		assert.Less(t, staleTook, 3*time.Second, "%s: within the revalidation budget", mode)

		began = time.Now()
		resp, body := lb.get(t, t.Context(), http.MethodGet, "/v2/team/e/manifests/v1")
		missTook := time.Since(began)
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "%s: a miss fails: %s", mode, body)
		assert.Contains(t, string(body), "auth-unavailable", mode)
		assert.Less(t, missTook, 4*time.Second, "%s: within the plugin's timeout", mode)
		began = time.Now()
		resp, _ = lb.get(t, t.Context(), http.MethodGet, "/v2/team/e/manifests/v1")
		againTook := time.Since(began)
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, mode)
		assert.Less(t, againTook, time.Second, "%s: the next miss does not wait for the plugin again", mode)
		assert.NotContains(t, lb.logs.String(), "token-1", "no credential in the logs")
		t.Logf("plugin %s: cached tag served stale in %s; miss failed in %s, the next in %s", mode,
			staleTook.Round(time.Millisecond), missTook.Round(time.Millisecond), againTook.Round(time.Millisecond))
		lb.Stop(t)
	}
}

// TestDockerCredentialHelperAndRotation: credentials from a
// docker-credential-* helper on PATH; then the Secret holding the docker
// config is rotated (new credentials upstream, new file): lifeboat uses
// the new ones without a restart.
func TestDockerCredentialHelperAndRotation(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	for _, r := range []string{"a", "b"} {
		up.Push(t, "team/"+r+":v1", upstreamtest.RandomImage(t, 8<<10, 1))
	}
	up.RequireToken("alice", "pw-1")
	bin := t.TempDir()
	buildFakeCred(t, bin, "docker-credential-fake")
	st := fakeState(t.TempDir())
	st.set(t, "mode", "ok", "creds", "alice:pw-1")
	dockerConfig := filepath.Join(t.TempDir(), "config.json")
	require.NoError(t, os.WriteFile(dockerConfig, []byte(`{"credHelpers":{"`+upstreamName+`":"fake"}}`), 0o600))
	lb := startLifeboatEnv(t, t.TempDir(), []string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"), "FAKE_STATE=" + string(st)},
		"--docker-config", dockerConfig, "--upstream", upstreamName+"="+up.URL, "--default-registry", upstreamName)
	pullCrane(t, lb, "team/a:v1")
	assert.Positive(t, st.runs(), "the helper supplied the credentials")
	assert.Contains(t, scrape(t, lb), `lifeboat_credentials_calls_total{kind="helper",name="fake",result="ok"}`)

	up.RequireToken("bob", "pw-2")
	replaceFile(t, dockerConfig, `{"auths":{"`+upstreamName+`":{"username":"bob","password":"pw-2"}}}`)
	rotated := time.Now()
	require.Eventually(t, func() bool { return pullQuietly(lb, "team/b:v1") == nil }, time.Minute, 250*time.Millisecond,
		"the rotated config is used within a minute, without a restart")
	took := time.Since(rotated)
	assert.Contains(t, scrape(t, lb), `lifeboat_credentials_docker_config_reloads_total{result="ok"} 1`)
	assert.NotContains(t, lb.logs.String(), "pw-2", "no credential in the logs")
	t.Logf("rotated docker config in use after %s", took.Round(time.Millisecond))
}
