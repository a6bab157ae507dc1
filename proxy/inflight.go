package proxy

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/opencontainers/go-digest"
)

// fills tracks the blob downloads in progress: at most one per digest.
type fills struct {
	mu sync.Mutex
	m  map[string]*fill
}

// fill is one upstream download of one blob into the store. It belongs to no
// client: it runs on its own context until it finishes, fails, stalls or
// times out, and any number of readers follow it.
type fill struct {
	digest         digest.Digest
	registry, repo string // whose download it is

	mu      sync.Mutex
	started chan struct{} // closed once size and file are known, or on early failure
	changed chan struct{} // closed and replaced on every progress or state change
	size    int64         // announced size, -1 if unknown
	file    *os.File      // read side of the ingest file
	refs    int           // the fill itself plus each open reader
	written int64
	done    bool
	err     error

	readers  map[*fillReader]int64 // open readers and how far each has read
	advanced chan struct{}         // closed and replaced when a reader moves on or leaves (relay only)
	relay    *relay                // non-nil once the disk is full: see relay.go
}

func newFill(d digest.Digest, registry, repo string) *fill {
	return &fill{
		digest: d, registry: registry, repo: repo, started: make(chan struct{}), changed: make(chan struct{}), size: -1, refs: 1,
		readers: map[*fillReader]int64{}, advanced: make(chan struct{}),
	}
}

// start publishes the size and the ingest file to readers.
func (f *fill) start(size int64, file *os.File) {
	f.mu.Lock()
	f.size, f.file = size, file
	f.mu.Unlock()
	close(f.started)
}

func (f *fill) progress(n int64) {
	f.mu.Lock()
	f.written += int64(n)
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// finish records the outcome; err nil means the blob is committed and
// verified. It drops the fill's own reference to the file.
func (f *fill) finish(err error) {
	f.mu.Lock()
	f.done, f.err = true, err
	close(f.changed)
	f.changed = make(chan struct{})
	select {
	case <-f.started:
	default:
		close(f.started)
	}
	f.mu.Unlock()
	f.release()
}

func (f *fill) acquire() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refs == 0 {
		return false
	}
	f.refs++
	return true
}

func (f *fill) release() {
	f.mu.Lock()
	f.refs--
	last := f.refs == 0
	file := f.file
	f.mu.Unlock()
	if last && file != nil {
		_ = file.Close()
	}
}

// readable returns how far a reader may read now, whether the fill ended,
// its error, and a channel closed on the next change. The last byte of a
// blob of known size is held back until the digest was verified, so a
// client never receives a complete body with wrong content: on a mismatch
// its connection is cut short and its own verification fails loudly.
func (f *fill) readable() (limit int64, done bool, err error, changed <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	limit = f.written
	if !f.done && f.size >= 0 && limit >= f.size {
		limit = f.size - 1
	}
	return limit, f.done, f.err, f.changed
}

// fillReader reads a blob while it is being filled. It is an io.ReadSeeker
// of the blob's announced size, so http.ServeContent can serve ranges of a
// download in progress.
type fillReader struct {
	ctx context.Context // the client's: a reader that leaves stops waiting
	f   *fill
	off int64
}

