package cache

import (
	"fmt"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
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
