package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNodeChecker(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hosts := filepath.Join(dir, "certs.d")
	config := filepath.Join(dir, "config.toml")
	require.NoError(t, os.WriteFile(config, []byte("version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \""+hosts+"\"\n"), 0o644))
	cfg := serveConfig{Upstreams: []upstreamConfig{{Name: "registry.test", URL: "https://registry.test"}},
		NodeCheck: nodeCheckConfig{ContainerdHostsDir: hosts, ContainerdConfig: config}}
	var logs bytes.Buffer
	nc := newNodeChecker(cfg, "0.0.0.0:5000", prometheus.NewRegistry(), slog.New(slog.NewTextHandler(&logs, nil)))
	require.NotNil(t, nc)
	assert.Equal(t, "http://127.0.0.1:5000", nc.mirror)

	nc.check()
	assert.Equal(t, 0.0, testutil.ToFloat64(nc.ok), "no hosts.toml yet: containerd bypasses lifeboat")
	assert.Contains(t, logs.String(), "containerd pulls registry.test without lifeboat")
	assert.Contains(t, logs.String(), "lifeboat doctor explains")

	mustConfigure(t, hosts, "--registries", "registry.test=https://registry.test")
	logs.Reset()
	nc.check()
	assert.Equal(t, 1.0, testutil.ToFloat64(nc.ok))
	assert.Contains(t, logs.String(), "status=OK check=\"registry.test hosts.toml\"")
	logs.Reset()
	nc.check()
	assert.Empty(t, logs.String(), "logged only when something changed")

	assert.Nil(t, newNodeChecker(serveConfig{}, "127.0.0.1:5000", nil, slog.Default()), "nothing to check")
}