func (r *fillReader) Read(p []byte) (int, error) {
	for {
		limit, done, err, changed := r.f.readable()
		if err != nil {
			return 0, fmt.Errorf("blob %s: download failed: %w", r.f.digest, err)
		}
		if r.off < limit {
			n := int64(len(p))
			n = min(n, limit-r.off)
			m, rerr := r.f.readAt(p[:n], r.off)
			r.off += int64(m)
			r.f.advance(r, r.off)
			if m > 0 || rerr == nil {
				return m, nil
			}
			return 0, rerr
		}
		if done {
			return 0, io.EOF
		}
		select {
		case <-changed:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

func (r *fillReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.f.size
	default:
		return 0, errors.New("fillReader.Seek: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("fillReader.Seek: negative position")
	}
	r.off = offset
	return offset, nil
}

// runFill downloads the blob into the store, on the proxy's own context.
func (p *Proxy) runFill(bg context.Context, f *fill, m *mirror, repo string) {
	ctx, cancel := context.WithTimeout(bg, p.fillTimeout)
	defer cancel()
	p.metrics.fillsInProgress.Inc()
	defer p.metrics.fillsInProgress.Dec()

	err := p.download(ctx, f, m, repo)
	result := "ok"
	switch {
	case errors.Is(err, errRelayed):
		result, err = "disk_full", nil // served, verified, not stored
	case errors.Is(err, cache.ErrDigestMismatch), errors.Is(err, cache.ErrSizeMismatch):
		result = "digest_mismatch"
		p.metrics.digestMismatch.WithLabelValues(m.name, "blob").Inc()
		err = fmt.Errorf("%w: %w", ErrDigestMismatch, err)
		p.log.Error("upstream sent a blob that does not match its digest; discarded", "registry", m.name, "repository", repo, "digest", f.digest, "error", err)
	case err != nil:
		result = "error"
		p.upstreamFailed(m.name, repo, "blob "+f.digest.String(), err)
	}
	p.metrics.fills.WithLabelValues(m.name, result).Inc()
	// Remove the fill only after the outcome is final: a request that finds
	// no fill then finds the committed blob in the store.
	p.fills.mu.Lock()
	delete(p.fills.m, f.digest.String())
	p.fills.mu.Unlock()
	f.finish(err)
}

func (p *Proxy) download(ctx context.Context, f *fill, m *mirror, repo string) error {
	select {
	case m.fillSlots <- struct{}{}:
		defer func() { <-m.fillSlots }()
	case <-ctx.Done():
		return fmt.Errorf("waiting for a download slot: %w", ctx.Err())
	}
	body, err := m.Client.GetBlob(ctx, repo, f.digest.String())
	if err != nil {
		return err
	}
	defer body.Close()
	size := body.Size
	if p.maxBlob > 0 && size > p.maxBlob {
		return fmt.Errorf("blob %s is %d bytes: %w (%d)", f.digest, size, upstream.ErrTooLarge, p.maxBlob)
	}
	w, err := p.store.NewIngest(f.digest, size)
	if err != nil {
		return err
	}
	rf, err := os.Open(w.Path())
	if err != nil {
		w.Abort()
		return fmt.Errorf("open ingest file for readers: %w", err)
	}
	f.start(size, rf)

	// The body enforces the stall limit (upstream.Blob): its clock runs
	// only while waiting on upstream, not while writing to the local disk.
	buf := make([]byte, 256<<10)
	var total int64
	var relayHash hash.Hash // set once the disk is full: see relay.go
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			total += int64(n)
			if p.maxBlob > 0 && total > p.maxBlob {
				w.Abort()
				return fmt.Errorf("blob %s: %w (%d)", f.digest, upstream.ErrTooLarge, p.maxBlob)
			}
			data := buf[:n]
			if relayHash == nil {
				nw, werr := w.Write(data)
				switch {
				case werr == nil:
					f.progress(int64(n))
					data = nil
				case errors.Is(werr, syscall.ENOSPC):
					// The disk is full. The clients already reading still
					// get every byte, from memory; nothing is stored.
					f.progress(int64(nw))
					relayHash, data = w.Hash(), data[nw:]
					w.Abort()
					f.startRelay()
					p.log.Warn("cache disk full: relaying the download to its clients without storing it",
						"registry", m.name, "repository", repo, "digest", f.digest, "error", werr)
				default:
					w.Abort()
					return fmt.Errorf("write blob %s: %w", f.digest, werr)
				}
			}
			if len(data) > 0 {
				relayHash.Write(data)
				if err := f.push(ctx, data); err != nil {
					return err
				}
			}
			p.metrics.upstreamBytes.WithLabelValues(m.name).Add(float64(n))
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			w.Abort()
			return rerr // an *upstream.Error, the breaker told
		}
	}
	if relayHash != nil {
		if size >= 0 && total != size {
			return fmt.Errorf("blob %s: got %d bytes, expected %d: %w", f.digest, total, size, cache.ErrSizeMismatch)
		}
		if got := digest.NewDigest(f.digest.Algorithm(), relayHash); got != f.digest {
			return fmt.Errorf("blob %s: got %s: %w", f.digest, got, cache.ErrDigestMismatch)
		}
		return errRelayed
	}
	return w.Commit()
}
