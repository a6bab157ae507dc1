package cache

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// tagListRowSize is the bytes a repository's tag list takes in the index.
func tagListRowSize(t *testing.T, s *Store, registry, repo string) int {
	t.Helper()
	n := -1
	require.NoError(t, s.db.View(func(tx *bolt.Tx) error {
		if v := bucket(tx, bucketTagLists).Get([]byte(repoKey(registry, repo))); v != nil {
			n = len(v)
		}
		return nil
	}))
	return n
}

func manyTags(n, length int) []string {
	tags := make([]string, n)
	for i := range tags {
		tags[i] = fmt.Sprintf("%0*d", length, i)
	}
	return tags
}

// TestTagListPastTheCapIsNotStoredWhole: a list longer than the bounds, in
// tags or in bytes, keeps its first entries and says it is truncated.
func TestTagListPastTheCapIsNotStoredWhole(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	fetched := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		name      string
		tags      []string
		kept      int
		truncated bool
	}{
		{"within the bounds", manyTags(1000, 8), 1000, false},
		{"exactly the tag bound", manyTags(MaxTagListTags, 6), MaxTagListTags, false},
		{"past the tag bound", manyTags(MaxTagListTags+5, 6), MaxTagListTags, true},
		{"past the byte bound", manyTags(2000, 4<<10), 1023, true}, // 4 MiB of 4 KiB tags, less the row's own bytes
	} {
		require.NoError(t, s.PutTagList("r", tc.name, TagList{Tags: tc.tags, Fetched: fetched}), tc.name)
		l, err := s.GetTagList("r", tc.name)
		require.NoError(t, err, tc.name)
		assert.Len(t, l.Tags, tc.kept, tc.name)
		assert.Equal(t, tc.tags[:tc.kept], l.Tags, "%s: the first tags are kept", tc.name)
		assert.Equal(t, tc.truncated, l.Truncated, tc.name)
		assert.True(t, l.Fetched.Equal(fetched), tc.name)
		assert.LessOrEqual(t, tagListRowSize(t, s, "r", tc.name), MaxTagListBytes, tc.name)
	}
}

// TestEvictionRemovesStaleTagLists: a tag list not fetched for
// TagListMaxAge before the keep cutoff goes whatever the limits (a row
// written before the row format counts as never fetched); a recent one
// stays; the zero options remove none.
func TestEvictionRemovesStaleTagLists(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	s := openStore(t, t.TempDir())
	require.NoError(t, s.PutTagList("r", "old", TagList{Tags: []string{"a"}, Fetched: now.Add(-TagListMaxAge - time.Hour)}))
	require.NoError(t, s.PutTagList("r", "recent", TagList{Tags: []string{"b"}, Fetched: now.Add(-time.Hour)}))
	legacy := `{"tags":["` + strings.Repeat("x", 1000) + `"],"fetched":"2020-01-01T00:00:00Z"}`
	require.NoError(t, s.db.Update(func(tx *bolt.Tx) error {
		return bucket(tx, bucketTagLists).Put([]byte("r/legacy"), []byte(legacy))
	}))
	l, err := s.GetTagList("r", "legacy")
	require.NoError(t, err, "a row written before the format is still read")
	assert.Len(t, l.Tags, 1)

	r, err := s.Evict(t.Context(), EvictOptions{MaxSize: 1 << 40})
	require.NoError(t, err)
	assert.Empty(t, r.TagLists, "the zero cutoff keeps every tag list")

	st, err := s.Stats()
	require.NoError(t, err)
	r, err = s.Evict(t.Context(), EvictOptions{MaxSize: 1 << 40, KeepAccessedAfter: now.Add(-10 * time.Minute)})
	require.NoError(t, err)
	assert.Equal(t, []string{"r/legacy", "r/old"}, r.TagLists)
	assert.Empty(t, r.Removed)
	assert.Equal(t, st.Bytes, r.SizeBefore, "tag lists count in the store's size")
	assert.Greater(t, r.Freed(), int64(len(legacy)), "their bytes are freed")
	for _, repo := range []string{"old", "legacy"} {
		_, err = s.GetTagList("r", repo)
		assert.ErrorIs(t, err, ErrNotFound, repo)
	}
	_, err = s.GetTagList("r", "recent")
	assert.NoError(t, err)
}

