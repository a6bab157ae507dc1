package proxy

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
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
// times out, and any number of readers follow it. A client that leaves
// never cancels it; only its registry's scheduler may, when no client is
// left and another download somebody waits for needs the slot (fillSlots).
type fill struct {
	digest         digest.Digest
	registry, repo string // whose download it is
	fromPeer       bool   // started by a peer's request: asks no peer (peers.go)

	slots *fillSlots // its registry's, told when a client leaves; nil in tests

	mu      sync.Mutex
	slotted chan struct{} // closed once it holds a download slot, or ends
	started chan struct{} // closed once size and file are known, or on early failure
	changed chan struct{} // closed and replaced on every progress or state change
	size    int64         // expected size (announced, or declared by a manifest), -1 if unknown
	file    *os.File      // read side of the ingest file
	refs    int           // the fill itself plus each client (waiting or reading)
	closed  bool          // abandoned or yielding: no new client may join (fillSlots)
	written int64
	done    bool
	err     error

	readers  map[*fillReader]int64 // open readers and how far each has read
	advanced chan struct{}         // closed and replaced when a reader moves on or leaves (relay only)
	relay    *relay                // non-nil once the disk is full: see relay.go
}

func newFill(d digest.Digest, registry, repo string) *fill {
	return &fill{
		digest: d, registry: registry, repo: repo, slotted: make(chan struct{}), started: make(chan struct{}), changed: make(chan struct{}), size: -1, refs: 1,
		readers: map[*fillReader]int64{}, advanced: make(chan struct{}),
	}
}

// granted records that the fill holds a download slot.
func (f *fill) granted() {
	f.mu.Lock()
	closeOnce(f.slotted)
	f.mu.Unlock()
}

// start publishes the size and the ingest file to readers.
func (f *fill) start(size int64, file *os.File) {
	f.mu.Lock()
	f.size, f.file = size, file
	closeOnce(f.slotted)
	f.mu.Unlock()
	close(f.started)
}

// closeOnce closes c unless it is closed already (callers hold f.mu).
func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
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
	closeOnce(f.slotted)
	closeOnce(f.started)
	f.mu.Unlock()
	f.release()
}

// acquire adds a client, unless the fill ended or was closed to new ones.
func (f *fill) acquire() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refs == 0 || f.closed {
		return false
	}
	f.refs++
	return true
}

// release drops a client (or, in finish, the fill's own reference). The
// last client leaving a download in progress may change who gets its
// registry's slots.
func (f *fill) release() {
	f.mu.Lock()
	f.refs--
	last := f.refs == 0
	idle := f.refs == 1 && !f.done
	file := f.file
	f.mu.Unlock()
	if last && file != nil {
		_ = file.Close()
	}
	if idle && f.slots != nil {
		f.slots.rebalance()
	}
}

// idle reports whether no client holds the download in progress.
func (f *fill) idle() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refs == 1 && !f.done && !f.closed
}

// closeIfIdle closes the fill to new clients if none holds it, and
// reports whether it did: a request arriving later starts a new fill.
func (f *fill) closeIfIdle() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refs != 1 || f.done || f.closed {
		return false
	}
	f.closed = true
	return true
}

// progressed is how many bytes the fill has received.
func (f *fill) progressed() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written
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
	ctx, yield := context.WithCancelCause(bg)
	defer yield(nil)
	ctx, cancel := context.WithTimeout(ctx, p.fillTimeout)
	defer cancel()

	err := p.download(ctx, yield, f, m, repo)
	if err != nil && errors.Is(context.Cause(ctx), errYielded) {
		err = errYielded
	}
	result := fillOK
	switch {
	case errors.Is(err, errRelayed):
		result, err = fillDiskFull, nil // served, verified, not stored
	case errors.Is(err, errAbandoned):
		result = fillAbandoned
	case errors.Is(err, errYielded):
		result = fillYielded
		p.log.Info("blob download cancelled: no client left and another download needed its slot", "registry", m.name, "repository", repo, "digest", f.digest)
	case errors.Is(err, ErrDiskFull):
		result = fillNoSpace
		p.log.Warn("blob download refused: it would not fit on the cache's disk", "registry", m.name, "repository", repo, "digest", f.digest, "error", err)
	case errors.Is(err, upstream.ErrTooLarge):
		result = fillTooLarge
		p.log.Warn("blob download refused: larger than its bound; discarded", "registry", m.name, "repository", repo, "digest", f.digest, "error", err)
	case errors.Is(err, cache.ErrDigestMismatch), errors.Is(err, cache.ErrSizeMismatch):
		result = fillDigestMismatch
		p.metrics.digestMismatch.WithLabelValues(m.name, "blob").Inc()
		err = fmt.Errorf("%w: %w", ErrDigestMismatch, err)
		p.log.Error("upstream sent a blob that does not match its digest; discarded", "registry", m.name, "repository", repo, "digest", f.digest, "error", err)
	case err != nil:
		result = fillError
		p.upstreamFailed(m.name, repo, "blob "+f.digest.String(), err)
	}
	p.metrics.fills.WithLabelValues(m.name, result).Inc()
	if result == fillOK && p.peers != nil {
		p.peers.Stored(m.name, repo, f.digest) // peers.go
	}
	// Remove the fill only after the outcome is final: a request that finds
	// no fill then finds the committed blob in the store. A fill closed to
	// new clients may have been replaced already.
	p.fills.mu.Lock()
	if p.fills.m[f.digest.String()] == f {
		delete(p.fills.m, f.digest.String())
	}
	p.fills.mu.Unlock()
	f.finish(err)
}

