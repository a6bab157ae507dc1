package credentials

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func writeDockerConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

// rotate replaces the file as kubelet updates a Secret volume: the new
// content appears at once, by a rename.
func rotate(t *testing.T, path, body string) {
	t.Helper()
	tmp := path + ".new"
	require.NoError(t, os.WriteFile(tmp, []byte(body), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func resolveRegistry(t *testing.T, k *Keychain, registry string) (authn.AuthConfig, error) {
	t.Helper()
	r, err := name.NewRegistry(registry)
	require.NoError(t, err)
	a, err := k.ResolveContext(t.Context(), r)
	if err != nil {
		return authn.AuthConfig{}, err
	}
	cfg, err := a.Authorization()
	require.NoError(t, err)
	return *cfg, nil
}

func TestDockerConfigAuths(t *testing.T) {
	t.Parallel()
	basic := base64.StdEncoding.EncodeToString([]byte("hub-user:hub-pass"))
	path := writeDockerConfig(t, `{"auths":{
		"https://index.docker.io/v1/":{"auth":"`+basic+`"},
		"ghcr.io":{"username":"gh","password":"ghp"},
		"http://localhost:5001/":{"username":"l","password":"lp"}
	}}`)
	k, err := New(Options{DockerConfig: path})
	require.NoError(t, err)
	for _, tc := range []struct{ registry, user, pass string }{
		{"docker.io", "hub-user", "hub-pass"},
		{"index.docker.io", "hub-user", "hub-pass"},
		{"ghcr.io", "gh", "ghp"},
		{"localhost:5001", "l", "lp"},
		{"quay.io", "", ""},
	} {
		got, err := resolveRegistry(t, k, tc.registry)
		require.NoError(t, err)
		assert.Equal(t, tc.user, got.Username, tc.registry)
		assert.Equal(t, tc.pass, got.Password, tc.registry)
	}
	_, err = New(Options{DockerConfig: writeDockerConfig(t, `{"auths":`)})
	assert.Error(t, err, "a broken config is an error, not anonymous")

	k, err = New(Options{DockerConfig: writeDockerConfig(t, `{"auths":{"docker.io":{"username":"short","password":"p"}}}`)})
	require.NoError(t, err)
	got, err := resolveRegistry(t, k, "docker.io")
	require.NoError(t, err)
	assert.Equal(t, "short", got.Username, "a pull secret may name Docker Hub docker.io")
}

// TestDockerConfigIsReadAgainWhenItChanges: a rotated file is used within
// CheckEvery, moves Generation, and a broken one keeps the previous content.
func TestDockerConfigIsReadAgainWhenItChanges(t *testing.T) {
	t.Parallel()
	clk := newClock()
	path := writeDockerConfig(t, `{"auths":{"registry.test":{"username":"alice","password":"old"}}}`)
	k, err := New(Options{DockerConfig: path, Now: clk.Now, CheckEvery: 10 * time.Second})
	require.NoError(t, err)
	gen := k.Generation()

	rotate(t, path, `{"auths":{"registry.test":{"username":"alice","password":"new"}}}`)
	got, err := resolveRegistry(t, k, "registry.test")
	require.NoError(t, err)
	assert.Equal(t, "old", got.Password, "not read again before CheckEvery")
	clk.advance(10 * time.Second)
	assert.NotEqual(t, gen, k.Generation(), "a changed file moves the generation")
	got, err = resolveRegistry(t, k, "registry.test")
	require.NoError(t, err)
	assert.Equal(t, "new", got.Password)

	gen = k.Generation()
	clk.advance(10 * time.Second)
	assert.Equal(t, gen, k.Generation(), "the same content again changes nothing")

	rotate(t, path, `{"auths":`)
	clk.advance(10 * time.Second)
	assert.Equal(t, gen, k.Generation())
	got, err = resolveRegistry(t, k, "registry.test")
	require.NoError(t, err)
	assert.Equal(t, "new", got.Password, "a broken file keeps the previous credentials")
}

// The helper tests set PATH: not parallel.

func TestDockerConfigCredentialHelpers(t *testing.T) {
	f := newFake(t, "docker-credential-fake")
	t.Setenv("PATH", f.dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("FAKE_STATE", f.state)
	f.set("mode", "ok")
	f.set("creds", "helped:secret")
	k, err := New(Options{DockerConfig: writeDockerConfig(t, `{
		"credHelpers":{"registry.test":"fake"},
		"credsStore":"fake",
		"auths":{"other.test":{"username":"file","password":"fp"}}}`)})
	require.NoError(t, err)

	got, err := resolveRegistry(t, k, "registry.test")
	require.NoError(t, err)
	assert.Equal(t, authn.AuthConfig{Username: "helped", Password: "secret"}, got)
	assert.Equal(t, []string{"docker-credential-fake get registry.test"}, f.calls())

	got, err = resolveRegistry(t, k, "docker.io")
	require.NoError(t, err)
	assert.Equal(t, "helped", got.Username, "credsStore for the rest")
	assert.Contains(t, f.calls(), "docker-credential-fake get https://index.docker.io/v1/", "Docker Hub under docker's key")

	f.set("mode", "notfound")
	got, err = resolveRegistry(t, k, "other.test")
	require.NoError(t, err)
	assert.Equal(t, "file", got.Username, "a helper without an entry falls back to auths")
	got, err = resolveRegistry(t, k, "quay.io")
	require.NoError(t, err)
	assert.Equal(t, authn.AuthConfig{}, got, "and then to anonymous")

	f.set("mode", "ok")
	f.set("creds", "<token>:identity")
	got, err = resolveRegistry(t, k, "registry.test")
	require.NoError(t, err)
	assert.Equal(t, authn.AuthConfig{IdentityToken: "identity"}, got, "docker's <token> username is an identity token")
}

func TestFailingCredentialHelper(t *testing.T) {
	f := newFake(t, "docker-credential-fake")
	t.Setenv("PATH", f.dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("FAKE_STATE", f.state)
	f.set("creds", "helped:secret")
	k, err := New(Options{Timeout: 2 * time.Second, DockerConfig: writeDockerConfig(t, `{"credHelpers":{"registry.test":"fake","gone.test":"missing"}}`)})
	require.NoError(t, err)
	for _, mode := range []string{"hang", "error"} {
		f.set("mode", mode)
		start := time.Now()
		_, err := resolveRegistry(t, k, "registry.test")
		var ce *callError
		require.ErrorAs(t, err, &ce, mode)
		assert.Less(t, time.Since(start), 5*time.Second, "%s: the timeout bounds the helper", mode)
		assert.NotContains(t, err.Error(), "secret")
	}
	_, err = resolveRegistry(t, k, "gone.test")
	assert.ErrorContains(t, err, "docker-credential-missing", "a helper not on PATH is an error, not anonymous")
}
