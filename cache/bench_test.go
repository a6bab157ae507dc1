package cache

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

func BenchmarkOpenBlobHit(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	d := ingest(b, s, []byte("a cached layer"))
	for b.Loop() {
		f, _, err := s.OpenBlob(d)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

func BenchmarkGetTag(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	key := TagKey{Registry: "docker.io", Repo: "library/alpine", Tag: "3.20"}
	if err := s.PutTag(key, Tag{Digest: digest.FromString("m"), Confirmed: time.Now()}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.GetTag(key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutTag is an index write: one bbolt transaction with fsync.
func BenchmarkPutTag(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	i := 0
	for b.Loop() {
		i++
		key := TagKey{Registry: "docker.io", Repo: "library/alpine", Tag: fmt.Sprint(i)}
		if err := s.PutTag(key, Tag{Digest: digest.FromString("m"), Confirmed: time.Now()}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTouch is the per-request access record: memory only.
func BenchmarkTouch(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	d := digest.FromString("x")
	for b.Loop() {
		s.Touch(d)
	}
}

// bigStore writes a store of images×(1 manifest + layers) blobs directly
// (no fsync per blob), for measuring Open and eviction at scale.
func bigStore(b *testing.B, images, layers int) string {
	b.Helper()
	dir := b.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	err = s.db.Update(func(tx *bolt.Tx) error {
		for i := range images {
			var refs []digest.Digest
			for l := range layers {
				body := []byte(fmt.Sprintf("layer %d of image %d", l, i))
				d := digest.FromBytes(body)
				if err := writeRaw(s, tx, d, body, now); err != nil {
					return err
				}
				refs = append(refs, d)
			}
			body := []byte(fmt.Sprintf(`{"schemaVersion":2,"image":%d}`, i))
			d := digest.FromBytes(body)
			if err := writeRaw(s, tx, d, body, now); err != nil {
				return err
			}
			if err := putJSON(tx, bucketManifests, d.String(), manifestRecord{MediaType: "application/vnd.oci.image.manifest.v1+json", Refs: refs}); err != nil {
				return err
			}
			t := now.Add(-time.Duration(images-i) * time.Minute) // image 0 is the oldest
			for _, x := range append(refs, d) {
				if err := bucket(tx, bucketAccess).Put([]byte(x.String()), binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano()))); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	return dir
}

func writeRaw(s *Store, tx *bolt.Tx, d digest.Digest, body []byte, now time.Time) error {
	p := s.blobPath(d)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, body, 0o644); err != nil {
		return err
	}
	return putJSON(tx, bucketBlobs, d.String(), blobRecord{Size: int64(len(body)), Stored: now})
}

// BenchmarkOpen100k is the start-up cost with 100 000 blobs indexed: open,
// page check, reconcile of index and files.
func BenchmarkOpen100k(b *testing.B) {
	dir := bigStore(b, 10_000, 9)
	for b.Loop() {
		s, err := Open(dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

// BenchmarkEvictionPass100k is one eviction pass over 100 000 blobs that
// must free a tenth of the cache (dry run, so every iteration does the same
// work; the removal itself is one bbolt transaction and the unlinks).
func BenchmarkEvictionPass100k(b *testing.B) {
	dir := bigStore(b, 10_000, 9)
	s, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	st, err := s.Stats()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		r, err := s.Evict(b.Context(), EvictOptions{MaxSize: st.Bytes * 9 / 10, KeepAccessedAfter: time.Now().Add(time.Hour), DryRun: true})
		if err != nil || len(r.Removed) == 0 {
			b.Fatal(err, len(r.Removed))
		}
	}
}
