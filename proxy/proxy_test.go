package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const testRegistry = "upstream.test"

type env struct {
	up    *upstreamtest.Upstream
	store *cache.Store
	p     *Proxy
	reg   *prometheus.Registry
	dir   string
	net   *upstreamtest.Network // newBubbleEnv's: the proxy reaches upstream over it
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{up: upstreamtest.Start(t), dir: t.TempDir()}
	e.open(t)
	return e
}

// newBubbleEnv is newEnv for a test whose subject is time: call it inside
// a synctest bubble. Upstream and proxy talk over an in-memory network, so
// the bubble's clock advances while upstream hangs: a 500 ms budget runs
// out in no wall time, and after exactly 500 ms of the bubble's.
func newBubbleEnv(t *testing.T) *env {
	t.Helper()
	n := upstreamtest.NewNetwork()
	e := &env{net: n, up: upstreamtest.StartOn(t, n), dir: t.TempDir()}
	e.open(t)
	return e
}

// upstreamOptions are the upstream client options of the env's proxy.
func (e *env) upstreamOptions() upstream.Options {
	o := upstream.Options{Metrics: upstream.NewMetrics(e.reg)}
	if e.net != nil {
		o.DialContext = e.net.DialContext
	}
	return o
}

// open (re)opens store and proxy on the env's data dir.
func (e *env) open(t *testing.T) {
	t.Helper()
	store, err := cache.Open(e.dir, cache.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	e.store, e.reg = store, prometheus.NewPedanticRegistry()
	e.p = newTestProxy(t, store, upstream.Config{
		Name: testRegistry, URL: e.up.URL,
		Timeouts: answeringTimeouts,
	}, e.upstreamOptions(), e.reg)
}

// newTestProxy builds a proxy over store with one upstream.
func newTestProxy(t *testing.T, store *cache.Store, cfg upstream.Config, uopts upstream.Options, reg prometheus.Registerer) *Proxy {
	t.Helper()
	c, err := upstream.New(cfg, uopts)
	require.NoError(t, err)
	p, err := New(store, Options{Upstreams: []Upstream{{Client: c}}, Registerer: reg})
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

func (e *env) restart(t *testing.T) {
	t.Helper()
	require.NoError(t, e.store.Close())
	e.open(t)
}

// pushLayer pushes app:v1, an image of one random layer of about n bytes,
// to the upstream and returns the layer's digest and size.
func (e *env) pushLayer(t *testing.T, n int64) (digest.Digest, int64) {
	t.Helper()
	img := upstreamtest.RandomImage(t, n, 1)
	e.up.Push(t, "app:v1", img)
	return firstLayer(t, img)
}

// firstLayer is the digest and size of img's first layer.
func firstLayer(t *testing.T, img v1.Image) (digest.Digest, int64) {
	t.Helper()
	layers, err := img.Layers()
	require.NoError(t, err)
	ld, err := layers[0].Digest()
	require.NoError(t, err)
	size, err := layers[0].Size()
	require.NoError(t, err)
	return digest.Digest(ld.String()), size
}

// readBlob reads blob d (a digest.Digest or a v1.Hash) through p, checking
// the bytes against it.
func readBlob(t *testing.T, p *Proxy, d fmt.Stringer) ([]byte, Source) {
	t.Helper()
	b, err := p.Blob(t.Context(), testRegistry, "app", digest.Digest(d.String()), true)
	require.NoError(t, err)
	defer b.Content.Close()
	body, err := io.ReadAll(b.Content)
	require.NoError(t, err)
	require.Equal(t, digest.Digest(d.String()), digest.FromBytes(body), "served bytes match the digest")
	return body, b.Source
}

// pullAll pulls the image's manifest by tag and every blob it refers to.
func pullAll(t *testing.T, p *Proxy, img v1.Image, tag string) Source {
	t.Helper()
	m, err := p.Manifest(t.Context(), testRegistry, "app", tag)
	require.NoError(t, err)
	raw, err := img.RawManifest()
	require.NoError(t, err)
	assert.Equal(t, raw, m.Body, "manifest bytes are kept exactly")
	mt, err := img.MediaType()
	require.NoError(t, err)
	assert.Equal(t, string(mt), m.MediaType)
	cfg, err := img.ConfigName()
	require.NoError(t, err)
	readBlob(t, p, cfg)
	layers, err := img.Layers()
	require.NoError(t, err)
	for _, l := range layers {
		d, err := l.Digest()
		require.NoError(t, err)
		readBlob(t, p, d)
	}
	return m.Source
}

func TestMissThenHitThenRestartWithUpstreamDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := upstreamtest.RandomImage(t, 4096, 3)
	e.up.Push(t, "app:v1", img)

	heads := e.up.Requests("HEAD manifests") // the push made some
	assert.Equal(t, Miss, pullAll(t, e.p, img, "v1"))
	blobGets := e.up.Requests("GET blobs")
	assert.Equal(t, 4, blobGets, "config and three layers fetched once each")

	assert.Equal(t, Hit, pullAll(t, e.p, img, "v1"), "second pull is a hit after a HEAD revalidation")
	assert.Equal(t, blobGets, e.up.Requests("GET blobs"), "hits never fetch blobs again")
	assert.Equal(t, heads+1, e.up.Requests("HEAD manifests"), "a cached tag is revalidated with HEAD")

	e.up.Stop()
	e.restart(t)
	assert.Equal(t, Stale, pullAll(t, e.p, img, "v1"), "after a restart with upstream gone the cached tag is served stale")
	d, err := img.Digest()
	require.NoError(t, err)
	m, err := e.p.Manifest(t.Context(), testRegistry, "app", d.String())
	require.NoError(t, err)
	assert.Equal(t, Hit, m.Source, "manifests by digest never need upstream")
	assert.Equal(t, 1.0, testutil.ToFloat64(e.p.metrics.stale.WithLabelValues(testRegistry, upstream.ReasonRefused)))

	other := upstreamtest.RandomImage(t, 100, 1)
	od, err := other.Digest()
	require.NoError(t, err)
	_, err = e.p.Manifest(t.Context(), testRegistry, "app", od.String())
	var ue *upstream.Error
	require.ErrorAs(t, err, &ue, "an uncached manifest fails with upstream down")
	assert.True(t, ue.Unavailable())
	assert.Equal(t, upstream.ReasonRefused, ue.Reason)
}

func TestTagMovesUpstream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := upstreamtest.RandomImage(t, 512, 1)
	second := upstreamtest.RandomImage(t, 512, 1)
	e.up.Push(t, "app:latest", first)
	pullAll(t, e.p, first, "latest")

	e.up.Push(t, "app:latest", second)
	assert.Equal(t, Miss, pullAll(t, e.p, second, "latest"), "a moved tag is fetched again")

	e.up.Push(t, "app:latest", first)
	m, err := e.p.Manifest(t.Context(), testRegistry, "app", "latest")
	require.NoError(t, err)
	d, _ := first.Digest()
	assert.Equal(t, d.String(), m.Digest.String())
	assert.Equal(t, Hit, m.Source, "moving back to a cached manifest needs no GET")
}

