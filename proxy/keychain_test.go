package proxy

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/credentials"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func writeDockerConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

func dockerConfigKeychain(path string) (authn.Keychain, error) {
	return credentials.New(credentials.Options{DockerConfig: path})
}

func newProxyWithKeychain(t *testing.T, up *upstreamtest.Upstream, k authn.Keychain) *Proxy {
	t.Helper()
	store, err := cache.Open(t.TempDir(), cache.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	return newTestProxy(t, store, upstream.Config{Name: testRegistry, URL: up.URL, Timeouts: upstream.Timeouts{Request: 5 * time.Second}}, upstream.Options{Keychain: k}, nil)
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

	k, err := dockerConfigKeychain(writeDockerConfig(t, `{"auths":{"`+testRegistry+`":{"username":"alice","password":"s3cret"}}}`))
	require.NoError(t, err)
	assert.Equal(t, Miss, pullAll(t, newProxyWithKeychain(t, up, k), img, "v1"))

	k, err = dockerConfigKeychain(writeDockerConfig(t, `{"auths":{"`+testRegistry+`":{"username":"alice","password":"wrong"}}}`))
	require.NoError(t, err)
	_, err = newProxyWithKeychain(t, up, k).Manifest(t.Context(), testRegistry, "app", "v1")
	var ue *upstream.Error
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, 401, ue.Status, "refused credentials are passed on, not served stale: %v", err)
	assert.False(t, ue.Unavailable())
}
