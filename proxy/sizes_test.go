package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// How the front answers a blob GET.
type blobFault int

const (
	chunked blobFault = iota + 1 // upstream's bytes, no Content-Length
	extra                        // upstream's bytes and 1 MiB more, no Content-Length
	endless                      // zeros until the client leaves, no Content-Length
	huge                         // announces 1 TiB, sends upstream's bytes
	tooLong                      // announces one byte more than upstream's, sends it
)

// front stands in front of a real upstream and answers GETs of chosen
// blobs its own way; everything else is passed through.
type front struct {
	up     *upstreamtest.Upstream
	URL    string
	mu     sync.Mutex
	faults map[string]blobFault // by digest
	sent   atomic.Int64         // bytes sent for faulty blobs
}

func startFront(t *testing.T, up *upstreamtest.Upstream) *front {
	t.Helper()
	f := &front{up: up, faults: map[string]blobFault{}}
	target, err := url.Parse(up.URL)
	require.NoError(t, err)
	pass := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, d, ok := strings.Cut(r.URL.Path, "/blobs/")
		f.mu.Lock()
		fault := f.faults[d]
		f.mu.Unlock()
		if !ok || r.Method != http.MethodGet || fault == 0 {
			pass.ServeHTTP(w, r)
			return
		}
		f.serve(w, r, fault)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func (f *front) set(d digest.Digest, fault blobFault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[d.String()] = fault
}

func (f *front) serve(w http.ResponseWriter, r *http.Request, fault blobFault) {
	var body []byte
	if fault != endless {
		resp, err := http.Get(f.up.URL + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	switch fault {
	case huge:
		w.Header().Set("Content-Length", strconv.FormatInt(1<<40, 10))
	case tooLong:
		body = append(body, 0)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	case extra:
		body = append(body, make([]byte, 1<<20)...)
	}
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush() // headers out first: without Content-Length, chunked
	for {
		chunk := make([]byte, 32<<10)
		if fault != endless {
			chunk = body[:min(len(body), 32<<10)]
			body = body[len(chunk):]
		}
		if len(chunk) == 0 {
			return
		}
		n, err := w.Write(chunk)
		f.sent.Add(int64(n))
		if err != nil || r.Context().Err() != nil {
			return
		}
		w.(http.Flusher).Flush()
	}
}

// noIngestLeft asserts nothing partial is left in the store's ingest dir.
func noIngestLeft(t *testing.T, e *env) {
	t.Helper()
	require.Eventually(t, func() bool {
		entries, err := os.ReadDir(filepath.Join(e.dir, "ingest"))
		return err == nil && len(entries) == 0
	}, 10*time.Second, 5*time.Millisecond, "nothing partial is left behind")
}

// blobErr gets blob d, reading it to its end if it starts streaming, and
// returns the first error.
func blobErr(t *testing.T, p *Proxy, repo string, d digest.Digest) error {
	t.Helper()
	b, err := p.Blob(t.Context(), testRegistry, repo, d, true)
	if err != nil {
		return err
	}
	defer b.Content.Close()
	_, err = io.ReadAll(b.Content)
	return err
}

func TestMaxBlobSizeDefaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		set, want int64
	}{{0, DefaultMaxBlobSize}, {-1, -1}, {5 << 20, 5 << 20}} {
		e := newTunedEnv(t, upstreamtest.Start(t), "http://127.0.0.1:1", upstream.Timeouts{}, func(o *Options) { o.MaxBlobSize = tc.set })
		assert.Equal(t, tc.want, e.p.maxBlob, "MaxBlobSize %d", tc.set)
	}
	assert.Equal(t, int64(20<<30), int64(DefaultMaxBlobSize), "zero means 20 GiB")
}

// TestUnannouncedBlobIsCappedAtMaxBlobSize: a blob upstream streams
// without Content-Length used to be written to ingest/ until the disk was
// full. Now it is cut at MaxBlobSize: ErrTooLarge, nothing kept.
func TestUnannouncedBlobIsCappedAtMaxBlobSize(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	fr := startFront(t, up)
	e := newTunedEnv(t, up, fr.URL, upstream.Timeouts{}, func(o *Options) { o.MaxBlobSize = 1 << 20 })
	d := digest.FromString("a blob that never ends")
	fr.set(d, endless)

	err := blobErr(t, e.p, "app", d)
	require.ErrorIs(t, err, upstream.ErrTooLarge)
	assert.Equal(t, 1.0, fillResults(e.p, "too_large"))
	_, err = e.store.Stat(d)
	assert.ErrorIs(t, err, cache.ErrNotFound)
	noIngestLeft(t, e)
	t.Logf("upstream sent %d bytes before the download was cut at %d", fr.sent.Load(), 1<<20)
	assert.Less(t, fr.sent.Load(), int64(64<<20), "the stream was cut, not drained")
}

// TestAnnouncedSizeIsCheckedFirst: a blob announced as 1 TiB is refused
// before a byte is written: beyond the default MaxBlobSize (20 GiB), and,
// with no MaxBlobSize, beyond the free disk (ErrDiskFull, a 503).
func TestAnnouncedSizeIsCheckedFirst(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	fr := startFront(t, up)
	d := pushBlobs(t, up, "app", 1, 4<<10)[0]
	fr.set(d, huge)

	byDefault := newTunedEnv(t, up, fr.URL, upstream.Timeouts{}, nil)
	require.ErrorIs(t, blobErr(t, byDefault.p, "app", d), upstream.ErrTooLarge)
	assert.Equal(t, 1.0, fillResults(byDefault.p, "too_large"))
	noIngestLeft(t, byDefault)

	unlimited := newTunedEnv(t, up, fr.URL, upstream.Timeouts{}, func(o *Options) { o.MaxBlobSize = -1 })
	free, _, err := unlimited.store.DiskSpace()
	require.NoError(t, err)
	require.Less(t, free, int64(1<<40), "the test needs a disk with less than 1 TiB free")
	require.ErrorIs(t, blobErr(t, unlimited.p, "app", d), ErrDiskFull)
	assert.Equal(t, 1.0, fillResults(unlimited.p, "no_space"))
	noIngestLeft(t, unlimited)
}

// TestDiskReserveRefusesWhatWouldNotFit: a blob of known size that would
// leave less than DiskReserve free is refused; the downloads in progress
// count with what they still have to write.
func TestDiskReserveRefusesWhatWouldNotFit(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	d := pushBlobs(t, up, "app", 1, 4<<10)[0]
	probe := newTunedEnv(t, up, up.URL, upstream.Timeouts{}, nil)
	free, _, err := probe.store.DiskSpace()
	require.NoError(t, err)

	e := newTunedEnv(t, up, up.URL, upstream.Timeouts{}, func(o *Options) { o.DiskReserve = free + 1<<30 })
	require.ErrorIs(t, blobErr(t, e.p, "app", d), ErrDiskFull, "4 KiB do not fit when the reserve exceeds the free space")
	_, err = e.store.Stat(d)
	assert.ErrorIs(t, err, cache.ErrNotFound)

	// The budget's arithmetic, with half the free space reserved: two
	// downloads of 0.3 of it do not both fit until the first is done.
	b := &diskBudget{store: probe.store, reserve: free / 2}
	share := free * 3 / 10
	first, err := b.admit(d, share)
	require.NoError(t, err)
	_, err = b.admit(d, share)
	require.ErrorIs(t, err, ErrDiskFull, "the first download's unwritten bytes are promised")
	first.wrote(share / 2)
	first.done()
	second, err := b.admit(d, share)
	require.NoError(t, err, "a finished download's promise is released")
	second.done()
	assert.Zero(t, b.pending)
}

// TestManifestDeclaredSizeBoundsTheBlob: once the proxy fetched a
// manifest, the sizes it declares bound the blobs of that repository: a
// blob sent without Content-Length streams with its declared size, one
// longer than declared is cut (ErrTooLarge) and kept nowhere, one
// announced longer is refused at once. Another repository's manifest
// never bounds this one's blobs.
func TestManifestDeclaredSizeBoundsTheBlob(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	fr := startFront(t, up)
	e := newTunedEnv(t, up, fr.URL, upstream.Timeouts{}, nil)
	imgs := map[string]v1.Image{}
	for _, tag := range []string{"chunked", "extra", "toolong"} {
		imgs[tag] = upstreamtest.RandomImage(t, 64<<10, 1)
		up.Push(t, "app:"+tag, imgs[tag])
		_, err := e.p.Manifest(t.Context(), testRegistry, "app", tag)
		require.NoError(t, err)
	}

	d, size := firstLayer(t, imgs["chunked"])
	fr.set(d, chunked)
	b, err := e.p.Blob(t.Context(), testRegistry, "app", d, true)
	require.NoError(t, err)
	assert.Equal(t, size, b.Size, "an unannounced blob streams with the size its manifest declares")
	body, err := io.ReadAll(b.Content)
	b.Content.Close()
	require.NoError(t, err)
	assert.Equal(t, d, digest.FromBytes(body))

	d, _ = firstLayer(t, imgs["extra"])
	fr.set(d, extra)
	err = blobErr(t, e.p, "app", d)
	require.ErrorIs(t, err, upstream.ErrTooLarge, "more bytes than declared")
	_, err = e.store.Stat(d)
	assert.ErrorIs(t, err, cache.ErrNotFound)

	d, _ = firstLayer(t, imgs["toolong"])
	fr.set(d, tooLong)
	require.ErrorIs(t, blobErr(t, e.p, "app", d), upstream.ErrTooLarge, "announced longer than declared")
	assert.Equal(t, 2.0, fillResults(e.p, "too_large"))
	noIngestLeft(t, e)

	// A manifest in another repository declaring a tiny size for a blob
	// does not bound that blob here.
	other := pushBlobs(t, up, "app", 1, 8<<10)[0]
	e.p.sizes.learn(testRegistry, "evil", []byte(`{"schemaVersion":2,"layers":[{"digest":"`+other.String()+`","size":1}]}`))
	got, err := e.p.Blob(t.Context(), testRegistry, "app", other, true)
	require.NoError(t, err)
	body, err = io.ReadAll(got.Content)
	got.Content.Close()
	require.NoError(t, err)
	assert.Equal(t, other, digest.FromBytes(body))
}

func TestRepoOfKey(t *testing.T) {
	t.Parallel()
	d := digest.FromString("x")
	for _, tc := range []struct {
		key, repo string
		ok        bool
	}{
		{cache.TagKey{Registry: "reg.io:5000", Repo: "library/app", Tag: "v1"}.String(), "library/app", true},
		{"reg.io:5000/library/app@" + d.String(), "library/app", true},
		{"other.io/library/app:v1", "", false},
		{"reg.io:5000/app", "", false},
	} {
		repo, ok := repoOfKey("reg.io:5000", tc.key)
		assert.Equal(t, tc.ok, ok, tc.key)
		assert.Equal(t, tc.repo, repo, tc.key)
	}
}
