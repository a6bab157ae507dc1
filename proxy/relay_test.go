package proxy

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRelayServesFromMemoryWithBackpressure(t *testing.T) {
	t.Parallel()
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
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, f.push(ctx, big), context.DeadlineExceeded, "a slow reader holds the relay back")

	f.removeReader(r)
	assert.ErrorIs(t, f.push(t.Context(), []byte("x")), errNoReaders, "with nobody left the relay stops")
	f.release()
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
