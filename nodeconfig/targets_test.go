package nodeconfig

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseTarget(t *testing.T) {
	t.Parallel()
	known := []Target{dockerIO, ghcrIO}
	for entry, want := range map[string]Target{
		"docker.io":                            dockerIO,
		"ghcr.io":                              ghcrIO,
		"registry.example.com":                 {Name: "registry.example.com", Server: "https://registry.example.com"},
		"localhost:5001=http://localhost:5001": {Name: "localhost:5001", Server: "http://localhost:5001"},
		"docker.io=https://mirror.gcr.io":      {Name: "docker.io", Server: "https://mirror.gcr.io"},
	} {
		got, err := ParseTarget(entry, known)
		require.NoError(t, err, entry)
		assert.Equal(t, want, got, entry)
	}

	for entry, want := range map[string]string{
		"":                           "empty registry name",
		"=https://x":                 "empty registry name",
		"docker.io/library":          `registry name "docker.io/library" must not contain '/'`,
		"../../etc":                  "must not contain '/'",
		`..\etc`:                     "must not contain '/'",
		"..":                         `registry name ".." is not a registry host`,
		"_default":                   "must be a registry host",
		"bad name":                   "must be a registry host",
		"r.example=registry.example": `server "registry.example" must be an http or https URL`,
		"r.example=https://u@r":      "must be an http or https URL",
		"r.example=http://%zz":       "server: ",
	} {
		_, err := ParseTarget(entry, known)
		require.Error(t, err, entry)
		assert.Contains(t, err.Error(), want, entry)
	}
}

func TestParseMirror(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"http://127.0.0.1:5000":  "http://127.0.0.1:5000",
		"http://127.0.0.1:5555/": "http://127.0.0.1:5555",
		"https://lifeboat.local": "https://lifeboat.local",
		"http://[::1]:5000//":    "http://[::1]:5000",
	} {
		got, err := ParseMirror(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}

	for in, want := range map[string]string{
		"127.0.0.1:5000":            "must be an http or https URL with a host, e.g. http://127.0.0.1:5000",
		"ftp://127.0.0.1:5000":      "must be an http or https URL with a host",
		"http://":                   "must be an http or https URL with a host",
		"http://127.0.0.1:5000/v2":  "must be scheme://host[:port] only",
		"http://127.0.0.1:5000/?a":  "must be scheme://host[:port] only",
		"http://u:p@127.0.0.1:5000": "must be scheme://host[:port] only",
	} {
		_, err := ParseMirror(in)
		require.Error(t, err, in)
		assert.Contains(t, err.Error(), want, in)
	}
}
