package cache

import (
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
