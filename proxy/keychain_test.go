package proxy

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func writeDockerConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

func TestDockerConfigKeychain(t *testing.T) {
	t.Parallel()
	basic := base64.StdEncoding.EncodeToString([]byte("hub-user:hub-pass"))
	path := writeDockerConfig(t, `{"auths":{
		"https://index.docker.io/v1/":{"auth":"`+basic+`"},
		"ghcr.io":{"username":"gh","password":"ghp"},
		"http://localhost:5001/":{"username":"l","password":"lp"}
	}}`)
	k, err := DockerConfigKeychain(path)
	require.NoError(t, err)
	for _, tc := range []struct{ registry, user, pass string }{
		{"docker.io", "hub-user", "hub-pass"},
		{"index.docker.io", "hub-user", "hub-pass"},
		{"ghcr.io", "gh", "ghp"},
		{"localhost:5001", "l", "lp"},
		{"quay.io", "", ""},
	} {
		r, err := name.NewRegistry(tc.registry)
		require.NoError(t, err)
		a, err := k.Resolve(r)
		require.NoError(t, err)
		cfg, err := a.Authorization()
		require.NoError(t, err)
		assert.Equal(t, tc.user, cfg.Username, tc.registry)
		assert.Equal(t, tc.pass, cfg.Password, tc.registry)
	}
	_, err = DockerConfigKeychain(writeDockerConfig(t, `{"auths":`))
	assert.Error(t, err, "a broken config is an error, not anonymous")
}

func newProxyWithKeychain(t *testing.T, up *upstreamtest.Upstream, k authn.Keychain) *Proxy {
	t.Helper()
	store, err := cache.Open(t.TempDir(), cache.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	p, err := New(store, Options{
		Upstreams: []UpstreamConfig{{Name: testRegistry, URL: up.URL, Timeouts: Timeouts{Request: 5 * time.Second}}},
		Keychain:  k,
	})
	require.NoError(t, err)
	return p
}

func TestAnonymousBearerToken(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	img := upstreamtest.RandomImage(t, 1024, 1)
	up.Push(t, "app:v1", img)
	up.RequireToken("", "")
	p := newProxyWithKeychain(t, up, nil)
	assert.Equal(t, Miss, pullAll(t, p, img, "v1"))
	assert.Positive(t, up.Requests("GET token"), "the token service was used")
}

func TestCredentialsFromDockerConfig(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	img := upstreamtest.RandomImage(t, 1024, 1)
	up.Push(t, "app:v1", img)
	up.RequireToken("alice", "s3cret")

	k, err := DockerConfigKeychain(writeDockerConfig(t, `{"auths":{"`+testRegistry+`":{"username":"alice","password":"s3cret"}}}`))
	require.NoError(t, err)
	assert.Equal(t, Miss, pullAll(t, newProxyWithKeychain(t, up, k), img, "v1"))

	k, err = DockerConfigKeychain(writeDockerConfig(t, `{"auths":{"`+testRegistry+`":{"username":"alice","password":"wrong"}}}`))
	require.NoError(t, err)
	_, err = newProxyWithKeychain(t, up, k).Manifest(t.Context(), testRegistry, "app", "v1")
	var ue *UpstreamError
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, 401, ue.Status, "refused credentials are passed on, not served stale: %v", err)
	assert.False(t, ue.Unavailable())
}
