package credentials

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clock is a settable Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

const providerConfig = `apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: fake-provider
    matchImages: ["*.registry.test", "registry.test:5000/team"]
    defaultCacheDuration: 10m
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    args: [--region, eu-west-1]
    env:
      - name: FAKE_STATE
        value: @STATE@
`

// pluginKeychain is a keychain over the fake plugin, answering as set.
func pluginKeychain(t *testing.T, opts Options) (*Keychain, *fake) {
	t.Helper()
	f := newFake(t, "fake-provider")
	f.set("mode", "ok")
	f.set("creds", "node:token-1")
	f.set("key", "Registry")
	f.set("match", "*.registry.test")
	cfg := filepath.Join(t.TempDir(), "providers.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(strings.ReplaceAll(providerConfig, "@STATE@", f.state)), 0o600))
	opts.ProviderConfig, opts.ProviderBinDir = cfg, f.dir
	k, err := New(opts)
	require.NoError(t, err)
	return k, f
}

func resolve(t *testing.T, k *Keychain, repo string) (authn.AuthConfig, error) {
	t.Helper()
	r, err := name.NewRepository(repo)
	require.NoError(t, err)
	a, err := k.ResolveContext(t.Context(), r)
	if err != nil {
		return authn.AuthConfig{}, err
	}
	cfg, err := a.Authorization()
	require.NoError(t, err)
	return *cfg, nil
}

func TestPluginSpeaksKubeletsProtocol(t *testing.T) {
	t.Parallel()
	k, f := pluginKeychain(t, Options{})
	got, err := resolve(t, k, "eu.registry.test/team/app")
	require.NoError(t, err)
	assert.Equal(t, authn.AuthConfig{Username: "node", Password: "token-1"}, got)
	calls := f.calls()
	require.Len(t, calls, 1)
	assert.Contains(t, calls[0], "--region eu-west-1 ", "the config's args")
	assert.Contains(t, calls[0], `"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":"eu.registry.test/team/app"`)

	got, err = resolve(t, k, "quay.io/team/app")
	require.NoError(t, err)
	assert.Equal(t, authn.AuthConfig{}, got, "an image the plugin's matchImages do not match is anonymous")
	assert.Len(t, f.calls(), 1, "and the plugin is not run for it")
}

// TestPluginRunsOncePerCachePeriod: the answer is cached under the key type
// the plugin chose, for the duration it said (else the config's default);
// a duration of 0 is not cached.
func TestPluginRunsOncePerCachePeriod(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		key, duration string
		ttl           time.Duration
		// runs after resolving, within the period: app and web of one
		// registry, then app of another registry.
		runs []int
	}{
		{key: "Registry", duration: "1m", ttl: time.Minute, runs: []int{1, 1, 2}},
		{key: "Image", duration: "1m", ttl: time.Minute, runs: []int{1, 2, 3}},
		{key: "Global", duration: "1m", ttl: time.Minute, runs: []int{1, 1, 1}},
		{key: "Registry", ttl: 10 * time.Minute, runs: []int{1, 1, 2}}, // the config's defaultCacheDuration
		{key: "Global", duration: "0s", runs: []int{1, 2, 3}},
	} {
		t.Run(tc.key+"-"+tc.duration, func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			k, f := pluginKeychain(t, Options{Now: clk.Now})
			f.set("key", tc.key)
			f.set("duration", tc.duration)
			for i, repo := range []string{"a.registry.test/app", "a.registry.test/web", "b.registry.test/app"} {
				got, err := resolve(t, k, repo)
				require.NoError(t, err)
				assert.Equal(t, "node", got.Username)
				assert.Len(t, f.calls(), tc.runs[i], "after %s", repo)
			}
			if tc.ttl == 0 {
				return
			}
			clk.advance(tc.ttl - time.Second)
			_, err := resolve(t, k, "a.registry.test/app")
			require.NoError(t, err)
			assert.Len(t, f.calls(), tc.runs[2], "still within the cache period")
			clk.advance(time.Second)
			_, err = resolve(t, k, "a.registry.test/app")
			require.NoError(t, err)
			assert.Len(t, f.calls(), tc.runs[2]+1, "once it is over")
		})
	}
}

// TestFailingPluginFailsFast: a plugin that hangs is stopped at the timeout,
// and one that errs or answers garbage fails; both are errors (the upstream
// client's auth-unavailable), and for a while the plugin is not run again,
// so a burst of pulls does not each wait.
func TestFailingPluginFailsFast(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"hang", "error", "garbage"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			reg := prometheus.NewRegistry()
			k, f := pluginKeychain(t, Options{Now: clk.Now, Timeout: 2 * time.Second, Registerer: reg})
			f.set("mode", mode)
			start := time.Now()
			_, err := resolve(t, k, "a.registry.test/app")
			var ce *callError
			require.ErrorAs(t, err, &ce)
			assert.Less(t, time.Since(start), 5*time.Second, "the timeout bounds the run")
			assert.NotContains(t, err.Error(), "token-1")
			if mode == "error" {
				assert.Contains(t, err.Error(), "metadata service unreachable", "the plugin's stderr says why")
			}
			result := map[string]string{"hang": "timeout", "error": "error", "garbage": "error"}[mode]
			assert.InDelta(t, 1, testutil.ToFloat64(k.plugins[0].metrics.calls.WithLabelValues("plugin", "fake-provider", result)), 0)

			start = time.Now()
			_, err = resolve(t, k, "a.registry.test/web")
			require.ErrorAs(t, err, &ce)
			// Not run again: one call, and (for the hanging plugin) no second
			// wait for the timeout. A bound of the timeout itself, not a
			// wall-clock guess a busy machine could overrun.
			assert.Less(t, time.Since(start), 2*time.Second, "a failed plugin is not run again at once")
			assert.Len(t, f.calls(), 1, "a failed plugin is not run again at once")

			f.set("mode", "ok")
			clk.advance(failureBackoff)
			got, err := resolve(t, k, "a.registry.test/app")
			require.NoError(t, err)
			assert.Equal(t, "node", got.Username, "after the backoff it is run again")
		})
	}
}

