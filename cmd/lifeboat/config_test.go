package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConfigPrecedence(t *testing.T) {
	// Not parallel: sets environment variables.
	file := filepath.Join(t.TempDir(), "lifeboat.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`
listen: 127.0.0.1:6000
dataDir: /from/file
logLevel: debug
tagTTL: 30s
maxStaleness: 24h
breaker:
  failures: 5
timeouts:
  revalidate: 2s
upstreams:
  - name: docker.io
    url: https://registry-1.docker.io
    timeouts:
      dial: 1s
  - name: localhost:5001
    url: http://127.0.0.1:5001
    tagTTL: 0s
    serveStaleOnNotFound: true
    breaker:
      backoff: 10s
`), 0o644))
	t.Setenv("LIFEBOAT_DATA_DIR", "/from/env")
	t.Setenv("LIFEBOAT_LOG_LEVEL", "warn")
	cfg, err := loadServeConfig([]string{"--config", file, "--log-level", "error"}, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:6000", cfg.Listen, "file beats default")
	assert.Equal(t, "/from/env", cfg.DataDir, "env beats file")
	assert.Equal(t, "error", cfg.LogLevel, "flag beats env")
	assert.Equal(t, "127.0.0.1:9090", cfg.MetricsListen, "default when nothing sets it")

	ups := cfg.proxyUpstreams()
	require.Len(t, ups, 2)
	assert.Equal(t, time.Second, ups[0].Timeouts.Dial, "per-registry timeout")
	assert.Equal(t, 2*time.Second, ups[0].Timeouts.Revalidate, "top-level timeout inherited")
	assert.Equal(t, 30*time.Second, ups[0].TagTTL, "top-level tag TTL inherited")
	assert.Equal(t, time.Duration(0), ups[1].TagTTL, "per-registry tag TTL wins")
	assert.Equal(t, 24*time.Hour, ups[1].MaxStaleness)
	assert.False(t, ups[0].ServeStaleOnNotFound)
	assert.True(t, ups[1].ServeStaleOnNotFound)
	assert.Equal(t, 5, ups[1].Breaker.Failures, "breaker settings inherit field by field")
	assert.Equal(t, 10*time.Second, ups[1].Breaker.Backoff)
	assert.Equal(t, time.Duration(0), ups[0].Breaker.Backoff, "zero means the proxy's default")
}

func TestUpstreamFlagsReplaceDefaults(t *testing.T) {
	t.Setenv("LIFEBOAT_UPSTREAM", "")
	cfg, err := loadServeConfig(nil, &bytes.Buffer{})
	require.Error(t, err, "an empty LIFEBOAT_UPSTREAM is a mistake, not the default set")

	os.Unsetenv("LIFEBOAT_UPSTREAM")
	cfg, err = loadServeConfig(nil, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Len(t, cfg.Upstreams, len(defaultUpstreams))

	cfg, err = loadServeConfig([]string{"--upstream", "a.test=http://127.0.0.1:1", "--upstream", "b.test=https://b.test", "--default-registry", "b.test"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Len(t, cfg.Upstreams, 2)
	assert.Equal(t, "a.test", cfg.Upstreams[0].Name)
	assert.Equal(t, "https://b.test", cfg.Upstreams[1].URL)
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	typo := filepath.Join(dir, "typo.yaml")
	require.NoError(t, os.WriteFile(typo, []byte("listn: 127.0.0.1:1\n"), 0o644))
	prefetchOther := filepath.Join(dir, "prefetch-other.yaml")
	require.NoError(t, os.WriteFile(prefetchOther, []byte("prefetch:\n  - ref: quay.io/prometheus/node-exporter:v1\nupstreams:\n  - {name: docker.io, url: https://registry-1.docker.io}\n"), 0o644))
	prefetchBad := filepath.Join(dir, "prefetch-bad.yaml")
	require.NoError(t, os.WriteFile(prefetchBad, []byte("prefetch:\n  - ref: \"Not A Reference\"\n"), 0o644))
	badDur := filepath.Join(dir, "dur.yaml")
	require.NoError(t, os.WriteFile(badDur, []byte("tagTTL: 30\n"), 0o644))
	for name, args := range map[string][]string{
		"unknown key":          {"--config", typo},
		"duration not string":  {"--config", badDur},
		"missing file":         {"--config", filepath.Join(dir, "nope.yaml")},
		"bad listen":           {"--listen", "nonsense"},
		"bad level":            {"--log-level", "loud"},
		"bad format":           {"--log-format", "xml"},
		"upstream not k=v":     {"--upstream", "docker.io"},
		"default not mirrored": {"--upstream", "a.test=http://x", "--default-registry", "docker.io"},
		"duplicate upstream":   {"--upstream", "a.test=http://x", "--upstream", "a.test=http://y", "--default-registry", "a.test"},
		"stray argument":       {"extra"},
		"bad tag ttl":          {"--tag-ttl", "soon"},
	} {
		_, err := loadServeConfig(args, &bytes.Buffer{})
		assert.Error(t, err, name)
	}
}

func TestCLIExitCodes(t *testing.T) {
	var out, errb bytes.Buffer
	assert.Equal(t, 2, run(t.Context(), nil, &out, &errb))
	assert.Equal(t, 2, run(t.Context(), []string{"frobnicate"}, &out, &errb))
	assert.Contains(t, errb.String(), `unknown command "frobnicate"`)
	assert.Equal(t, 0, run(t.Context(), []string{"version"}, &out, &errb))
	assert.Contains(t, out.String(), "lifeboat ")
	errb.Reset()
	assert.Equal(t, 0, run(t.Context(), []string{"serve", "--help"}, &out, &errb))
	assert.Contains(t, errb.String(), "LIFEBOAT_LISTEN")
	errb.Reset()
	assert.Equal(t, 1, run(t.Context(), []string{"serve", "--log-format", "xml"}, &out, &errb))
	assert.Contains(t, errb.String(), "--log-format")
}
