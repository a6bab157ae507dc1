package cache

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ingest(t testing.TB, s *Store, body []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(body)
	w, err := s.NewIngest(d, int64(len(body)))
	require.NoError(t, err)
	_, err = w.Write(body)
	require.NoError(t, err)
	require.NoError(t, w.Commit())
	return d
}

func TestIngestCommitThenRead(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	body := []byte("hello lifeboat")
	d := ingest(t, s, body)

	f, info, err := s.OpenBlob(d)
	require.NoError(t, err)
	defer f.Close()
	got, err := os.ReadFile(f.Name())
	require.NoError(t, err)
	assert.Equal(t, body, got)
	assert.Equal(t, int64(len(body)), info.Size)
	_, ok := s.LastAccess(d)
	assert.True(t, ok, "reading a blob records an access")
}

func TestIngestRejectsWrongBytes(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	d := digest.FromString("the real content")

	w, err := s.NewIngest(d, 16)
	require.NoError(t, err)
	_, err = w.Write([]byte("forged content!!"))
	require.NoError(t, err)
	require.ErrorIs(t, w.Commit(), ErrDigestMismatch)

	w, err = s.NewIngest(d, 100)
	require.NoError(t, err)
	_, err = w.Write([]byte("the real content"))
	require.NoError(t, err)
	require.ErrorIs(t, w.Commit(), ErrSizeMismatch)

	_, err = s.Stat(d)
	assert.ErrorIs(t, err, ErrNotFound)
	entries, err := os.ReadDir(filepath.Join(s.Dir(), "ingest"))
	require.NoError(t, err)
	assert.Empty(t, entries, "a rejected ingest leaves no file behind")
}

func TestInvalidDigestNeverBecomesAPath(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	for _, d := range []digest.Digest{
		"sha256:../../../../etc/passwd",
		"sha256:abc",
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		"",
	} {
		_, err := s.NewIngest(d, 1)
		assert.Error(t, err, "%q", d)
		_, err = s.Stat(d)
		assert.Error(t, err, "%q", d)
		assert.NotErrorIs(t, err, ErrNotFound, "%q is invalid, not missing", d)
	}
}

func TestReopenKeepsContentAndCleansLeftovers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	require.NoError(t, err)
	kept := ingest(t, s, []byte("kept across restarts"))
	gone := ingest(t, s, []byte("its file is deleted while we are down"))
	m := Manifest{Digest: digest.FromString(`{"schemaVersion":2}`), MediaType: "application/vnd.oci.image.manifest.v1+json", Body: []byte(`{"schemaVersion":2}`), Refs: []digest.Digest{kept}}
	_, err = s.PutManifest(m)
	require.NoError(t, err)
	key := TagKey{Registry: "docker.io", Repo: "library/alpine", Tag: "3"}
	require.NoError(t, s.PutTag(key, Tag{Digest: m.Digest, MediaType: m.MediaType, Confirmed: time.Unix(100, 0)}))
	// A download interrupted by a crash.
	half, err := s.NewIngest(digest.FromString("never finished"), 100)
	require.NoError(t, err)
	_, err = half.Write([]byte("never"))
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, os.Remove(s.blobPath(gone)))

	s = openStore(t, dir)
	_, err = s.Stat(kept)
	assert.NoError(t, err)
	_, err = s.Stat(gone)
	assert.ErrorIs(t, err, ErrNotFound, "a row whose file is gone is dropped")
	got, err := s.GetManifest(m.Digest)
	require.NoError(t, err)
	assert.Equal(t, m.Body, got.Body)
	assert.Equal(t, m.MediaType, got.MediaType)
	assert.Equal(t, m.Refs, got.Refs)
	tag, err := s.GetTag(key)
	require.NoError(t, err)
	assert.Equal(t, m.Digest, tag.Digest)
	assert.True(t, tag.Confirmed.Equal(time.Unix(100, 0)))
	entries, err := os.ReadDir(filepath.Join(dir, "ingest"))
	require.NoError(t, err)
	assert.Empty(t, entries, "ingest leftovers are removed at start")
	_, ok := s.LastAccess(kept)
	assert.True(t, ok, "access times are flushed on close")
}

func TestSecondOpenFailsFastWhenLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	openStore(t, dir)
	_, err := Open(dir, Options{LockTimeout: 50 * time.Millisecond})
	require.ErrorIs(t, err, ErrLocked)
}