// download waits for a slot (fillSlots, which may cancel it through yield
// later), fetches the blob within its bounds (blobBounds, diskBudget) and
// commits it.
func (p *Proxy) download(ctx context.Context, yield context.CancelCauseFunc, f *fill, m *mirror, repo string) error {
	if err := m.fillSlots.acquire(ctx, f, yield); err != nil {
		if errors.Is(err, errAbandoned) {
			return err
		}
		return fmt.Errorf("waiting for a download slot: %w", err)
	}
	defer m.fillSlots.release(f)
	f.granted()
	p.metrics.fillsInProgress.Inc()
	defer p.metrics.fillsInProgress.Dec()

	done, askedAll := p.blobFromPeers(ctx, f, m, repo) // peers.go
	if done {
		return nil
	}
	body, err := m.Client.GetBlob(ctx, repo, f.digest.String())
	if err != nil {
		return p.blobAfterUpstream(ctx, f, m, repo, askedAll, err)
	}
	defer body.Close()
	b, claim, w, rf, err := p.ingestFor(f, m, repo, body.Size)
	if err != nil {
		return err
	}
	defer claim.done()
	f.start(b.size, rf)

	// The body enforces the stall limit (upstream.Blob): its clock runs
	// only while waiting on upstream, not while writing to the local disk.
	buf := make([]byte, 256<<10)
	var total int64
	var relayHash hash.Hash // set once the disk is full: see relay.go
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			total += int64(n)
			if total > b.limit {
				w.Abort()
				return b.exceeded(f.digest)
			}
			data := buf[:n]
			if relayHash == nil {
				nw, werr := w.Write(data)
				claim.wrote(int64(nw))
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
		if b.size >= 0 && total != b.size {
			return fmt.Errorf("blob %s: got %d bytes, expected %d: %w", f.digest, total, b.size, cache.ErrSizeMismatch)
		}
		if got := digest.NewDigest(f.digest.Algorithm(), relayHash); got != f.digest {
			return fmt.Errorf("blob %s: got %s: %w", f.digest, got, cache.ErrDigestMismatch)
		}
		return errRelayed
	}
	return w.Commit()
}

// ingestFor bounds a download of f's blob, announced as announced bytes
// (blobBounds), claims its disk space (diskBudget) and opens an ingest file,
// with a second handle for the fill's readers. The caller ends the claim.
func (p *Proxy) ingestFor(f *fill, m *mirror, repo string, announced int64) (blobBound, *diskClaim, *cache.Ingest, *os.File, error) {
	b, err := p.blobBounds(f.digest, m.name, repo, announced)
	if err != nil {
		return b, nil, nil, nil, err
	}
	claim, err := p.disk.admit(f.digest, b.size)
	if err != nil {
		return b, nil, nil, nil, err
	}
	w, err := p.store.NewIngest(f.digest, b.size)
	if err != nil {
		claim.done()
		return b, nil, nil, nil, err
	}
	rf, err := os.Open(w.Path())
	if err != nil {
		w.Abort()
		claim.done()
		return b, nil, nil, nil, fmt.Errorf("open ingest file for readers: %w", err)
	}
	return b, claim, w, rf, nil
}

// errBeyondManifest marks a blob refused for being larger than the size
// the manifest of the repository that started its download declared: a
// client of another repository (whose manifest may say otherwise) asks
// again for its own.
var errBeyondManifest = errors.New("larger than its manifest declares")

// blobBound is what a download may receive: see sizes.go.
type blobBound struct {
	size     int64 // expected, -1 if unknown
	limit    int64 // the most bytes accepted
	declared bool  // limit is the size a manifest declared
}

func (b blobBound) exceeded(d digest.Digest) error {
	if b.declared {
		return fmt.Errorf("blob %s: upstream sent more than the %d bytes its manifest declares: %w: %w", d, b.limit, upstream.ErrTooLarge, errBeyondManifest)
	}
	return fmt.Errorf("blob %s: upstream sent more than %d bytes: %w", d, b.limit, upstream.ErrTooLarge)
}

// blobBounds bounds the download of blob d of repo, which upstream
// announced as announced bytes (-1: not announced), or refuses it at once.
func (p *Proxy) blobBounds(d digest.Digest, registry, repo string, announced int64) (blobBound, error) {
	b := blobBound{size: announced, limit: math.MaxInt64}
	if p.maxBlob > 0 {
		b.limit = p.maxBlob
	}
	if declared, ok := p.sizes.lookup(registry, repo, d); ok {
		if announced > declared {
			return b, fmt.Errorf("blob %s: upstream announced %d bytes, its manifest declares %d: %w: %w", d, announced, declared, upstream.ErrTooLarge, errBeyondManifest)
		}
		if b.size < 0 {
			b.size = declared
		}
		if declared <= b.limit {
			b.limit, b.declared = declared, true
		}
	}
	if b.size > b.limit {
		return b, fmt.Errorf("blob %s is %d bytes: %w (%d)", d, b.size, upstream.ErrTooLarge, b.limit)
	}
	if b.size >= 0 && b.size < b.limit {
		b.limit, b.declared = b.size, false
	}
	return b, nil
}
