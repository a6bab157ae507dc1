package proxy

import (
	"context"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRelayServesFromMemoryWithBackpressure: a reader gets the bytes on
// disk, then those in memory; a push past the relay's limit waits for the
// reader (in a bubble: until its context ends, however long that is).
func TestRelayServesFromMemoryWithBackpressure(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f, write := startedFill(t, 6)
		require.True(t, f.acquire())
		r := &fillReader{ctx: t.Context(), f: f}
		f.addReader(r)
		write([]byte("ab")) // on disk
		f.startRelay()
		require.NoError(t, f.push(t.Context(), []byte("cd")))

		got := make([]byte, 4)
		_, err := io.ReadFull(r, got)
		require.NoError(t, err)
		assert.Equal(t, "abcd", string(got), "disk first, then memory")

		// A push beyond the limit waits for the reader.
		big := make([]byte, relayLimit)
		require.NoError(t, f.push(t.Context(), big[:1]), "below the limit: no wait")
		const patience = time.Hour
		ctx, cancel := context.WithTimeout(t.Context(), patience)
		defer cancel()
		start := time.Now()
		assert.ErrorIs(t, f.push(ctx, big), context.DeadlineExceeded, "a slow reader holds the relay back")
		assert.Equal(t, patience, time.Since(start), "for as long as the pusher waits")

		f.removeReader(r)
		assert.ErrorIs(t, f.push(t.Context(), []byte("x")), errNoReaders, "with nobody left the relay stops")
		f.release()
	})
}

func TestNoNewReadersJoinARelay(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f, write := startedFill(t, 4)
	write([]byte("ab"))
	f.startRelay()
	require.True(t, f.acquire())
	e.p.metrics.fillWaiters.Inc() // follow counts the waiter out on failure
	_, _, err := e.p.follow(t.Context(), f, true)
	assert.ErrorIs(t, err, ErrDiskFull)
}
