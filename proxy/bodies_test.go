package proxy

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// bigManifest stores an image manifest of about size bytes (a large
// annotation) and returns its digest.
func bigManifest(t *testing.T, store *cache.Store, size int) digest.Digest {
	t.Helper()
	cfg := digest.FromString("config")
	body := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":6},"layers":[],`+
		`"annotations":{"pad":"%s"}}`, cfg, strings.Repeat("x", size)))
	d := digest.FromBytes(body)
	_, err := store.PutManifest(cache.Manifest{Digest: d, MediaType: "application/vnd.oci.image.manifest.v1+json", Body: body, Refs: []digest.Digest{cfg}})
	require.NoError(t, err)
	return d
}

// TestConcurrentManifestHitsShareOneBuffer: 100 concurrent GETs of a 4 MiB
// cached manifest used to read and copy it 100 times (641 MiB peak); now
// they share one verified buffer.
func TestConcurrentManifestHitsShareOneBuffer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	d := bigManifest(t, e.store, 4<<20)
	const clients = 100
	answers := make([]*Manifest, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			m, err := e.p.Manifest(t.Context(), testRegistry, "app", d.String())
			assert.NoError(t, err)
			answers[i] = m
		})
	}
	wg.Wait()
	first := unsafe.SliceData(answers[0].Body)
	for _, m := range answers {
		require.NotNil(t, m)
		assert.Equal(t, Hit, m.Source)
		assert.Equal(t, first, unsafe.SliceData(m.Body), "one buffer for every client")
	}
	assert.Equal(t, d, digest.FromBytes(answers[0].Body))
}

func TestManifestBodiesStayWithinTheirBudget(t *testing.T) {
	t.Parallel()
	b := newBodies(8 << 10)
	load := func(d digest.Digest) (cache.Manifest, error) {
		return cache.Manifest{Digest: d, Body: make([]byte, 1<<10)}, nil
	}
	for i := range 20 {
		_, err := b.get(digest.FromString(fmt.Sprint(i)), 0, load)
		require.NoError(t, err)
		assert.LessOrEqual(t, b.size, int64(8<<10))
	}
	_, ok := b.lookup(digest.FromString("19"), 0)
	assert.True(t, ok, "the most recent stays")
	_, ok = b.lookup(digest.FromString("0"), 0)
	assert.False(t, ok, "the oldest went")

	huge := digest.FromString("huge")
	_, err := b.get(huge, 0, func(d digest.Digest) (cache.Manifest, error) {
		return cache.Manifest{Digest: d, Body: make([]byte, 2<<10)}, nil
	})
	require.NoError(t, err)
	_, ok = b.lookup(huge, 0)
	assert.False(t, ok, "a manifest over an eighth of the budget is served but not kept")
}

// TestEvictedManifestIsNotAnsweredFromMemory: once eviction removed a
// manifest, its copy in memory is gone too: the next request fetches and
// stores it again (a miss), instead of a hit nothing on disk backs.
func TestEvictedManifestIsNotAnsweredFromMemory(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := upstreamtest.RandomImage(t, 1024, 1)
	e.up.Push(t, "app:v1", img)
	d, err := img.Digest()
	require.NoError(t, err)
	ref := d.String()
	for range 2 { // the second answer comes from memory
		_, err := e.p.Manifest(t.Context(), testRegistry, "app", ref)
		require.NoError(t, err)
	}
	_, err = e.store.Evict(t.Context(), cache.EvictOptions{MaxSize: 1, KeepAccessedAfter: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	_, err = e.store.GetManifest(digest.Digest(ref))
	require.ErrorIs(t, err, cache.ErrNotFound, "evicted")

	m, err := e.p.Manifest(t.Context(), testRegistry, "app", ref)
	require.NoError(t, err)
	assert.Equal(t, Miss, m.Source, "fetched again, not a hit from memory")
	_, err = e.store.GetManifest(digest.Digest(ref))
	assert.NoError(t, err, "and stored again")
}
