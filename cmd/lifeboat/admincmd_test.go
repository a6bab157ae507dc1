package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseSizes(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"0": 0, "1048576": 1 << 20, "50GiB": 50 << 30, "500MB": 500e6, "1.5G": 3 << 29, "10 KiB": 10 << 10} {
		got, err := parseSize(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "lots", "-1", "5XB", "NaN", "Inf", "1e30GiB"} {
		_, err := parseSize(bad)
		assert.Error(t, err, bad)
	}
	f, err := parseDiskFloor("10%")
	require.NoError(t, err)
	assert.InDelta(t, 0.10, f.Fraction, 1e-9)
	f, err = parseDiskFloor("20GiB")
	require.NoError(t, err)
	assert.Equal(t, int64(20<<30), f.Bytes)
	_, err = parseDiskFloor("150%")
	assert.Error(t, err)
	_, err = parseDiskFloor("NaN%")
	assert.Error(t, err)
}

// seed makes a data dir holding one blob, and returns the dir and digest.
func seed(t *testing.T) (string, digest.Digest) {
	t.Helper()
	dir := t.TempDir()
	s, err := cache.Open(dir, cache.Options{})
	require.NoError(t, err)
	body := []byte("an orphan blob")
	d := digest.FromBytes(body)
	w, err := s.NewIngest(d, int64(len(body)))
	require.NoError(t, err)
	_, err = w.Write(body)
	require.NoError(t, err)
	require.NoError(t, w.Commit())
	require.NoError(t, s.Close())
	return dir, d
}

func TestAdminCommandsOnADataDir(t *testing.T) {
	t.Parallel()
	dir, d := seed(t)
	var out, errb bytes.Buffer
	require.Equal(t, 0, run(t.Context(), []string{"verify", "--data-dir", dir}, &out, &errb), errb.String())
	assert.Contains(t, out.String(), "checked 1 blobs")

	path := filepath.Join(dir, "blobs", "sha256", d.Encoded()[:2], d.Encoded())
	require.NoError(t, os.WriteFile(path, []byte("an orphan BLOB"), 0o644))
	out.Reset()
	assert.Equal(t, 3, run(t.Context(), []string{"verify", "--data-dir", dir, "-o", "json"}, &out, &errb), "damage exits 3")
	var rep cache.VerifyReport
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep))
	require.Len(t, rep.Damaged, 1)
	assert.False(t, rep.Damaged[0].Removed)
	assert.Equal(t, 3, run(t.Context(), []string{"verify", "--data-dir", dir, "--repair"}, &out, &errb))
	assert.Equal(t, 0, run(t.Context(), []string{"verify", "--data-dir", dir}, &out, &errb), "after repair nothing is damaged")

	dir, _ = seed(t)
	out.Reset()
	require.Equal(t, 0, run(t.Context(), []string{"gc", "--data-dir", dir, "--max-size", "1", "--dry-run"}, &out, &errb), errb.String())
	assert.Contains(t, out.String(), "would evict")
	out.Reset()
	require.Equal(t, 0, run(t.Context(), []string{"ls", "--data-dir", dir, "-o", "json"}, &out, &errb), errb.String())
	assert.JSONEq(t, "null", out.String(), "an orphan blob is no image")

	assert.Equal(t, 1, run(t.Context(), []string{"ls", "--data-dir", filepath.Join(dir, "missing")}, &out, &errb))
	assert.Equal(t, 1, run(t.Context(), []string{"ls", "-o", "yaml", "--data-dir", dir}, &out, &errb))
	assert.Equal(t, 1, run(t.Context(), []string{"prefetch", "--data-dir", dir}, &out, &errb), "prefetch needs a reference")
}

// TestAdminCLIExplains: --admin alone reaches a lifeboat, gc refuses limits
// a running lifeboat would ignore, and says why nothing was evicted.
func TestAdminCLIExplains(t *testing.T) {
	t.Parallel()
	admin := httptest.NewServer(adminHandler(http.NewServeMux(), nil))
	t.Cleanup(admin.Close)
	var out, errb bytes.Buffer
	assert.Equal(t, 1, run(t.Context(), []string{"gc", "--admin", admin.URL, "--max-size", "1MiB"}, &out, &errb))
	assert.Equal(t, "lifeboat gc: --max-size and --min-free-disk apply to a data directory no lifeboat holds; the lifeboat at --admin "+admin.URL+
		" evicts with its own limits (serve's --max-size and --min-free-disk): leave them out\n", errb.String())
	errb.Reset()
	assert.Equal(t, 1, run(t.Context(), []string{"ls", "--admin", "http://127.0.0.1:1"}, &out, &errb))
	assert.Contains(t, errb.String(), "lifeboat ls: no lifeboat answers on --admin http://127.0.0.1:1: ", "no --data-dir needed")
	assert.NotContains(t, errb.String(), "lifeboat-data")

	dir, _ := seed(t)
	out.Reset()
	require.Equal(t, 0, run(t.Context(), []string{"gc", "--data-dir", dir, "--dry-run"}, &out, &errb), errb.String())
	assert.Contains(t, out.String(), "nothing to evict: the cache is under its cap (--max-size) and the disk above its free-disk floor (--min-free-disk)")

	assert.Contains(t, nothingEvicted(gcJSON{Needed: 100, SizeBefore: 100, SizeAfter: 100}, 10*time.Minute, false),
		"100 B short: what is left is pinned (lifeboat ls), or there is nothing accessed before ")
	assert.Contains(t, nothingEvicted(gcJSON{Needed: 100, SizeBefore: 100, SizeAfter: 100}, 10*time.Minute, false), "(eviction.keepRecent 10m0s)")
	assert.Empty(t, nothingEvicted(gcJSON{Needed: 50, SizeBefore: 100, SizeAfter: 40, Removed: make([]cache.Evicted, 1)}, time.Minute, false))
}