// TestTTLSkipsRevalidation: a tag confirmed less than TagTTL ago is
// answered without asking upstream; at TagTTL it is revalidated again.
func TestTTLSkipsRevalidation(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const ttl = time.Hour
		e := newBubbleEnv(t)
		e.p.mirrors[testRegistry].TagTTL = ttl
		img := upstreamtest.RandomImage(t, 512, 1)
		e.up.Push(t, "app:v1", img)
		pullAll(t, e.p, img, "v1") // confirmed now
		heads := e.up.Requests("HEAD manifests")

		time.Sleep(ttl - time.Nanosecond)
		m, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
		require.NoError(t, err)
		assert.Equal(t, Hit, m.Source)
		assert.Equal(t, heads, e.up.Requests("HEAD manifests"), "within the TTL upstream is not asked")

		time.Sleep(time.Nanosecond)
		m, err = e.p.Manifest(t.Context(), testRegistry, "app", "v1")
		require.NoError(t, err)
		assert.Equal(t, Hit, m.Source)
		assert.Equal(t, heads+1, e.up.Requests("HEAD manifests"), "at the TTL the tag is revalidated")
		synctest.Wait() // the confirmation is recorded after the answer
		m, err = e.p.Manifest(t.Context(), testRegistry, "app", "v1")
		require.NoError(t, err)
		assert.Equal(t, heads+1, e.up.Requests("HEAD manifests"), "the revalidation started a new TTL")
	})
}

// TestUnavailableUpstreamServesStale: a hanging upstream's revalidation
// answers stale after exactly its budget; an upstream that answers 503 or
// 429 at once, at once. A miss meanwhile is unavailable, not not-found.
func TestUnavailableUpstreamServesStale(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode   upstreamtest.Mode
		reason string
		wait   time.Duration // how long the stale answer took
	}{
		{upstreamtest.Hang, upstream.ReasonTimeout, outageTimeouts.Revalidate},
		{upstreamtest.Status503, upstream.Reason5xx, 0},
		{upstreamtest.Status429, upstream.Reason429, 0},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				e := newBubbleEnv(t)
				img := upstreamtest.RandomImage(t, 1024, 2)
				e.up.Push(t, "app:v1", img)
				pullAll(t, e.p, img, "v1")
				e.reopenAt(t, e.up.URL, upstream.BreakerConfig{})

				e.up.SetMode(tc.mode)
				start := time.Now()
				m, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
				require.NoError(t, err)
				assert.Equal(t, Stale, m.Source)
				assert.Equal(t, tc.wait, time.Since(start), "the stale answer took")
				assert.Equal(t, Stale, pullAll(t, e.p, img, "v1"))
				assert.Equal(t, 2.0, testutil.ToFloat64(e.p.metrics.stale.WithLabelValues(testRegistry, tc.reason)))

				_, err = e.p.Manifest(t.Context(), testRegistry, "app", "never-pushed")
				var ue *upstream.Error
				require.ErrorAs(t, err, &ue)
				assert.True(t, ue.Unavailable(), "a miss during an outage is unavailable, not not-found")
			})
		})
	}
}

