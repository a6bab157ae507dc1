package upstream

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDebugLineForEachRequest: at debug level every request sent upstream
// (the ping and token exchange aside) has an "upstream call" line saying
// how long upstream took, with its status or, for a request that got no
// answer, its error clipped; at info level there is none.
func TestDebugLineForEachRequest(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/":
		case "/v2/app/manifests/v1":
			time.Sleep(5 * time.Millisecond)
			w.Header().Set("Docker-Content-Digest", "sha256:"+strings.Repeat("0", 64))
		case "/v2/app/manifests/cut":
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close() // no answer at all
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	lines := func(level slog.Level) []map[string]any {
		var buf bytes.Buffer
		log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level}))
		c, err := New(Config{Name: "registry.test", URL: srv.URL}, Options{Logger: log})
		require.NoError(t, err)
		_, err = c.HeadManifest(t.Context(), "app", "v1")
		require.NoError(t, err)
		_, err = c.HeadManifest(t.Context(), "app", "v2")
		require.Error(t, err)
		_, err = c.HeadManifest(t.Context(), "app", "cut")
		require.Error(t, err)
		_, err = c.HeadManifest(t.Context(), "app", strings.Repeat("x", 1000))
		require.Error(t, err)
		var out []map[string]any
		for line := range strings.Lines(buf.String()) {
			var l map[string]any
			require.NoError(t, json.Unmarshal([]byte(line), &l))
			if l["msg"] == "upstream call" {
				out = append(out, l)
			}
		}
		return out
	}

	assert.Empty(t, lines(slog.LevelInfo), "no upstream call line at info level")
	got := lines(slog.LevelDebug)
	for _, l := range got {
		assert.Equal(t, "registry.test", l["registry"])
		assert.Equal(t, "HEAD", l["method"], "no line for the ping: %v", l)
	}
	require.GreaterOrEqual(t, len(got), 4, "a line per HEAD: %v", got)
	assert.Equal(t, "/v2/app/manifests/v1", got[0]["path"])
	assert.EqualValues(t, http.StatusOK, got[0]["status"])
	assert.GreaterOrEqual(t, got[0]["duration"], float64(5*time.Millisecond), "the duration is upstream's answer time")
	assert.Equal(t, "/v2/app/manifests/v2", got[1]["path"])
	assert.EqualValues(t, http.StatusNotFound, got[1]["status"])
	// The cut connection: go-containerregistry may retry it, each try its
	// own request under one line; the line has the error, no status.
	assert.Equal(t, "/v2/app/manifests/cut", got[2]["path"])
	assert.NotContains(t, got[2], "status")
	assert.NotEmpty(t, got[2]["error"])
	last := got[len(got)-1]
	assert.Less(t, len(last["path"].(string)), 300, "the path is clipped")
	assert.Contains(t, last["path"], "…(1018 bytes)")
}
