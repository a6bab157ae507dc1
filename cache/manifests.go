package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Manifest is a stored manifest: the exact bytes upstream sent, with the media
// type they establish and the digests they refer to.
type Manifest struct {
	Digest    digest.Digest
	MediaType string
	Body      []byte
	Refs      []digest.Digest
}

type manifestRecord struct {
	MediaType string          `json:"mediaType"`
	Refs      []digest.Digest `json:"refs,omitempty"`
}

// PutManifest stores a manifest (verified against m.Digest) as a blob,
// records its media type and references, and returns it as recorded.
//
// The media type recorded is the one the bytes establish (see
// ParseManifestAs; m.MediaType is only the hint it takes); bytes that are
// no manifest ParseManifest understands are recorded with m.MediaType as
// given. A digest already recorded keeps its record when its media type is
// consistent with the bytes: the same bytes have the same digest, so the
// first verified type stands, and a second registry serving the digest
// with another Content-Type cannot change it.
func (s *Store) PutManifest(m Manifest) (Manifest, error) {
	rec := manifestRecord{MediaType: m.MediaType, Refs: m.Refs}
	parsed, perr := parseManifest(m.Body)
	if perr == nil {
		rec.MediaType = parsed.mediaType(m.MediaType)
	}
	w, err := s.NewIngest(m.Digest, int64(len(m.Body)))
	if err != nil {
		return Manifest{}, err
	}
	if _, err := w.Write(m.Body); err != nil {
		w.Abort()
		return Manifest{}, fmt.Errorf("write manifest: %w", err)
	}
	err = w.commit(func(tx *bolt.Tx) error {
		var old manifestRecord
		if raw := bucket(tx, bucketManifests).Get([]byte(m.Digest.String())); raw != nil &&
			json.Unmarshal(raw, &old) == nil && perr == nil && parsed.accepts(old.MediaType) {
			rec = old
			return nil
		}
		return putJSON(tx, bucketManifests, m.Digest.String(), rec)
	})
	if err != nil {
		return Manifest{}, err
	}
	m.MediaType, m.Refs = rec.MediaType, rec.Refs
	return m, nil
}

// GetManifest returns a stored manifest, re-checking its bytes against the
// digest (manifests are small, and they are what a tag resolves through).
func (s *Store) GetManifest(d digest.Digest) (Manifest, error) {
	if err := validate(d); err != nil {
		return Manifest{}, err
	}
	var rec manifestRecord
	if err := s.getJSON(bucketManifests, d.String(), &rec); err != nil {
		return Manifest{}, err
	}
	body, err := os.ReadFile(s.blobPath(d))
	if errors.Is(err, os.ErrNotExist) {
		return Manifest{}, fmt.Errorf("manifest %s: file missing: %w", d, ErrNotFound)
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("read manifest %s: %w", d, err)
	}
	if got := d.Algorithm().FromBytes(body); got != d {
		return Manifest{}, fmt.Errorf("manifest %s on disk hashes to %s: %w", d, got, ErrDigestMismatch)
	}
	// A record written before media types were derived from the bytes may
	// hold upstream's Content-Type; the bytes say what they are.
	if parsed, err := parseManifest(body); err == nil {
		rec.MediaType = parsed.mediaType(rec.MediaType)
	}
	s.Touch(d)
	return Manifest{Digest: d, MediaType: rec.MediaType, Body: body, Refs: rec.Refs}, nil
}