// TestAnswersAboutContentArePassedOn: a 404 or a 401 is upstream's answer
// about the content, passed on, never served stale. In a bubble with the
// short revalidation budget: the 401 takes no time however busy the
// machine (it used to overrun 500 ms and be served stale one run in three).
func TestAnswersAboutContentArePassedOn(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newBubbleEnv(t)
		img := upstreamtest.RandomImage(t, 512, 1)
		e.up.Push(t, "app:v1", img)
		pullAll(t, e.p, img, "v1")
		e.reopenAt(t, e.up.URL, upstream.BreakerConfig{})

		_, err := e.p.Manifest(t.Context(), testRegistry, "app", "v2")
		var ue *upstream.Error
		require.ErrorAs(t, err, &ue)
		assert.Equal(t, upstream.ReasonNotFound, ue.Reason)

		e.up.SetMode(upstreamtest.Unauthorized)
		start := time.Now()
		_, err = e.p.Manifest(t.Context(), testRegistry, "app", "v1")
		require.ErrorAs(t, err, &ue, "a cached tag upstream now refuses is not served stale")
		assert.Equal(t, 401, ue.Status)
		assert.False(t, ue.Unavailable())
		assert.Equal(t, time.Duration(0), time.Since(start), "upstream's answer, not the budget running out")
	})
}

func TestCorruptUpstreamStoresNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := upstreamtest.RandomImage(t, 64<<10, 1)
	e.up.Push(t, "app:v1", img)
	e.up.SetMode(upstreamtest.CorruptBodies)

	md, _ := img.Digest()
	_, err := e.p.Manifest(t.Context(), testRegistry, "app", md.String())
	require.ErrorIs(t, err, ErrDigestMismatch)
	_, err = e.store.GetManifest(digest.Digest(md.String()))
	assert.ErrorIs(t, err, cache.ErrNotFound)

	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	size, err := layers[0].Size()
	require.NoError(t, err)
	b, err := e.p.Blob(t.Context(), testRegistry, "app", digest.Digest(ld.String()), true)
	if err == nil {
		// The stream started before the digest could be checked: it must
		// fail short of the whole body.
		body, rerr := io.ReadAll(b.Content)
		b.Content.Close()
		assert.Less(t, int64(len(body)), size, "the client never receives the whole wrong body")
		err = rerr
	}
	require.ErrorIs(t, err, ErrDigestMismatch)
	_, err = e.store.Stat(digest.Digest(ld.String()))
	assert.ErrorIs(t, err, cache.ErrNotFound)

	e.up.SetMode(upstreamtest.OK)
	got, src := readBlob(t, e.p, ld)
	assert.Equal(t, Miss, src, "a failed fill is forgotten: the next request retries")
	assert.Len(t, got, int(size))
}

func TestConcurrentMissesShareOneDownload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := upstreamtest.RandomImage(t, 4<<20, 1)
	e.up.Push(t, "app:v1", img)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()

	const clients = 16
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() { readBlob(t, e.p, ld) })
	}
	wg.Wait()
	assert.Equal(t, 1, e.up.Requests("GET blobs"), "one upstream fetch for %d clients", clients)
	assert.Equal(t, 0.0, testutil.ToFloat64(e.p.metrics.fillWaiters), "every reader was counted out")
}

func TestFillOutlivesItsClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	d, _ := e.pushLayer(t, 1<<20)

	ctx, cancel := context.WithCancel(t.Context())
	b, err := e.p.Blob(ctx, testRegistry, "app", d, true)
	require.NoError(t, err)
	cancel()
	_, err = io.ReadAll(b.Content)
	b.Content.Close()
	require.True(t, err == nil || errors.Is(err, context.Canceled))

	require.Eventually(t, func() bool { _, err := e.store.Stat(d); return err == nil }, 10*time.Second, 10*time.Millisecond,
		"the download finishes without its client")
	_, src := readBlob(t, e.p, d)
	assert.Equal(t, Hit, src)
}

func TestMetricsLint(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := upstreamtest.RandomImage(t, 512, 1)
	e.up.Push(t, "app:v1", img)
	pullAll(t, e.p, img, "v1")
	problems, err := testutil.GatherAndLint(e.reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
}
