package upstream

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"

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
