package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/maintenance"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAdminAPIRefusesRequestsWithoutItsHeader: a browser's cross-origin
// form POST (no custom header possible without a preflight) is refused;
// lifeboat's own client is not.
func TestAdminAPIRefusesRequestsWithoutItsHeader(t *testing.T) {
	t.Parallel()
	store, err := cache.Open(t.TempDir(), cache.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	srv := httptest.NewServer(adminHandler(http.NewServeMux(), maintenance.New(store, maintenance.Options{})))
	t.Cleanup(srv.Close)

	resp, err := http.Post(srv.URL+"/admin/gc", "text/plain", strings.NewReader("x"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, "a simple cross-origin POST")

	var rep gcJSON
	require.NoError(t, adminClient(srv.URL).callJSON(t.Context(), http.MethodPost, "/admin/gc?dry-run=true", &rep))
	assert.True(t, rep.DryRun)
}