// TestPluginNewCredentialsMoveTheGeneration: a plugin that answers other
// credentials than it had cached moves Generation, so that transports made
// with the old ones are not reused.
func TestPluginNewCredentialsMoveTheGeneration(t *testing.T) {
	t.Parallel()
	clk := newClock()
	k, f := pluginKeychain(t, Options{Now: clk.Now})
	f.set("duration", "1m")
	_, err := resolve(t, k, "a.registry.test/app")
	require.NoError(t, err)
	gen := k.Generation()
	clk.advance(time.Minute)
	_, err = resolve(t, k, "a.registry.test/app")
	require.NoError(t, err)
	assert.Equal(t, gen, k.Generation(), "the same credentials again")
	f.set("creds", "node:token-2")
	clk.advance(time.Minute)
	got, err := resolve(t, k, "a.registry.test/app")
	require.NoError(t, err)
	assert.Equal(t, "token-2", got.Password)
	assert.NotEqual(t, gen, k.Generation())
}

func TestProviderConfigIsCheckedAsKubeletChecks(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(bin, "ecr-credential-provider"), []byte("#!/bin/sh\n"), 0o755))
	const head = "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n"
	const good = "  - name: ecr-credential-provider\n    matchImages: ['*.dkr.ecr.*.amazonaws.com']\n    defaultCacheDuration: 12h\n    apiVersion: credentialprovider.kubelet.k8s.io/v1\n"
	for _, tc := range []struct{ name, config, want string }{
		{"v1", head + good, ""},
		{"v1beta1 as JSON", `{"apiVersion":"kubelet.config.k8s.io/v1beta1","kind":"CredentialProviderConfig","providers":[{"name":"ecr-credential-provider","matchImages":["*.dkr.ecr.*.amazonaws.com"],"defaultCacheDuration":"12h","apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1"}]}`, ""},
		{"wrong kind", "apiVersion: kubelet.config.k8s.io/v1\nkind: KubeletConfiguration\n", "want kind CredentialProviderConfig"},
		{"unknown field", head + good + "    matchImage: [x]\n", `unknown field "matchImage"`},
		{"no matchImages", head + "  - name: ecr-credential-provider\n    defaultCacheDuration: 1h\n    apiVersion: credentialprovider.kubelet.k8s.io/v1\n", "matchImages is required"},
		{"no defaultCacheDuration", head + "  - name: ecr-credential-provider\n    matchImages: [x.io]\n    apiVersion: credentialprovider.kubelet.k8s.io/v1\n", "defaultCacheDuration is required"},
		{"bad apiVersion", head + "  - name: ecr-credential-provider\n    matchImages: [x.io]\n    defaultCacheDuration: 1h\n    apiVersion: v1\n", `apiVersion "v1"`},
		{"path in name", head + "  - name: ../ecr-credential-provider\n    matchImages: [x.io]\n    defaultCacheDuration: 1h\n    apiVersion: credentialprovider.kubelet.k8s.io/v1\n", "must be a file name"},
		{"missing binary", head + "  - name: gcp-credential-provider\n    matchImages: [x.io]\n    defaultCacheDuration: 1h\n    apiVersion: credentialprovider.kubelet.k8s.io/v1\n", "plugin gcp-credential-provider not found"},
		{"twice", head + good + good, "given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := filepath.Join(t.TempDir(), "c.yaml")
			require.NoError(t, os.WriteFile(cfg, []byte(tc.config), 0o600))
			_, err := New(Options{ProviderConfig: cfg, ProviderBinDir: bin})
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, tc.want)
		})
	}
}

// TestServiceAccountTokenProvidersAreSkipped: a provider that needs a pod's
// service account token cannot serve a node-level cache: skipped, not fatal.
func TestServiceAccountTokenProvidersAreSkipped(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: pod-identity
    matchImages: ["*.azurecr.io"]
    defaultCacheDuration: 1h
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    tokenAttributes:
      serviceAccountTokenAudience: api://AzureADTokenExchange
      requireServiceAccount: true
      cacheType: ServiceAccount
`), 0o600))
	k, err := New(Options{ProviderConfig: cfg, ProviderBinDir: bin})
	require.NoError(t, err)
	assert.Empty(t, k.plugins)
}

func TestURLsMatchAsKubelet(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern, image string
		want           bool
	}{
		{"*.dkr.ecr.*.amazonaws.com", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app", true},
		{"*.dkr.ecr.*.amazonaws.com", "123456789012.dkr.ecr.eu-west-1.amazonaws.com.cn/app", false},
		{"*.azurecr.io", "myreg.azurecr.io/app", true},
		{"*.azurecr.io", "azurecr.io/app", false},
		{"*-docker.pkg.dev", "europe-west1-docker.pkg.dev/p/r/app", true},
		{"gcr.io", "gcr.io/project/app", true},
		{"gcr.io", "eu.gcr.io/project/app", false},
		{"registry.test:5000", "registry.test/app", false},
		{"registry.test:5000/team", "registry.test:5000/team/app", true},
		{"registry.test:5000/team", "registry.test:5000/other/app", false},
	} {
		assert.Equal(t, tc.want, urlsMatch(tc.pattern, tc.image), "%s ~ %s", tc.pattern, tc.image)
	}
}
