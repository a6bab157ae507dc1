package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeLifeboat answers /v2/, /readyz and /metrics as serve does, with the
// circuit of registry open or not.
func fakeLifeboat(t *testing.T, registry string, circuitOpen int) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("{}")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "# TYPE lifeboat_upstream_circuit_open gauge\nlifeboat_upstream_circuit_open{registry=%q} %d\nlifeboat_cache_min_free_disk_bytes 1\n", registry, circuitOpen)
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// doctorNode is a node's containerd files in a temporary directory,
// configured for lifeboat at mirror, and the doctor flags that check them.
func doctorNode(t *testing.T, mirror, registry string) (dir string, args []string) {
	t.Helper()
	dir = t.TempDir()
	hosts := filepath.Join(dir, "certs.d")
	config := filepath.Join(dir, "config.toml")
	require.NoError(t, os.WriteFile(config, fmt.Appendf(nil, "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = %q\n", hosts), 0o644))
	mustConfigure(t, hosts, "--mirror", mirror, "--registries", registry)
	return dir, []string{
		"--runtime", "containerd", "--hosts-dir", hosts, "--containerd-config", config, "--containerd-socket", "",
		"--mirror", mirror, "--registries", registry, "--data-dir", dir, "--containerd-root", "", "--kubelet-root", "",
	}
}

func doctorRun(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), append([]string{"doctor"}, args...), &stdout, &stderr)
	return code, stdout.String() + stderr.String()
}

func TestDoctor(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) }))
	t.Cleanup(upstream.Close)
	registry := "registry.test=" + upstream.URL

	t.Run("healthy", func(t *testing.T) {
		t.Parallel()
		lb := fakeLifeboat(t, "registry.test", 0)
		_, args := doctorNode(t, lb.URL, registry)
		code, out := doctorRun(t, append(args, "--metrics", lb.URL)...)
		assert.Equal(t, 0, code, out)
		for _, want := range []string{
			"OK   containerd config: ", "OK   registry.test hosts.toml: ", "is lifeboat's, " + lb.URL + " first",
			"WARN containerd loaded: not checked (no --containerd-socket)",
			"OK   lifeboat registry: " + lb.URL + "/v2/ answers", "OK   lifeboat ready: ",
			"OK   upstream registry.test: " + upstream.URL + "/v2/ answers 401 Unauthorized; lifeboat's circuit closed",
			"OK   disk " + "",
		} {
			assert.Contains(t, out, want)
		}
		assert.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 7, "one line per check:\n%s", out)
	})

	t.Run("bypassed", func(t *testing.T) {
		t.Parallel()
		lb := fakeLifeboat(t, "registry.test", 1)
		dir, args := doctorNode(t, lb.URL, registry)
		// config_path elsewhere, the hosts.toml gone: containerd bypasses lifeboat.
		require.NoError(t, os.WriteFile(filepath.Join(dir, "config.toml"), []byte("version = 3\n"), 0o644))
		require.NoError(t, os.Remove(filepath.Join(dir, "certs.d", "registry.test", "hosts.toml")))
		code, out := doctorRun(t, append(args, "--metrics", lb.URL)...)
		assert.Equal(t, 1, code, out)
		assert.Contains(t, out, `FAIL containerd config: `+filepath.Join(dir, "config.toml")+`: config_path is not set in [plugins."io.containerd.cri.v1.images".registry]`)
		assert.Contains(t, out, "FAIL registry.test hosts.toml: ")
		assert.Contains(t, out, "containerd pulls registry.test without lifeboat; fix: run lifeboat configure-containerd")
		assert.Contains(t, out, "WARN upstream registry.test: "+upstream.URL+"/v2/ answers 401 Unauthorized; lifeboat's circuit breaker is open")
	})

	t.Run("lifeboat down", func(t *testing.T) {
		t.Parallel()
		lb := fakeLifeboat(t, "registry.test", 0)
		_, args := doctorNode(t, lb.URL, registry)
		lb.Close()
		code, out := doctorRun(t, append(args, "--metrics", lb.URL)...)
		assert.Equal(t, 1, code, out)
		assert.Contains(t, out, "FAIL lifeboat registry: "+lb.URL+"/v2/: ")
		assert.Contains(t, out, "the runtime falls back to each registry, with no cache; fix: ")
		assert.Contains(t, out, "FAIL lifeboat ready: ")
	})

	t.Run("no runtime", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		code, out := doctorRun(t, "--host-root", dir, "--metrics", "", "--mirror", "http://127.0.0.1:1", "--registries", registry)
		assert.Equal(t, 1, code, out)
		assert.Contains(t, out, "FAIL runtime: neither containerd")
	})
}

func TestDoctorFlags(t *testing.T) {
	t.Parallel()
	code, out := doctorRun(t, "--runtime", "docker")
	assert.Equal(t, 1, code)
	assert.Equal(t, "lifeboat doctor: --runtime \"docker\": must be containerd, crio or auto\n", out)
	code, out = doctorRun(t, "--help")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "Usage: lifeboat doctor")
}
