package logwriter

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recorder is a destination that keeps each write apart, in the order the
// writes began, and, when gated, holds every write until the test lets one
// through.
type recorder struct {
	gate chan struct{} // nil: no gate

	mu     sync.Mutex
	writes []string
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.writes = append(r.writes, string(p))
	r.mu.Unlock()
	if r.gate != nil {
		<-r.gate
	}
	return len(p), nil
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.writes...)
}

// held starts a Writer with the given bound over a gated destination and
// has it write first, which the destination holds until the test lets it
// through. Inside a synctest bubble.
func held(limit int, first string) (*recorder, *Writer) {
	dst := &recorder{gate: make(chan struct{})}
	w := New(dst, limit)
	_, _ = w.Write([]byte(first))
	synctest.Wait() // the goroutine is in dst.Write with first
	return dst, w
}

// TestEveryLineOnceInOrder: lines from many goroutines all arrive, whole,
// each goroutine's in the order it wrote them.
func TestEveryLineOnceInOrder(t *testing.T) {
	var dst recorder
	w := New(&dst, 1<<10) // small: writers meet the bound
	const writers, lines = 16, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				n, err := fmt.Fprintf(w, "%d %d |%s\n", g, i, strings.Repeat("x", i%100))
				assert.NoError(t, err)
				assert.Positive(t, n)
			}
		})
	}
	wg.Wait()
	require.NoError(t, w.Close())

	all := strings.Join(dst.got(), "")
	next := make([]int, writers)
	for line := range strings.Lines(all) {
		var g, i int
		var pad string
		_, err := fmt.Sscanf(line, "%d %d %s\n", &g, &i, &pad)
		require.NoError(t, err, "a torn line: %q", line)
		require.Equal(t, next[g], i, "writer %d's lines out of order", g)
		require.Equal(t, "|"+strings.Repeat("x", i%100), pad, "line %d of writer %d", i, g)
		next[g]++
	}
	for g, n := range next {
		assert.Equal(t, lines, n, "lines of writer %d", g)
	}
	assert.Less(t, len(dst.got()), writers*lines, "some lines shared a write")
}

// TestALoneLineIsWritten: a line is written without a later Write or
// Close to push it.
func TestALoneLineIsWritten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var dst recorder
		w := New(&dst, DefaultLimit)
		_, _ = w.Write([]byte("alone\n"))
		synctest.Wait()
		assert.Equal(t, []string{"alone\n"}, dst.got())
		_, _ = w.Write([]byte("later\n"))
		synctest.Wait()
		assert.Equal(t, []string{"alone\n", "later\n"}, dst.got())
		require.NoError(t, w.Close())
	})
}

// TestLinesWaitingForAWriteLeaveTogether: while the destination holds a
// write, Write does not wait, and what arrived meanwhile is the next write.
func TestLinesWaitingForAWriteLeaveTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dst, w := held(DefaultLimit, "a\n")
		_, _ = w.Write([]byte("b\n"))
		_, _ = w.Write([]byte("c\n")) // returned: neither waited for the destination
		assert.Equal(t, []string{"a\n"}, dst.got())
		dst.gate <- struct{}{}
		dst.gate <- struct{}{}
		synctest.Wait()
		assert.Equal(t, []string{"a\n", "b\nc\n"}, dst.got())
		close(dst.gate)
		require.NoError(t, w.Close())
	})
}

// TestTheBoundHoldsWriters: past the bound, Write waits for the
// destination rather than hold more, and no line is lost.
func TestTheBoundHoldsWriters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dst, w := held(10, "aaa\n")
		_, _ = w.Write([]byte("bbb\n"))
		_, _ = w.Write([]byte("ccc\n")) // 8 bytes wait
		var returned bool
		go func() {
			_, _ = w.Write([]byte("ddd\n")) // 12 > 10: waits
			returned = true
		}()
		synctest.Wait()
		assert.False(t, returned, "a Write past the bound returned while the destination held the buffer")

		dst.gate <- struct{}{} // "aaa\n" written; the goroutine takes "bbb\nccc\n", making room
		synctest.Wait()
		assert.True(t, returned, "a Write past the bound still waits after the destination took the buffer")
		close(dst.gate)
		require.NoError(t, w.Close())
		assert.Equal(t, []string{"aaa\n", "bbb\nccc\n", "ddd\n"}, dst.got())
	})
}

// TestALineLargerThanTheBound is written whole, not held forever.
func TestALineLargerThanTheBound(t *testing.T) {
	var dst recorder
	w := New(&dst, 8)
	big := strings.Repeat("y", 100) + "\n"
	_, _ = w.Write([]byte("small\n"))
	_, _ = w.Write([]byte(big))
	_, _ = w.Write([]byte(big))
	require.NoError(t, w.Close())
	assert.Equal(t, "small\n"+big+big, strings.Join(dst.got(), ""))
}

// TestCloseWritesWhatWaitsAndLaterWritesGoStraight: Close returns after the
// waiting lines are written; a Write after it is written before it returns.
func TestCloseWritesWhatWaitsAndLaterWritesGoStraight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dst, w := held(DefaultLimit, "1\n")
		_, _ = w.Write([]byte("2\n"))
		var closed bool
		go func() {
			_ = w.Close()
			closed = true
		}()
		synctest.Wait()
		assert.False(t, closed, "Close returned with lines still waiting")
		assert.Equal(t, []string{"1\n"}, dst.got())
		close(dst.gate)
		synctest.Wait()
		assert.True(t, closed)
		assert.Equal(t, []string{"1\n", "2\n"}, dst.got())

		_, _ = w.Write([]byte("3\n"))
		assert.Equal(t, []string{"1\n", "2\n", "3\n"}, dst.got(), "a Write after Close is written at once")
		require.NoError(t, w.Close(), "a second Close")
	})
}

// TestCloseKeepsTheOrder: a Write waiting at the bound when Close comes is
// written after the lines before it, not straight away.
func TestCloseKeepsTheOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dst, w := held(10, "aaa\n")
		_, _ = w.Write([]byte("bbb\nccc\n"))
		go func() { _, _ = w.Write([]byte("ddd\n")) }() // waits at the bound
		synctest.Wait()
		go func() { _ = w.Close() }()
		synctest.Wait()
		close(dst.gate)
		synctest.Wait()
		assert.Equal(t, []string{"aaa\n", "bbb\nccc\n", "ddd\n"}, dst.got())
	})
}

// TestWriteCopies: the caller may reuse its buffer (slog does) as soon as
// Write returns.
func TestWriteCopies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dst, w := held(DefaultLimit, "first\n")
		p := []byte("second\n")
		_, _ = w.Write(p)
		copy(p, "XXXXXX\n")
		close(dst.gate)
		require.NoError(t, w.Close())
		assert.Equal(t, "first\nsecond\n", strings.Join(dst.got(), ""))
	})
}
