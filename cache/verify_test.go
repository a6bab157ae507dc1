package cache

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestVerifyStopsWhenCtxEnds(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	d := ingest(t, s, []byte("never checked"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r, err := s.Verify(ctx, true)
	require.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, r.Checked)
	assert.True(t, stored(s, d))
}

// cancelOnRead ends a context at its first read.
type cancelOnRead struct {
	r      io.Reader
	cancel context.CancelFunc
	reads  int
}

func (c *cancelOnRead) Read(p []byte) (int, error) {
	c.reads++
	c.cancel()
	return c.r.Read(p)
}

func TestHashingABigFileStopsWhenCtxEnds(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte("a big layer "), 1<<20)
	ctx, cancel := context.WithCancel(t.Context())
	src := &cancelOnRead{r: bytes.NewReader(big), cancel: cancel}
	_, err := hashMatches(ctx, src, digest.FromBytes(big))
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 1, src.reads, "hashing stops at the next read, not at the end of the file")
}

// TestVerifyRepairReportsAFailedRemoval: a blob whose path became a
// non-empty directory cannot be removed; Verify says so instead of
// reporting it removed.
func TestVerifyRepairReportsAFailedRemoval(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	d := ingest(t, s, []byte("a blob whose file becomes a directory"))
	p := s.blobPath(d)
	require.NoError(t, os.Remove(p))
	require.NoError(t, os.MkdirAll(filepath.Join(p, "something"), 0o755))

	r, err := s.Verify(t.Context(), true)
	require.ErrorIs(t, err, syscall.ENOTEMPTY, "the failed removal is returned")
	require.Len(t, r.Damaged, 1)
	assert.Equal(t, d, r.Damaged[0].Digest)
	assert.Equal(t, "not a regular file", r.Damaged[0].Problem)
	assert.False(t, r.Damaged[0].Removed, "a removal that failed is not reported as done")
	assert.True(t, stored(s, d), "the row stays with what is left of its file")
	_, _, err = s.OpenBlob(d)
	assert.ErrorIs(t, err, ErrNotFound, "and it is never served")
}

// TestRecheckLeavesABlobCommittedAgain replays, one step at a time, a
// verify that saw a blob just before an eviction removed it and a commit
// brought it back.
func TestRecheckLeavesABlobCommittedAgain(t *testing.T) {
	t.Parallel()
	evictAll := EvictOptions{MaxSize: 1, KeepAccessedAfter: time.Now().Add(time.Hour)}

	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		c := &clock{t: time.Unix(1_000_000, 0)} // a commit again has the same stored time
		s, err := Open(t.TempDir(), Options{Now: c.now})
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		body := []byte("listed, evicted, committed again")
		d := ingest(t, s, body)
		rows, err := s.blobRows()
		require.NoError(t, err)
		require.Len(t, rows, 1)
		seen := rows[0]

		_, err = s.Evict(t.Context(), evictAll)
		require.NoError(t, err)
		problem, err := s.check(t.Context(), &seen)
		require.NoError(t, err)
		require.Equal(t, "file missing", problem)
		confirmed, removed, err := s.recheck(seen, true)
		require.NoError(t, err)
		assert.False(t, confirmed || removed, "evicted is not damaged")

		ingest(t, s, body)
		confirmed, removed, err = s.recheck(seen, true)
		require.NoError(t, err)
		assert.False(t, confirmed || removed, "its file is back")
		assert.True(t, stored(s, d))
		assert.FileExists(t, s.blobPath(d))
	})

	t.Run("damaged file", func(t *testing.T) {
		t.Parallel()
		s := openStore(t, t.TempDir())
		body := []byte("damaged, evicted, committed again")
		d := ingest(t, s, body)
		require.NoError(t, os.WriteFile(s.blobPath(d), bytes.ToUpper(body), 0o644))
		rows, err := s.blobRows()
		require.NoError(t, err)
		seen := rows[0]
		problem, err := s.check(t.Context(), &seen)
		require.NoError(t, err)
		require.Equal(t, "bytes do not match the digest", problem)

		_, err = s.Evict(t.Context(), evictAll)
		require.NoError(t, err)
		ingest(t, s, body)
		confirmed, removed, err := s.recheck(seen, true)
		require.NoError(t, err)
		assert.False(t, confirmed || removed, "the good copy committed since is not the damaged file")
		got, err := os.ReadFile(s.blobPath(d))
		require.NoError(t, err)
		assert.Equal(t, body, got)
	})
}

// TestVerifyRacingEvictionAndCommits runs verify with repair, evictions of
// everything and commits of images sharing layers all at once: verify may
// report no damage (there is none), and must lose no blob.
func TestVerifyRacingEvictionAndCommits(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	stop := make(chan struct{})
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			_, err := s.Evict(t.Context(), EvictOptions{MaxSize: 600, KeepAccessedAfter: time.Now().Add(time.Hour)})
			assert.NoError(t, err)
			if stopped() {
				return
			}
		}
	})
	verified := 0
	wg.Go(func() {
		for {
			r, err := s.Verify(t.Context(), true)
			assert.NoError(t, err)
			assert.Empty(t, r.Damaged, "no false damage, nothing removed")
			verified++
			if stopped() {
				return
			}
		}
	})
	for i := range 200 {
		putImage(t, s, fmt.Sprintf("v%d", i%7), "shared layer", fmt.Sprintf("layer %d", i%13))
	}
	close(stop)
	wg.Wait()
	assert.Positive(t, verified)

	r, err := s.Verify(t.Context(), false)
	require.NoError(t, err)
	assert.Empty(t, r.Damaged, "every indexed blob still has its file, with its bytes")
}