// TestEvictionTakesTagListsWithTheOrphans: over the cap, a tag list not
// fetched since the cutoff goes before any image; one fetched since stays.
func TestEvictionTakesTagListsWithTheOrphans(t *testing.T) {
	t.Parallel()
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s, err := Open(t.TempDir(), Options{Now: c.now})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	img, layers := putImage(t, s, "v1", "a layer")
	c.t = c.t.Add(time.Hour)
	cutoff := c.t.Add(-time.Minute)
	require.NoError(t, s.PutTagList("r", "unused", TagList{Tags: manyTags(1000, 64), Fetched: cutoff.Add(-time.Second)}))
	require.NoError(t, s.PutTagList("r", "listed", TagList{Tags: manyTags(1000, 64), Fetched: c.t}))

	st, err := s.Stats()
	require.NoError(t, err)
	maxSize := int64(float64(st.Bytes-60_000) / lowWater) // one list's worth
	r, err := s.Evict(t.Context(), EvictOptions{MaxSize: maxSize, KeepAccessedAfter: cutoff})
	require.NoError(t, err)
	assert.Equal(t, []string{"r/unused"}, r.TagLists)
	assert.Empty(t, r.Removed, "an older image outlives a tag list")
	assert.True(t, stored(s, img) && stored(s, layers[0]))
	_, err = s.GetTagList("r", "listed")
	assert.NoError(t, err, "a list fetched since the cutoff stays")
}

// TestTagMemoAgreesWithTheIndex: GetTag answers from memory what the index
// holds: after racing writes and reads of one tag, after more tags than
// the memo keeps, and after a reopen (which starts with an empty memo).
func TestTagMemoAgreesWithTheIndex(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	require.NoError(t, err)
	key := TagKey{Registry: "r", Repo: "app", Tag: "v1"}
	tag := func(i int) Tag {
		return Tag{Digest: digest.FromString(fmt.Sprint(i)), MediaType: "m", Confirmed: time.Unix(int64(i), 0).UTC()}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 50 {
			assert.NoError(t, s.PutTag(key, tag(i)))
		}
	}()
	for {
		select {
		case <-done:
		default:
			_, _ = s.GetTag(key) // fills the memo while the rows change
			continue
		}
		break
	}
	got, err := s.GetTag(key)
	require.NoError(t, err)
	assert.Equal(t, tag(49), got, "the last row written")

	for i := range maxMemoTags + 10 {
		s.tags.fill(TagKey{Registry: "r", Repo: "many", Tag: fmt.Sprint(i)}.String(), tag(i), s.tags.generation())
	}
	assert.LessOrEqual(t, len(s.tags.m), maxMemoTags, "the memo is bounded")
	got, err = s.GetTag(key)
	require.NoError(t, err)
	assert.Equal(t, tag(49), got, "a row the memo dropped is read from the index")
	require.NoError(t, s.Close())

	s, err = Open(dir, Options{})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	got, err = s.GetTag(key)
	require.NoError(t, err)
	assert.Equal(t, tag(49), got)
}

// indexedTag is the tag's row as the index has it (not the memo).
func indexedTag(t *testing.T, s *Store, key TagKey) (Tag, bool) {
	t.Helper()
	var tag Tag
	found := false
	require.NoError(t, s.db.View(func(tx *bolt.Tx) error {
		if raw := bucket(tx, bucketTags).Get([]byte(key.String())); raw != nil {
			found = true
			return json.Unmarshal(raw, &tag)
		}
		return nil
	}))
	return tag, found
}

