package proxy

import (
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestUpstreamDiesMidFill: every client is cut (at once when upstream
// drops the connection, after exactly the stall limit when it stalls),
// nothing is stored, and the next request retries.
func TestUpstreamDiesMidFill(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode upstreamtest.Mode
		cut  time.Duration // when the clients' streams end
	}{
		{upstreamtest.DieMidBody, 0},
		{upstreamtest.StallBody, outageTimeouts.BodyStall},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				e := newBubbleEnv(t)
				e.reopenAt(t, e.up.URL, upstream.BreakerConfig{Failures: 100})
				d, size := e.pushLayer(t, 2<<20)
				e.up.SetMode(tc.mode)

				start := time.Now()
				var wg sync.WaitGroup
				for range 4 {
					wg.Go(func() {
						b, err := e.p.Blob(t.Context(), testRegistry, "app", d, true)
						if err != nil {
							return // the fill failed before this client joined
						}
						defer b.Content.Close()
						body, err := io.ReadAll(b.Content)
						assert.Error(t, err, "a client of a failed fill gets an error")
						assert.Less(t, int64(len(body)), size, "and never the whole body")
						assert.Equal(t, tc.cut, time.Since(start), "the stream ended")
					})
				}
				wg.Wait()
				_, err := e.store.Stat(d)
				assert.ErrorIs(t, err, cache.ErrNotFound, "nothing is stored")
				assert.Equal(t, 1.0, testutil.ToFloat64(e.p.metrics.fills.WithLabelValues(testRegistry, "error")))

				e.up.SetMode(upstreamtest.OK)
				_, src := readBlob(t, e.p, d)
				assert.Equal(t, Miss, src, "the next request retries")
			})
		})
	}
}

// TestLateJoinerReadsFromDiskThenFollows: a client arriving mid-download
// gets the whole blob from one upstream fetch.
func TestLateJoinerReadsFromDiskThenFollows(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newBubbleEnv(t)
		d, _ := e.pushLayer(t, 1<<20)
		e.up.SetMode(upstreamtest.Slow) // ~256 KiB/s: the download takes a while

		first, err := e.p.Blob(t.Context(), testRegistry, "app", d, true)
		require.NoError(t, err)
		defer first.Content.Close()
		buf := make([]byte, 64<<10)
		_, err = io.ReadFull(first.Content, buf)
		require.NoError(t, err)

		late, err := e.p.Blob(t.Context(), testRegistry, "app", d, true)
		require.NoError(t, err)
		assert.Equal(t, Miss, late.Source)
		start := time.Now()
		body, err := io.ReadAll(late.Content)
		late.Content.Close()
		require.NoError(t, err)
		assert.Equal(t, d, digest.FromBytes(body))
		assert.Equal(t, 1, e.up.Requests("GET blobs"), "the late joiner shares the download")
		t.Logf("late joiner finished after %s", time.Since(start))
	})
}

func TestConcurrentFillsPerRegistryAreBounded(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newBubbleEnv(t)
		e.p.mirrors[testRegistry].fillSlots = newFillSlots(2, e.p.metrics.fillsQueued)
		img := upstreamtest.RandomImage(t, 128<<10, 5)
		e.up.Push(t, "app:v1", img)
		layers, _ := img.Layers()
		e.up.SetMode(upstreamtest.Slow)

		var wg sync.WaitGroup
		for _, l := range layers {
			ld, _ := l.Digest()
			wg.Go(func() { readBlob(t, e.p, ld) })
		}
		wg.Wait()
		assert.Equal(t, 5, e.up.Requests("GET blobs"))
		assert.Equal(t, 2, e.up.Peak("GET blobs"), "no more than the limit of downloads at once")
		assert.Equal(t, 5.0, testutil.ToFloat64(e.p.metrics.fills.WithLabelValues(testRegistry, "ok")), "every fill finished")
	})
}

func TestCloseStopsDownloadsAndKeepsNothingPartial(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newBubbleEnv(t)
		d, _ := e.pushLayer(t, 1<<20)
		e.up.SetMode(upstreamtest.Slow)

		b, err := e.p.Blob(t.Context(), testRegistry, "app", d, true)
		require.NoError(t, err)
		defer b.Content.Close()
		e.p.Close()
		_, err = io.ReadAll(b.Content)
		assert.Error(t, err, "the client's stream is cut")
		_, err = e.store.Stat(d)
		assert.ErrorIs(t, err, cache.ErrNotFound)
		entries, err := os.ReadDir(filepath.Join(e.dir, "ingest"))
		require.NoError(t, err)
		assert.Empty(t, entries, "nothing partial is left behind")
	})
}
