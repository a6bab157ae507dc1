package maintenance

import (
	"io"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/lifeboat-dev/lifeboat/proxy"
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
	dir   string
	store *cache.Store
	p     *proxy.Proxy
	svc   *Service
	reg   *prometheus.Registry
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{up: upstreamtest.Start(t), dir: t.TempDir()}
	store, err := cache.Open(e.dir, cache.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	e.store = store
	e.open(t, e.up.URL, upstream.BreakerConfig{}, Options{})
	return e
}

// open builds proxy and service over the env's store, with its upstream
// reached at url (the cache is keyed by registry name, so what was cached
// stays cached).
func (e *env) open(t *testing.T, url string, breaker upstream.BreakerConfig, opts Options) {
	t.Helper()
	c, err := upstream.New(upstream.Config{
		Name: testRegistry, URL: url, Breaker: breaker,
		// Its outages are 503s, never a hang: budgets no busy machine
		// overruns, so an answer is never served stale for being late.
		Timeouts: upstream.Timeouts{Revalidate: 10 * time.Second, Request: 10 * time.Second, BodyStall: 10 * time.Second},
	}, upstream.Options{})
	require.NoError(t, err)
	e.p, err = proxy.New(e.store, proxy.Options{Upstreams: []proxy.Upstream{{Client: c}}})
	require.NoError(t, err)
	t.Cleanup(e.p.Close)
	e.reg = prometheus.NewPedanticRegistry()
	opts.Proxy, opts.Upstreams, opts.Registerer = e.p, []*upstream.Client{c}, e.reg
	e.svc = New(e.store, opts)
}

// pull reads an image's manifest by tag and every blob it refers to.
func (e *env) pull(t *testing.T, tag string) {
	t.Helper()
	m, err := e.p.Manifest(t.Context(), testRegistry, "app", tag)
	require.NoError(t, err)
	refs, _, err := cache.ParseManifest(m.Body)
	require.NoError(t, err)
	for _, d := range refs {
		b, err := e.p.Blob(t.Context(), testRegistry, "app", d, true)
		require.NoError(t, err)
		_, err = io.Copy(io.Discard, b.Content)
		require.NoError(t, err)
		require.NoError(t, b.Content.Close())
	}
}

func TestPrefetchFetchesOnlyTheRequestedPlatformsAndPins(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 := v1.Platform{OS: "linux", Architecture: "arm64"}
	idx := upstreamtest.MultiArchIndex(t, 4096, amd64, arm64)
	e.up.Push(t, "app:multi", idx)

	items := []PrefetchItem{{Ref: testRegistry + "/app:multi", Platforms: []string{"linux/arm64"}}}
	e.open(t, e.up.URL, upstream.BreakerConfig{}, Options{Prefetch: items})
	require.NoError(t, e.svc.PrefetchAll(t.Context()))
	assert.Equal(t, 1.0, testutil.ToFloat64(e.svc.metrics.prefetch.WithLabelValues("ok")))

	im, err := idx.IndexManifest()
	require.NoError(t, err)
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		require.NoError(t, err)
		layers, _ := img.Layers()
		ld, _ := layers[0].Digest()
		_, err = e.store.Stat(digest.Digest(ld.String()))
		if desc.Platform.Architecture == "arm64" {
			assert.NoError(t, err, "the requested platform's layers are cached")
		} else {
			assert.ErrorIs(t, err, cache.ErrNotFound, "other platforms are not fetched")
		}
	}
	pins, err := e.store.Pins()
	require.NoError(t, err)
	require.Len(t, pins, 1)
	idxDigest, _ := idx.Digest()
	assert.Equal(t, idxDigest.String(), pins[0].Digest.String())

	// An outage keeps the pin; dropping the item from the list removes it.
	e.up.SetMode(upstreamtest.Status503)
	require.NoError(t, e.svc.PrefetchAll(t.Context()), "a cached pinned image prefetches (stale) during an outage")
	pins, _ = e.store.Pins()
	assert.Len(t, pins, 1)
	e.open(t, e.up.URL, upstream.BreakerConfig{}, Options{})
	require.NoError(t, e.svc.PrefetchAll(t.Context()))
	pins, _ = e.store.Pins()
	assert.Empty(t, pins)
}

func TestPrefetchAndPinThenUnpin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := upstreamtest.RandomImage(t, 1024, 2)
	e.up.Push(t, "app:v1", img)
	var lines []string
	res, err := e.svc.PrefetchAndPin(t.Context(), PrefetchItem{Ref: testRegistry + "/app:v1"}, true, func(l string) { lines = append(lines, l) })
	require.NoError(t, err)
	d, _ := img.Digest()
	assert.Equal(t, d.String(), res.Digest.String())
	assert.Equal(t, 3, res.Blobs, "config and two layers")
	assert.NotEmpty(t, lines)
	pins, _ := e.store.Pins()
	require.Len(t, pins, 1)
	assert.Equal(t, AdminPinSource, pins[0].Source)

	found, err := e.svc.Unpin(testRegistry + "/app:v1")
	require.NoError(t, err)
	assert.True(t, found)
	found, err = e.svc.Unpin(testRegistry + "/app:v1")
	require.NoError(t, err)
	assert.False(t, found)

	_, err = e.svc.PrefetchAndPin(t.Context(), PrefetchItem{Ref: "elsewhere.test/app:v1"}, true, nil)
	assert.ErrorIs(t, err, proxy.ErrUnknownRegistry)
}

func TestEvictionKeepsRecentContentWhileACircuitIsOpen(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := upstreamtest.RandomImage(t, 64<<10, 2)
	e.up.Push(t, "app:v1", img)
	e.pull(t, "v1")
	later := func(d time.Duration) func() time.Time { return func() time.Time { return time.Now().Add(d) } }
	eviction := EvictionOptions{MaxSize: 1}

	// Content accessed an hour ago is old enough for normal eviction, but
	// not while the circuit is open.
	e.open(t, "http://127.0.0.1:1", upstream.BreakerConfig{Failures: 1}, Options{Eviction: eviction, Now: later(time.Hour)})
	_, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1") // opens the circuit
	require.NoError(t, err)
	require.True(t, e.svc.Outage())
	r, err := e.svc.Evict(t.Context(), false)
	require.NoError(t, err)
	assert.Empty(t, r.Removed, "during an outage nothing used in the last day is evicted, even over the cap")

	d, _ := img.Digest()
	e.open(t, e.up.URL, upstream.BreakerConfig{}, Options{Eviction: eviction, Now: later(2 * time.Hour)})
	r, err = e.svc.Evict(t.Context(), true)
	require.NoError(t, err)
	assert.NotEmpty(t, r.Removed, "a dry run reports what the cap would remove")
	assert.Equal(t, 0.0, testutil.ToFloat64(e.svc.metrics.evictionRuns), "a dry run is not counted")
	_, err = e.store.Stat(digest.Digest(d.String()))
	require.NoError(t, err, "a dry run removes nothing")

	r, err = e.svc.Evict(t.Context(), false)
	require.NoError(t, err)
	assert.NotEmpty(t, r.Removed, "with upstream healthy, the cap applies")
	_, err = e.store.Stat(digest.Digest(d.String()))
	assert.ErrorIs(t, err, cache.ErrNotFound)
	assert.Equal(t, 1.0, testutil.ToFloat64(e.svc.metrics.evictionRuns))
	assert.Equal(t, float64(len(r.Removed)), testutil.ToFloat64(e.svc.metrics.evictedBlobs.WithLabelValues("lru"))+
		testutil.ToFloat64(e.svc.metrics.evictedBlobs.WithLabelValues("orphan")))
}