// TestConfirmTagIsWrittenWithTheNextFlush: a confirmation is answered by
// GetTag at once and reaches the index with the next Flush (or Close), not
// one write per revalidation; a crash before loses it, and only it.
func TestConfirmTagIsWrittenWithTheNextFlush(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, key, d, t0 := storeWithTag(t, dir)

	for i := 1; i <= 100; i++ {
		require.NoError(t, s.ConfirmTag(key, d, t0.Add(time.Duration(i)*time.Second)))
	}
	t100 := t0.Add(100 * time.Second)
	got, err := s.GetTag(key)
	require.NoError(t, err)
	assert.Equal(t, Tag{Digest: d, MediaType: "m", Confirmed: t100}, got, "GetTag answers the latest confirmation")
	row, _ := indexedTag(t, s, key)
	assert.Equal(t, t0, row.Confirmed, "no index write per confirmation")

	require.NoError(t, s.Flush())
	row, _ = indexedTag(t, s, key)
	assert.Equal(t, Tag{Digest: d, MediaType: "m", Confirmed: t100}, row, "written by the flush")

	require.NoError(t, s.ConfirmTag(key, d, t0.Add(time.Hour)))
	require.NoError(t, s.ConfirmTag(key, d, t0.Add(time.Minute)), "an older confirmation")
	got, err = s.GetTag(key)
	require.NoError(t, err)
	assert.Equal(t, t0.Add(time.Hour), got.Confirmed, "an older confirmation does not move the time back")
	// A crash: the index is closed without the flush.
	require.NoError(t, s.db.Close())
	s, err = Open(dir, Options{})
	require.NoError(t, err)
	got, err = s.GetTag(key)
	require.NoError(t, err)
	assert.Equal(t, t100, got.Confirmed, "a crash loses the confirmations since the last flush")

	require.NoError(t, s.ConfirmTag(key, d, t0.Add(2*time.Hour)))
	require.NoError(t, s.Close())
	s, err = Open(dir, Options{})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	got, err = s.GetTag(key)
	require.NoError(t, err)
	assert.Equal(t, t0.Add(2*time.Hour), got.Confirmed, "Close flushes")
}

// TestConfirmTagNeverUndoesAMoveOrARemoval: a confirmation pending when the
// tag moves, is fetched again or is removed does not overwrite the newer
// row, nor bring a removed one back; a confirmation of a digest the tag no
// longer has is not recorded.
func TestConfirmTagNeverUndoesAMoveOrARemoval(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	t0 := time.Unix(1000, 0).UTC()
	moved := TagKey{Registry: "r", Repo: "app", Tag: "moved"}
	removed := TagKey{Registry: "r", Repo: "app", Tag: "removed"}
	d1, d2 := digest.FromString("1"), digest.FromString("2")
	require.NoError(t, s.PutTag(moved, Tag{Digest: d1, Confirmed: t0}))
	require.NoError(t, s.PutTag(removed, Tag{Digest: d1, Confirmed: t0}))

	require.NoError(t, s.ConfirmTag(moved, d1, t0.Add(time.Hour)))
	require.NoError(t, s.ConfirmTag(removed, d1, t0.Add(time.Hour)))
	// Then the tag moves (with an earlier time: a peer's answer), and the
	// other is removed as eviction removes tags.
	require.NoError(t, s.PutTag(moved, Tag{Digest: d2, Confirmed: t0.Add(time.Minute)}))
	require.NoError(t, s.db.Update(func(tx *bolt.Tx) error {
		s.tags.forget(removed.String())
		return bucket(tx, bucketTags).Delete([]byte(removed.String()))
	}))
	require.NoError(t, s.ConfirmTag(moved, d1, t0.Add(2*time.Hour)), "upstream said d1 before the move was recorded")
	require.NoError(t, s.Flush())

	row, _ := indexedTag(t, s, moved)
	assert.Equal(t, Tag{Digest: d2, Confirmed: t0.Add(time.Minute)}, row, "the move stands")
	got, err := s.GetTag(moved)
	require.NoError(t, err)
	assert.Equal(t, Tag{Digest: d2, Confirmed: t0.Add(time.Minute)}, got)
	_, found := indexedTag(t, s, removed)
	assert.False(t, found, "a removed tag is not brought back")
	_, err = s.GetTag(removed)
	assert.ErrorIs(t, err, ErrNotFound)
}

