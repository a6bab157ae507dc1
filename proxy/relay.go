package proxy

import (
	"context"
	"errors"
)

// ErrDiskFull is returned to a request that cannot be served because the
// cache's disk is full: a download that ran out of space is relayed to the
// clients already reading it, but not stored, so nobody else can join it.
var ErrDiskFull = errors.New("the cache's disk is full: this download is not being stored")

// errRelayed ends a fill whose bytes reached its readers from memory after
// the disk filled up: verified, served, not stored.
var errRelayed = errors.New("served from memory, not stored: disk full")

// errNoReaders ends a relay nobody reads any more.
var errNoReaders = errors.New("disk full and no client left to relay to")

// relayLimit bounds the memory a relay holds ahead of its slowest reader;
// the download waits for readers beyond it.
const relayLimit = 16 << 20

// relay is the state of a fill after a write to the disk failed with ENOSPC:
// the bytes already in the (unlinked) ingest file are read from it, the rest
// from chunks in memory that are dropped once every reader is past them.
type relay struct {
	diskEnd int64
	chunks  []chunk
}

type chunk struct {
	off  int64
	data []byte
}

// startRelay switches the fill to relaying: from now on what the file
// holds is final and more bytes come through push.
func (f *fill) startRelay() {
	f.mu.Lock()
	f.relay = &relay{diskEnd: f.written}
	f.mu.Unlock()
}

func (f *fill) relaying() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.relay != nil
}

// push hands data to the readers, waiting while the slowest one is more
// than relayLimit behind.
func (f *fill) push(ctx context.Context, data []byte) error {
	for {
		f.mu.Lock()
		if len(f.readers) == 0 {
			f.mu.Unlock()
			return errNoReaders
		}
		slowest := f.written
		for _, off := range f.readers {
			slowest = min(slowest, off)
		}
		r := f.relay
		buffered := 0
		keep := r.chunks[:0]
		for _, c := range r.chunks {
			if c.off+int64(len(c.data)) > slowest {
				keep = append(keep, c)
				buffered += len(c.data)
			}
		}
		r.chunks = keep
		if buffered == 0 || buffered+len(data) <= relayLimit {
			r.chunks = append(r.chunks, chunk{off: f.written, data: append([]byte(nil), data...)})
			f.written += int64(len(data))
			close(f.changed)
			f.changed = make(chan struct{})
			f.mu.Unlock()
			return nil
		}
		advanced := f.advanced
		f.mu.Unlock()
		select {
		case <-advanced:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// readAt reads at off, at most up to limit, from the file or, past what
// the file holds in a relay, from memory.
func (f *fill) readAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	r := f.relay
	if r == nil || off < r.diskEnd {
		if r != nil {
			p = p[:min(int64(len(p)), r.diskEnd-off)]
		}
		f.mu.Unlock()
		return f.file.ReadAt(p, off)
	}
	defer f.mu.Unlock()
	for _, c := range r.chunks {
		if off >= c.off && off < c.off+int64(len(c.data)) {
			return copy(p, c.data[off-c.off:]), nil
		}
	}
	return 0, errors.New("relayed bytes no longer held for this reader")
}

// advance publishes where reader r is, for the relay's backpressure.
func (f *fill) advance(r *fillReader, off int64) {
	f.mu.Lock()
	if _, ok := f.readers[r]; ok {
		f.readers[r] = off
	}
	if f.relay != nil {
		close(f.advanced)
		f.advanced = make(chan struct{})
	}
	f.mu.Unlock()
}

// addReader registers r at offset 0; removeReader forgets it.
func (f *fill) addReader(r *fillReader) {
	f.mu.Lock()
	f.readers[r] = 0
	f.mu.Unlock()
}

func (f *fill) removeReader(r *fillReader) {
	f.mu.Lock()
	delete(f.readers, r)
	close(f.advanced)
	f.advanced = make(chan struct{})
	f.mu.Unlock()
}
