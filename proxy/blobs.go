package proxy

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/opencontainers/go-digest"
)

// Blob is a blob answer. Content is the verified file on a hit, or a reader
// following the download on a miss; the caller closes it.
type Blob struct {
	Content io.ReadSeekCloser
	Size    int64
	ModTime time.Time
	Source  Source
}

// Blob answers a GET of blob d in repo of registry. A cached blob is served
// with no upstream call. Otherwise the caller joins the download of d in
// progress, or starts one, and reads the bytes as they arrive.
//
// whole says the caller will read the blob to its end. A caller that wants
// part of it (a Range) waits for the verified blob instead: only a reader
// that reaches the end can be held back from the last byte until the digest
// matched, so a part of a download in progress is never served.
func (p *Proxy) Blob(ctx context.Context, registry, repo string, d digest.Digest, whole bool) (*Blob, error) {
	m, err := p.mirror(registry)
	if err != nil {
		return nil, err
	}
	repo = m.Client.RepoPath(repo)
	followed, retriedOwn := false, false
	for {
		b, f, err := p.openOrJoin(ctx, m, repo, d)
		if b != nil && followed {
			b.Source = Miss // this request waited for the download
		}
		if err != nil || b != nil {
			return b, err
		}
		followed = true
		b, retry, err := p.follow(ctx, f, whole)
		var ue *upstream.Error
		if err != nil && !retriedOwn && (f.registry != m.name || f.repo != repo) &&
			(errors.As(err, &ue) && !ue.Unavailable() || errors.Is(err, errBeyondManifest)) {
			// The download was another repository's, which upstream says
			// lacks the blob or denies it, or whose manifest declares a
			// smaller size: ask again for ours.
			retriedOwn, retry = true, true
		}
		if !retry {
			return b, err
		}
	}
}

// openOrJoin returns the cached blob, or the fill of d (started if none).
// The fill is acquired for the caller.
func (p *Proxy) openOrJoin(ctx context.Context, m *mirror, repo string, d digest.Digest) (*Blob, *fill, error) {
	if b, err := p.openCached(d); b != nil || err != nil {
		return b, nil, err
	}
	p.fills.mu.Lock()
	defer p.fills.mu.Unlock()
	if f, ok := p.fills.m[d.String()]; ok && f.acquire() {
		p.metrics.fillWaiters.Inc()
		return nil, f, nil
	}
	// Checked again under the lock: a fill is removed only after its commit.
	if b, err := p.openCached(d); b != nil || err != nil {
		return b, nil, err
	}
	f := newFill(d, m.name, repo)
	f.slots = m.fillSlots
	f.fromPeer = ctx.Value(fromPeerKey{}) != nil
	f.acquire()
	if !p.background(func(ctx context.Context) { p.runFill(ctx, f, m, repo) }) {
		return nil, nil, errClosed
	}
	p.fills.m[d.String()] = f
	p.metrics.fillWaiters.Inc()
	return nil, f, nil
}

func (p *Proxy) openCached(d digest.Digest) (*Blob, error) {
	file, info, err := p.store.OpenBlob(d)
	if errors.Is(err, cache.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &Blob{Content: file, Size: info.Size, ModTime: info.Stored, Source: Hit}, nil
}

// follow waits for the fill to start and returns a reader of it. retry is
// true when the fill finished in the meantime and the store should be asked
// again. The wait for the fill to get a download slot is bounded by the
// request budget (awaitSlot): past it the answer is unavailable (ErrBusy).
func (p *Proxy) follow(ctx context.Context, f *fill, whole bool) (b *Blob, retry bool, err error) {
	defer func() {
		if b == nil {
			p.metrics.fillWaiters.Dec()
			f.release()
		}
	}()
	if err := p.awaitSlot(ctx, f); err != nil {
		return nil, false, err
	}
	select {
	case <-f.started:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	_, done, ferr, _ := f.readable()
	switch {
	case done && ferr != nil:
		return nil, false, ferr
	case f.relaying():
		// Only the readers that were there when the disk filled up can be
		// served; containerd goes to the registry itself.
		return nil, false, ErrDiskFull
	case done:
		// Committed already (a peer's blob is published whole): the file
		// itself, which is served with sendfile.
		return nil, true, nil
	case f.size <= 0 || !whole:
		// No announced size (no Content-Length to promise, no last byte
		// to hold back), or only a part is wanted: wait for the verified
		// blob instead.
		for {
			_, done, ferr, changed := f.readable()
			if done && f.relaying() {
				return nil, false, ErrDiskFull
			}
			if done {
				return nil, ferr == nil, ferr
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
		}
	}
	r := &fillReader{ctx: ctx, f: f}
	f.addReader(r)
	return &Blob{Content: &waiterCloser{fillReader: r, p: p}, Size: f.size, Source: Miss}, false, nil
}

// waiterCloser counts the reader out of the waiting clients on Close, once.
type waiterCloser struct {
	*fillReader
	p    *Proxy
	once sync.Once
}

func (w *waiterCloser) Close() error {
	w.once.Do(func() {
		w.p.metrics.fillWaiters.Dec()
		w.fillReader.f.removeReader(w.fillReader)
		w.fillReader.f.release()
	})
	return nil
}

// BlobHead answers a HEAD of blob d: its size, from the store, a fill in
// progress, or upstream (without downloading it). Concurrent HEADs of the
// same blob in the same repository share one upstream HEAD, which takes one
// of the registry's request slots (flights.go).
func (p *Proxy) BlobHead(ctx context.Context, registry, repo string, d digest.Digest) (int64, Source, error) {
	m, err := p.mirror(registry)
	if err != nil {
		return 0, "", err
	}
	repo = m.Client.RepoPath(repo)
	if b, err := p.openCached(d); err != nil {
		return 0, "", err
	} else if b != nil {
		b.Content.Close()
		return b.Size, Hit, nil
	}
	p.fills.mu.Lock()
	f := p.fills.m[d.String()]
	p.fills.mu.Unlock()
	if f != nil {
		select {
		case <-f.started:
			if _, _, ferr, _ := f.readable(); ferr == nil && f.size > 0 {
				return f.size, Miss, nil
			}
		default:
		}
	}
	key := m.name + "/" + repo + "@" + d.String()
	size, err := share(p, &p.blobHeads, ctx, m, key, "blob HEAD", m.Client.Timeouts().Request, func(ctx context.Context) (int64, error) {
		size, err := m.Client.HeadBlob(ctx, repo, d.String())
		if err != nil {
			p.upstreamFailed(m.name, repo, "blob HEAD "+d.String(), err)
		}
		return size, err
	})
	if err != nil {
		return 0, "", err
	}
	return size, Miss, nil
}
