// Package logwriter hands a process's log lines to a goroutine of its own,
// which writes them to their destination in as few writes as it can.
//
// lifeboat writes one access line per request. Written straight to
// stderr, every line is a write(2) made while the request's goroutine
// holds slog's handler lock: requests answered together take turns at that
// lock, and a stderr that stalls (the runtime's log pipe behind a busy
// disk) stalls every request at once. Through a Writer a line is a copy
// into memory, and the lines that arrive while one write is out leave
// together in the next (BenchmarkAccessLines: 32 goroutines on 2 cores,
// about half the time per line).
//
// What it changes, and what it does not:
//   - Order is kept: lines reach the destination in the order their Write
//     calls took the Writer's lock.
//   - Memory is bounded: while the destination is slow, lines wait in a
//     buffer of at most Limit bytes (plus one line); past it Write blocks
//     until the destination takes the buffer, as a direct write to a
//     stalled stderr blocks at once. No line is dropped.
//   - Close writes every waiting line before it returns; a Write after Close
//     goes straight to the destination.
//   - A crash (a panic no one recovers, SIGKILL) loses the lines not yet
//     written: normally those of the last write's few microseconds; when
//     the destination has stalled, the waiting lines (at most Limit bytes,
//     plus one line) and the batch it holds (as much again).
//   - A destination that never takes a write again (a stderr nobody reads)
//     blocks Close, as it blocked every log call before; a process then
//     ends by its supervisor's kill.
//   - Errors from the destination are dropped, as slog drops a handler's.
package logwriter

import (
	"io"
	"sync"
)

// DefaultLimit is the bound on lines waiting for the destination: about a
// thousand access lines.
const DefaultLimit = 256 << 10

// Writer is an io.Writer that batches writes to its destination. It is
// safe for concurrent use. Close it.
type Writer struct {
	dst   io.Writer
	limit int

	mu     sync.Mutex
	room   sync.Cond // broadcast when the goroutine takes the buffer
	buf    []byte    // waiting lines
	spare  []byte    // the buffer the goroutine last wrote, for reuse
	closed bool

	kick chan struct{} // cap 1: lines are waiting, or the Writer closed
	done chan struct{} // closed when the goroutine has written its last
}

// New starts a Writer to dst that lets at most limit bytes wait (plus one
// line larger than limit on its own). A limit ≤ 0 is DefaultLimit.
func New(dst io.Writer, limit int) *Writer {
	if limit <= 0 {
		limit = DefaultLimit
	}
	w := &Writer{dst: dst, limit: limit, kick: make(chan struct{}, 1), done: make(chan struct{})}
	w.room.L = &w.mu
	go w.run()
	return w
}

// Write copies p to be written, blocking while the waiting lines are at
// the bound, and reports len(p) written and no error: the write itself
// happens later. After Close it writes p at once and returns what the
// destination said.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	for !w.closed && len(w.buf) > 0 && len(w.buf)+len(p) > w.limit {
		w.room.Wait()
	}
	if w.closed {
		w.mu.Unlock()
		<-w.done // the goroutine's last write first: order is kept
		return w.dst.Write(p)
	}
	w.buf = append(w.buf, p...)
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default: // already kicked: the goroutine will take this line too
	}
	return len(p), nil
}

// Close writes the waiting lines and stops the goroutine. Later writes go
// straight to the destination. Close always returns nil.
func (w *Writer) Close() error {
	w.mu.Lock()
	w.closed = true
	w.room.Broadcast()
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
	<-w.done
	return nil
}

func (w *Writer) run() {
	defer close(w.done)
	for range w.kick {
		w.mu.Lock()
		out := w.buf
		w.buf, w.spare = w.spare[:0], nil
		closed := w.closed
		w.room.Broadcast()
		w.mu.Unlock()
		if len(out) > 0 {
			_, _ = w.dst.Write(out)
		}
		if closed {
			// Write appends nothing once closed is set, and this turn took
			// what was there when it was.
			return
		}
		w.mu.Lock()
		w.spare = out
		w.mu.Unlock()
	}
}
