package proxy

import (
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPrefetchFetchesOnlyTheRequestedPlatformsAndPins(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 := v1.Platform{OS: "linux", Architecture: "arm64"}
	idx := upstreamtest.MultiArchIndex(t, 4096, amd64, arm64)
	e.up.Push(t, "app:multi", idx)

	items := []PrefetchItem{{Ref: testRegistry + "/app:multi", Platforms: []string{"linux/arm64"}}}
	require.NoError(t, e.p.PrefetchAll(t.Context(), items))

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
	e.p.upstreams[testRegistry].cfg.TagTTL = 0
	require.NoError(t, e.p.PrefetchAll(t.Context(), items), "a cached pinned image prefetches (stale) during an outage")
	pins, _ = e.store.Pins()
	assert.Len(t, pins, 1)
	require.NoError(t, e.p.PrefetchAll(t.Context(), nil))
	pins, _ = e.store.Pins()
	assert.Empty(t, pins)
}

func TestEvictionKeepsRecentContentWhileACircuitIsOpen(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := upstreamtest.RandomImage(t, 64<<10, 2)
	e.up.Push(t, "app:v1", img)
	pullAll(t, e.p, img, "v1")
	// Content accessed an hour ago: old enough for normal eviction.
	e.p.now = func() time.Time { return time.Now().Add(time.Hour) }
	opts := EvictionOptions{MaxSize: 1}

	e.reopenAt(t, "http://127.0.0.1:1", BreakerConfig{Failures: 1})
	e.p.now = func() time.Time { return time.Now().Add(time.Hour) }
	_, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1") // opens the circuit
	require.NoError(t, err)
	require.True(t, e.p.AnyCircuitOpen())
	r, err := e.p.Evict(opts, false)
	require.NoError(t, err)
	assert.Empty(t, r.Removed, "during an outage nothing used in the last day is evicted, even over the cap")

	d, _ := img.Digest()
	e.reopenAt(t, e.up.URL, BreakerConfig{})
	e.p.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	r, err = e.p.Evict(opts, false)
	require.NoError(t, err)
	assert.NotEmpty(t, r.Removed, "with upstream healthy, the cap applies")
	_, err = e.store.Stat(digest.Digest(d.String()))
	assert.ErrorIs(t, err, cache.ErrNotFound)
}