func TestManifestCorruptedOnDiskIsNotServed(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	body := []byte(`{"schemaVersion":2,"mediaType":"x"}`)
	m := Manifest{Digest: digest.FromBytes(body), MediaType: "x", Body: body}
	_, err := s.PutManifest(m)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(s.blobPath(m.Digest), []byte(`{"schemaVersion":2,"mediaType":"y"}`), 0o644))
	_, err = s.GetManifest(m.Digest)
	assert.ErrorIs(t, err, ErrDigestMismatch)
}

func TestTagList(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	_, err := s.GetTagList("ghcr.io", "a/b")
	require.ErrorIs(t, err, ErrNotFound)
	require.NoError(t, s.PutTagList("ghcr.io", "a/b", TagList{Tags: []string{"1", "2"}, Fetched: time.Unix(5, 0)}))
	l, err := s.GetTagList("ghcr.io", "a/b")
	require.NoError(t, err)
	assert.Equal(t, []string{"1", "2"}, l.Tags)
	_, err = s.GetTagList("ghcr.io", "a/c")
	assert.ErrorIs(t, err, ErrNotFound)
}

func TestOpenAdoptsVerifiedOrphansAndRemovesOthers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	require.NoError(t, err)
	good := []byte("a blob whose index row was lost in a crash")
	gd := digest.FromBytes(good)
	bad := digest.FromString("what the name promises")
	damaged := ingest(t, s, []byte("a blob that will be truncated"))
	require.NoError(t, s.Close())
	for d, body := range map[digest.Digest][]byte{gd: good, bad: []byte("something else")} {
		require.NoError(t, os.MkdirAll(filepath.Dir(s.blobPath(d)), 0o755))
		require.NoError(t, os.WriteFile(s.blobPath(d), body, 0o644))
	}
	require.NoError(t, os.WriteFile(s.blobPath(damaged), []byte("a blob"), 0o644))

	s = openStore(t, dir)
	info, err := s.Stat(gd)
	require.NoError(t, err, "a file whose bytes match its name is adopted")
	assert.Equal(t, int64(len(good)), info.Size)
	_, err = s.Stat(bad)
	assert.ErrorIs(t, err, ErrNotFound)
	assert.NoFileExists(t, s.blobPath(bad), "a file that does not match its name is removed")
	_, err = s.Stat(damaged)
	assert.ErrorIs(t, err, ErrNotFound, "a file whose size differs from its row is dropped")
}

func TestOpenBlobForgetsADamagedFile(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	d := ingest(t, s, []byte("twenty-something bytes of blob"))
	require.NoError(t, os.Truncate(s.blobPath(d), 5))
	_, _, err := s.OpenBlob(d)
	require.ErrorIs(t, err, ErrNotFound, "a truncated blob is a miss, never served")
	_, err = s.Stat(d)
	assert.ErrorIs(t, err, ErrNotFound, "and it is forgotten so it is fetched again")
}

func TestCorruptIndexIsRebuiltFromBlobFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	require.NoError(t, err)
	layer := ingest(t, s, []byte("layer bytes"))
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"` + string(layer) + `"},"layers":[]}`)
	m := Manifest{Digest: digest.FromBytes(body), MediaType: "application/vnd.oci.image.manifest.v1+json", Body: body, Refs: []digest.Digest{layer}}
	_, err = s.PutManifest(m)
	require.NoError(t, err)
	require.NoError(t, s.Close())

	require.NoError(t, os.WriteFile(filepath.Join(dir, "index.db"), []byte("this is not a bbolt file, it is garbage left by a bad disk"), 0o644))
	s = openStore(t, dir)
	assert.NotEmpty(t, s.RebuiltFrom(), "the corrupt index was moved aside")
	assert.FileExists(t, s.RebuiltFrom())
	_, err = s.Stat(layer)
	assert.NoError(t, err, "blobs are adopted after a re-hash")
	got, err := s.GetManifest(m.Digest)
	require.NoError(t, err, "manifests keep their media type and references")
	assert.Equal(t, m.MediaType, got.MediaType)
	assert.Equal(t, m.Refs, got.Refs)
}

func TestTruncatedIndexIsRebuilt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	require.NoError(t, err)
	d := ingest(t, s, []byte("kept through a truncated index"))
	require.NoError(t, s.Close())
	require.NoError(t, os.Truncate(filepath.Join(dir, "index.db"), 100))
	s = openStore(t, dir)
	assert.NotEmpty(t, s.RebuiltFrom())
	_, err = s.Stat(d)
	assert.NoError(t, err)
}
