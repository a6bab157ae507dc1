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
// has an "upstream request" line saying how long upstream took; at info
// level there is none.
func TestDebugLineForEachRequest(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/":
		case "/v2/app/manifests/v1":
			time.Sleep(5 * time.Millisecond)
			w.Header().Set("Docker-Content-Digest", "sha256:"+strings.Repeat("0", 64))
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
		var out []map[string]any
		for line := range strings.Lines(buf.String()) {
			var l map[string]any
			require.NoError(t, json.Unmarshal([]byte(line), &l))
			if l["msg"] == "upstream request" {
				out = append(out, l)
			}
		}
		return out
	}

	assert.Empty(t, lines(slog.LevelInfo), "no upstream request line at info level")
	got := lines(slog.LevelDebug)
	var heads []map[string]any
	for _, l := range got {
		assert.Equal(t, "registry.test", l["registry"])
		if l["path"] != "/v2/" { // the ping, before the first request
			heads = append(heads, l)
		}
	}
	require.Len(t, heads, 2, "one line per HEAD: %v", got)
	assert.Equal(t, "HEAD", heads[0]["method"])
	assert.Equal(t, "/v2/app/manifests/v1", heads[0]["path"])
	assert.EqualValues(t, http.StatusOK, heads[0]["status"])
	assert.GreaterOrEqual(t, heads[0]["duration"], float64(5*time.Millisecond), "the duration is upstream's answer time")
	assert.Equal(t, "/v2/app/manifests/v2", heads[1]["path"])
	assert.EqualValues(t, http.StatusNotFound, heads[1]["status"])
}
