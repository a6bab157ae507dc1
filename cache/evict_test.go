package cache

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// clock is a settable time for access times.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// putImage stores a manifest referring to layers (given as contents) and
// tags it; it returns the manifest digest and the layer digests.
func putImage(t *testing.T, s *Store, tag string, layers ...string) (digest.Digest, []digest.Digest) {
	t.Helper()
	var ds []digest.Digest
	var descs []string
	for _, l := range layers {
		d := digest.FromString(l)
		if _, err := s.Stat(d); err != nil {
			d = ingest(t, s, []byte(l))
		}
		ds = append(ds, d)
		descs = append(descs, fmt.Sprintf(`{"digest":%q}`, d))
	}
	body := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[%s]}`, strings.Join(descs, ",")))
	m := Manifest{Digest: digest.FromBytes(body), MediaType: "application/vnd.oci.image.manifest.v1+json", Body: body, Refs: ds}
	_, err := s.PutManifest(m)
	require.NoError(t, err)
	require.NoError(t, s.PutTag(TagKey{Registry: "r", Repo: "app", Tag: tag}, Tag{Digest: m.Digest}))
	return m.Digest, ds
}

func stored(s *Store, d digest.Digest) bool {
	_, err := s.Stat(d)
	return err == nil
}

func TestEvictionByImageLRUKeepsSharedLayersAndPins(t *testing.T) {
	t.Parallel()
	c := &clock{t: time.Unix(1_000_000, 0)}
	s, err := Open(t.TempDir(), Options{Now: c.now})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })

	layer := func(name string) string { return name + strings.Repeat("x", 1000) }
	orphan := ingest(t, s, []byte(layer("orphan")))
	c.t = c.t.Add(time.Minute)
	oldest, oldestLayers := putImage(t, s, "oldest", layer("shared"), layer("only-oldest"))
	c.t = c.t.Add(time.Hour)
	pinned, pinnedLayers := putImage(t, s, "pinned", layer("only-pinned"))
	require.NoError(t, s.AddPin("prefetch", Pin{Ref: "r/app:pinned", Digest: pinned}))
	c.t = c.t.Add(time.Hour)
	middle, middleLayers := putImage(t, s, "middle", layer("shared"), layer("only-middle"))
	c.t = c.t.Add(time.Hour)
	newest, newestLayers := putImage(t, s, "newest", layer("only-newest"))

	st, err := s.Stats()
	require.NoError(t, err)
	// A cap that needs 2000 bytes freed: the orphan and one image.
	maxSize := int64(float64(st.Bytes-2000) / lowWater)
	r, err := s.Evict(t.Context(), EvictOptions{MaxSize: maxSize, KeepAccessedAfter: c.t.Add(-30 * time.Minute)})
	require.NoError(t, err)
	assert.LessOrEqual(t, r.SizeAfter, int64(lowWater*float64(maxSize)), "back under the low-water mark")

	assert.False(t, stored(s, orphan), "orphans go first")
	assert.False(t, stored(s, oldest), "the least recently used image goes")
	assert.False(t, stored(s, oldestLayers[1]), "with the layers only it used")
	assert.True(t, stored(s, oldestLayers[0]), "a layer another image still uses stays")
	assert.True(t, stored(s, pinned) && stored(s, pinnedLayers[0]), "pinned images are never evicted")
	assert.True(t, stored(s, newest) && stored(s, newestLayers[0]), "recently accessed content is kept")
	_, err = s.GetTag(TagKey{Registry: "r", Repo: "app", Tag: "oldest"})
	assert.ErrorIs(t, err, ErrNotFound, "the tags of an evicted image go with it")
	assert.True(t, stored(s, middle) && stored(s, middleLayers[1]), "a more recently used image stays while enough was freed")
	for _, e := range r.Removed {
		assert.NoFileExists(t, s.blobPath(e.Digest))
	}
}

func TestEvictionDryRunAndNothingToDo(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	m, _ := putImage(t, s, "a", "layer one", "layer two")
	r, err := s.Evict(t.Context(), EvictOptions{MaxSize: 1 << 30})
	require.NoError(t, err)
	assert.Empty(t, r.Removed, "under the cap nothing is evicted")

	r, err = s.Evict(t.Context(), EvictOptions{MaxSize: 1, DryRun: true, KeepAccessedAfter: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	assert.NotEmpty(t, r.Removed, "a dry run reports")
	assert.True(t, stored(s, m), "and removes nothing")
}

func TestEvictionKeepsEverythingAccessedAfterTheCutoff(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	m, layers := putImage(t, s, "a", "layer one", "layer two")
	r, err := s.Evict(t.Context(), EvictOptions{MaxSize: 1, KeepAccessedAfter: time.Now().Add(-24 * time.Hour)})
	require.NoError(t, err)
	assert.Empty(t, r.Removed, "during an outage nothing recently used goes, even over the cap")
	assert.True(t, stored(s, m) && stored(s, layers[0]))
}

func TestVerifyFindsAndRepairsDamage(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	good := ingest(t, s, []byte("good bytes"))
	bad := ingest(t, s, []byte("bytes that rot"))
	require.NoError(t, os.WriteFile(s.blobPath(bad), []byte("bytes that ROT"), 0o644))

	r, err := s.Verify(t.Context(), false)
	require.NoError(t, err)
	assert.Equal(t, 2, r.Checked)
	require.Len(t, r.Damaged, 1)
	assert.Equal(t, bad, r.Damaged[0].Digest)
	assert.True(t, stored(s, bad), "without repair nothing is removed")

	r, err = s.Verify(t.Context(), true)
	require.NoError(t, err)
	require.Len(t, r.Damaged, 1)
	assert.True(t, r.Damaged[0].Removed)
	assert.False(t, stored(s, bad), "repair removes it so it is fetched again")
	assert.True(t, stored(s, good))
}

func TestImagesListing(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	m, _ := putImage(t, s, "v1", "layer one", "layer two")
	require.NoError(t, s.AddPin("prefetch", Pin{Ref: "r/app:v1", Digest: m}))
	imgs, err := s.Images()
	require.NoError(t, err)
	require.Len(t, imgs, 1)
	assert.Equal(t, m, imgs[0].Digest)
	assert.Equal(t, []string{"r/app:v1"}, imgs[0].Tags)
	assert.Equal(t, []string{"r/app:v1"}, imgs[0].Pinned)
	assert.Equal(t, 3, imgs[0].Blobs)
	st, err := s.Stats()
	require.NoError(t, err)
	assert.Equal(t, st.Bytes, st.PinnedBytes)
}

// TestEvictionRacingCommits evicts everything, again and again, while
// images sharing layers keep being committed and re-committed: no index row
// may lose its file. (A tag written just after its manifest was evicted may
// point at a missing manifest; the proxy then fetches the tag again.)
func TestEvictionRacingCommits(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, err := s.Evict(t.Context(), EvictOptions{MaxSize: 600, KeepAccessedAfter: time.Now().Add(time.Hour)})
			assert.NoError(t, err)
		}
	}()
	for i := range 200 {
		putImage(t, s, fmt.Sprintf("v%d", i%7), "shared layer", fmt.Sprintf("layer %d", i%13))
	}
	close(stop)
	<-done

	r, err := s.Verify(t.Context(), false)
	require.NoError(t, err)
	assert.Empty(t, r.Damaged, "every indexed blob still has its file")
	assert.Positive(t, r.Checked)
}

// TestEvictionUnderLimitsTakesNoWriteLock: a pass that finds nothing to
// evict plans in a read transaction and neither writes nor waits for
// commits, so the periodic pass does not stall them.
func TestEvictionUnderLimitsTakesNoWriteLock(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	putImage(t, s, "a", "layer one", "layer two")
	nothingToDo := map[string]EvictOptions{
		"under the limits":         {MaxSize: 1 << 40, MinFree: 1},
		"over the cap, all in use": {MaxSize: 1, KeepAccessedAfter: time.Now().Add(-time.Hour)},
	}
	for name, opts := range nothingToDo {
		before := s.db.Stats()
		r, err := s.Evict(t.Context(), opts)
		require.NoError(t, err, name)
		require.Empty(t, r.Removed, name)
		after := s.db.Stats()
		diff := after.Sub(&before)
		require.Equal(t, 1, diff.TxN, "%s: planned in one read transaction", name)
		require.Zero(t, diff.TxStats.GetWrite(), "%s: no write transaction committed, nothing fsynced", name)
	}

	// A commit in flight holds commitMu shared and then bbolt's writer
	// lock; a pass with nothing to do waits for neither (if it did, this
	// would deadlock).
	s.commitMu.RLock()
	tx, err := s.db.Begin(true)
	require.NoError(t, err)
	for name, opts := range nothingToDo {
		_, err := s.Evict(t.Context(), opts)
		assert.NoError(t, err, name)
	}
	require.NoError(t, tx.Rollback())
	s.commitMu.RUnlock()
}

// TestEvictionReportsAnUnreadableDiskSpace: when statfs fails the pass says
// so instead of silently dropping the free-disk floor, and still applies the
// size cap.
func TestEvictionReportsAnUnreadableDiskSpace(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	s := openStore(t, dir)
	m, layers := putImage(t, s, "a", "layer one", "layer two")
	require.NoError(t, os.RemoveAll(dir)) // statfs of the data directory fails from now on

	r, err := s.Evict(t.Context(), EvictOptions{MinFree: 1 << 62, KeepAccessedAfter: time.Now().Add(time.Hour)})
	require.ErrorIs(t, err, fs.ErrNotExist, "a floor that cannot be checked is an error")
	assert.Contains(t, err.Error(), "free-disk floor not applied")
	assert.Equal(t, int64(-1), r.FreeBefore)
	assert.Empty(t, r.Removed)

	r, err = s.Evict(t.Context(), EvictOptions{MaxSize: 1, MinFree: 1 << 62, KeepAccessedAfter: time.Now().Add(time.Hour)})
	require.ErrorIs(t, err, fs.ErrNotExist)
	assert.Len(t, r.Removed, 3, "the size cap is still applied")
	assert.False(t, stored(s, m) || stored(s, layers[0]) || stored(s, layers[1]))
}

// TestEvictionStopsWhenCtxEnds: a pass stopped while planning removes
// nothing and says so.
func TestEvictionStopsWhenCtxEnds(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	m, layers := putImage(t, s, "a", "layer one", "layer two")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for _, dry := range []bool{false, true} {
		r, err := s.Evict(ctx, EvictOptions{MaxSize: 1, KeepAccessedAfter: time.Now().Add(time.Hour), DryRun: dry})
		require.ErrorIs(t, err, context.Canceled)
		assert.Empty(t, r.Removed)
		assert.Positive(t, r.SizeBefore, "the report so far")
		assert.Equal(t, r.SizeBefore, r.SizeAfter)
		assert.Equal(t, int64(3), r.ObjectsAfter)
	}
	assert.True(t, stored(s, m) && stored(s, layers[0]) && stored(s, layers[1]))
}

// TestEvictionFinishesAnInterruptedUnlink: rows removed by a pass stopped
// before it unlinked their files leave tombstones; the next pass unlinks
// those files, except one committed again meanwhile.
func TestEvictionFinishesAnInterruptedUnlink(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	left := ingest(t, s, []byte("evicted, its file left behind"))
	again := []byte("evicted, then committed again")
	back := ingest(t, s, again)
	removed := map[digest.Digest]bool{left: true, back: true}

	s.commitMu.Lock()
	require.NoError(t, s.db.Update(func(tx *bolt.Tx) error { return s.removeRows(tx, removed, &EvictReport{}) }))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := s.unlink(ctx, removed)
	s.commitMu.Unlock()
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "2 of 2 files not unlinked")
	assert.FileExists(t, s.blobPath(left))
	ingest(t, s, again)

	r, err := s.Evict(t.Context(), EvictOptions{MaxSize: 1 << 40})
	require.NoError(t, err)
	assert.Empty(t, r.Removed, "nothing newly evicted")
	assert.NoFileExists(t, s.blobPath(left), "the next pass unlinks what the stopped one left")
	assert.True(t, stored(s, back), "a blob committed again keeps its row")
	got, err := os.ReadFile(s.blobPath(back))
	require.NoError(t, err, "and its file")
	assert.Equal(t, again, got)
	require.NoError(t, s.db.View(func(tx *bolt.Tx) error {
		assert.False(t, hasTombstones(tx), "no tombstone is left")
		return nil
	}))
}