// TestConfirmTagWithoutTheMemoWritesAtOnce: a tag the memo dropped, or one
// past the bound on pending confirmations, is written at once (so memory
// stays bounded and nothing is lost).
func TestConfirmTagWithoutTheMemoWritesAtOnce(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	t0 := time.Unix(1000, 0).UTC()
	key := TagKey{Registry: "r", Repo: "app", Tag: "v1"}
	d := digest.FromString("v1")
	require.NoError(t, s.PutTag(key, Tag{Digest: d, Confirmed: t0}))
	s.tags.mu.Lock()
	delete(s.tags.m, key.String()) // as the memo drops a row past its bound
	s.tags.mu.Unlock()
	dropFromMemo := func() {
		s.tags.mu.Lock()
		delete(s.tags.m, key.String())
		s.tags.mu.Unlock()
	}
	require.NoError(t, s.ConfirmTag(key, d, t0.Add(time.Hour)))
	row, _ := indexedTag(t, s, key)
	assert.Equal(t, t0.Add(time.Hour), row.Confirmed, "written at once")
	dropFromMemo()
	require.NoError(t, s.ConfirmTag(key, digest.FromString("other"), t0.Add(2*time.Hour)))
	row, _ = indexedTag(t, s, key)
	assert.Equal(t, Tag{Digest: d, Confirmed: t0.Add(time.Hour)}, row, "a digest the row does not say is not recorded")
	dropFromMemo()
	require.NoError(t, s.ConfirmTag(key, d, t0.Add(time.Minute)))
	row, _ = indexedTag(t, s, key)
	assert.Equal(t, Tag{Digest: d, Confirmed: t0.Add(time.Hour)}, row, "an older confirmation is not recorded")

	for i := range maxMemoTags {
		k := TagKey{Registry: "r", Repo: "many", Tag: fmt.Sprint(i)}.String()
		s.tags.set(k, Tag{Digest: d, Confirmed: t0})
		require.True(t, s.tags.confirm(k, d, t0.Add(time.Second)))
	}
	k := TagKey{Registry: "r", Repo: "many", Tag: "one more"}
	require.NoError(t, s.PutTag(k, Tag{Digest: d, Confirmed: t0}))
	require.NoError(t, s.ConfirmTag(k, d, t0.Add(time.Hour)))
	assert.Len(t, s.tags.pendingConfirmations(), maxMemoTags, "pending confirmations are bounded")
	row, _ = indexedTag(t, s, k)
	assert.Equal(t, t0.Add(time.Hour), row.Confirmed, "past the bound, written at once")
}

// TestImagesShowPendingConfirmations: lifeboat ls shows a confirmation not
// yet flushed.
func TestImagesShowPendingConfirmations(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	m, _ := putImage(t, s, "v1", "layer")
	at := time.Unix(5000, 0).UTC()
	_, err := s.GetTag(TagKey{Registry: "r", Repo: "app", Tag: "v1"})
	require.NoError(t, err)
	require.NoError(t, s.ConfirmTag(TagKey{Registry: "r", Repo: "app", Tag: "v1"}, m, at))
	imgs, err := s.Images()
	require.NoError(t, err)
	require.Len(t, imgs, 1)
	assert.Equal(t, at, imgs[0].Confirmed.UTC())
}

