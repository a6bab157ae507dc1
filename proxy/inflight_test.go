package proxy

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startedFill is a fill of size bytes whose data arrives through write.
func startedFill(t *testing.T, size int64) (*fill, func([]byte)) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ingest")
	w, err := os.Create(path)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	r, err := os.Open(path)
	require.NoError(t, err)
	f := newFill(digest.FromString("x"), testRegistry, "app")
	f.start(size, r)
	return f, func(p []byte) {
		_, err := w.Write(p)
		require.NoError(t, err)
		f.progress(int64(len(p)))
	}
}

func TestFillReaderHoldsBackTheLastByteUntilVerified(t *testing.T) {
	t.Parallel()
	// In a bubble: "the read has not returned" is checked once every
	// goroutine is blocked (synctest.Wait), not after a guess of 50 ms
	// that a busy machine could make pass for the wrong reason.
	synctest.Test(t, func(t *testing.T) {
		f, write := startedFill(t, 8)
		require.True(t, f.acquire())
		r := &fillReader{ctx: t.Context(), f: f}
		write([]byte("12345678"))

		buf := make([]byte, 16)
		n, err := r.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, "1234567", string(buf[:n]), "everything but the last byte is readable before verification")

		got := make(chan error, 1)
		go func() { _, err := r.Read(buf); got <- err }()
		synctest.Wait()
		select {
		case err := <-got:
			t.Fatalf("read returned %v before the fill finished", err)
		default:
		}
		f.finish(ErrDigestMismatch)
		assert.ErrorIs(t, <-got, ErrDigestMismatch, "a failed verification fails the reader; the last byte is never sent")
		r.f.release()
	})
}

func TestFillReaderSeeksAndWaitsForRanges(t *testing.T) {
	t.Parallel()
	f, write := startedFill(t, 10)
	require.True(t, f.acquire())
	r := &fillReader{ctx: t.Context(), f: f}
	end, err := r.Seek(0, io.SeekEnd)
	require.NoError(t, err)
	assert.Equal(t, int64(10), end)
	_, err = r.Seek(4, io.SeekStart)
	require.NoError(t, err)

	done := make(chan []byte)
	go func() {
		b := make([]byte, 3)
		_, err := io.ReadFull(r, b)
		assert.NoError(t, err)
		done <- b
	}()
	write([]byte("0123"))
	write([]byte("4567"))
	assert.Equal(t, []byte("456"), <-done, "a range is served once the fill reaches it")
	write([]byte("89"))
	f.finish(nil)
	rest, err := io.ReadAll(r)
	require.NoError(t, err)
	assert.Equal(t, "789", string(rest))
	r.f.release()
}

func TestFillReaderStopsWaitingWhenItsClientLeaves(t *testing.T) {
	t.Parallel()
	f, _ := startedFill(t, 10)
	require.True(t, f.acquire())
	ctx, cancel := contextWithCancel(t)
	r := &fillReader{ctx: ctx, f: f}
	cancel()
	_, err := r.Read(make([]byte, 4))
	assert.True(t, errors.Is(err, ctx.Err()))
	r.f.release()
	f.finish(nil)
	_, err = f.file.ReadAt(make([]byte, 1), 0)
	assert.Error(t, err, "the file is closed once the fill and every reader are done")
}

func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithCancel(t.Context())
}