// TestConfirmationsAndTheMemoAgree: the memo never answers an older time
// than the index has or will have once flushed — not after a read of the
// index that began before a confirmation, nor for a row it dropped and
// read again, nor when a row of the same digest is written with an older
// time — and the flush never writes over a newer row.
func TestConfirmationsAndTheMemoAgree(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	t0 := time.Unix(1000, 0).UTC()
	d := digest.FromString("v1")
	key := func(tag string) TagKey { return TagKey{Registry: "r", Repo: "app", Tag: tag} }
	getTag := func(k TagKey) Tag {
		t.Helper()
		got, err := s.GetTag(k)
		require.NoError(t, err)
		return got
	}

	// A read of the index begun before a confirmation does not put the
	// older time back.
	racing := key("racing").String()
	require.NoError(t, s.PutTag(key("racing"), Tag{Digest: d, Confirmed: t0}))
	gen := s.tags.generation()
	require.True(t, s.tags.confirm(racing, d, t0.Add(time.Hour)))
	s.tags.fill(racing, Tag{Digest: d, Confirmed: t0}, gen)
	assert.Equal(t, t0.Add(time.Hour), getTag(key("racing")).Confirmed)

	// Nor does one begun before a flush wrote the confirmation.
	flushing := key("flushing")
	require.NoError(t, s.PutTag(flushing, Tag{Digest: d, Confirmed: t0}))
	require.NoError(t, s.ConfirmTag(flushing, d, t0.Add(time.Hour)))
	gen = s.tags.generation()
	require.NoError(t, s.Flush())
	s.tags.mu.Lock()
	delete(s.tags.m, flushing.String())
	s.tags.mu.Unlock()
	s.tags.fill(flushing.String(), Tag{Digest: d, Confirmed: t0}, gen)
	assert.Equal(t, t0.Add(time.Hour), getTag(flushing).Confirmed)

	// A row the memo dropped while its confirmation is pending is read
	// again with it, before the flush and after.
	dropped := key("dropped")
	require.NoError(t, s.PutTag(dropped, Tag{Digest: d, Confirmed: t0}))
	require.NoError(t, s.ConfirmTag(dropped, d, t0.Add(time.Hour)))
	s.tags.mu.Lock()
	delete(s.tags.m, dropped.String())
	s.tags.mu.Unlock()
	assert.Equal(t, t0.Add(time.Hour), getTag(dropped).Confirmed, "before the flush")
	s.tags.mu.Lock()
	delete(s.tags.m, dropped.String())
	s.tags.mu.Unlock()
	_ = getTag(dropped)
	require.NoError(t, s.Flush())
	assert.Equal(t, t0.Add(time.Hour), getTag(dropped).Confirmed, "after the flush")

	// The same digest written with an older time (a peer's answer) while
	// a confirmation is pending: the flush writes the confirmation, and
	// the memo says so from the start.
	older := key("older")
	require.NoError(t, s.PutTag(older, Tag{Digest: d, Confirmed: t0}))
	require.NoError(t, s.ConfirmTag(older, d, t0.Add(2*time.Hour)))
	require.NoError(t, s.PutTag(older, Tag{Digest: d, Confirmed: t0.Add(time.Hour)}))
	assert.Equal(t, t0.Add(2*time.Hour), getTag(older).Confirmed)
	require.NoError(t, s.Flush())
	row, _ := indexedTag(t, s, older)
	assert.Equal(t, t0.Add(2*time.Hour), row.Confirmed)
	assert.Equal(t, t0.Add(2*time.Hour), getTag(older).Confirmed)

	// The same digest written with a newer time while a confirmation is
	// pending: the flush leaves the newer row.
	newer := key("newer")
	require.NoError(t, s.PutTag(newer, Tag{Digest: d, Confirmed: t0}))
	require.NoError(t, s.ConfirmTag(newer, d, t0.Add(time.Hour)))
	require.NoError(t, s.PutTag(newer, Tag{Digest: d, Confirmed: t0.Add(2 * time.Hour)}))
	require.NoError(t, s.Flush())
	row, _ = indexedTag(t, s, newer)
	assert.Equal(t, t0.Add(2*time.Hour), row.Confirmed, "the newer row stands")
	assert.Equal(t, t0.Add(2*time.Hour), getTag(newer).Confirmed)
}

// TestAFailedFlushKeepsItsConfirmations: a flush whose transaction fails
// puts its confirmations back for the next one.
func TestAFailedFlushKeepsItsConfirmations(t *testing.T) {
	t.Parallel()
	s, key, d, t0 := storeWithTag(t, t.TempDir())
	require.NoError(t, s.ConfirmTag(key, d, t0.Add(time.Hour)))
	require.NoError(t, s.db.Close())
	require.Error(t, s.Flush(), "the index is closed")
	assert.Equal(t, map[string]Tag{key.String(): {Digest: d, MediaType: "m", Confirmed: t0.Add(time.Hour)}}, s.tags.pendingConfirmations(), "put back")
}

// storeWithTag opens a store in dir (not closed at the end: the tests
// close it themselves) holding r/app:v1, confirmed at t0.
func storeWithTag(t *testing.T, dir string) (s *Store, key TagKey, d digest.Digest, t0 time.Time) {
	t.Helper()
	s, err := Open(dir, Options{})
	require.NoError(t, err)
	key = TagKey{Registry: "r", Repo: "app", Tag: "v1"}
	d = digest.FromString("v1")
	t0 = time.Unix(1000, 0).UTC()
	require.NoError(t, s.PutTag(key, Tag{Digest: d, MediaType: "m", Confirmed: t0}))
	return s, key, d, t0
}
