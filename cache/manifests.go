package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Manifest is a stored manifest: the exact bytes upstream sent, with the media
// type it sent them as and the digests they refer to.
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

// PutManifest stores a manifest (verified against m.Digest) as a blob and
// records its media type and references.
func (s *Store) PutManifest(m Manifest) error {
	w, err := s.NewIngest(m.Digest, int64(len(m.Body)))
	if err != nil {
		return err
	}
	if _, err := w.Write(m.Body); err != nil {
		w.Abort()
		return fmt.Errorf("write manifest: %w", err)
	}
	return w.commit(func(tx *bolt.Tx) error {
		return putJSON(tx, bucketManifests, m.Digest.String(), manifestRecord{MediaType: m.MediaType, Refs: m.Refs})
	})
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
	s.Touch(d)
	return Manifest{Digest: d, MediaType: rec.MediaType, Body: bytes.Clone(body), Refs: rec.Refs}, nil
}

// ParseManifest returns the digests a manifest or index refers to (config,
// layers, child manifests, blobs) and the media type it declares.
func ParseManifest(body []byte) ([]digest.Digest, string, error) {
	refs, mt, _, err := parseManifestKind(body)
	return refs, mt, err
}

// parseManifestKind is ParseManifest that also says what the body looks
// like when it declares no media type (the field is optional in OCI): an
// OCI index (manifests) or an OCI image manifest (config and layers); ""
// when it is neither.
func parseManifestKind(body []byte) ([]digest.Digest, string, string, error) {
	type descriptor struct {
		Digest digest.Digest `json:"digest"`
	}
	var m struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        *descriptor  `json:"config"`
		Layers        []descriptor `json:"layers"`
		Manifests     []descriptor `json:"manifests"`
		Blobs         []descriptor `json:"blobs"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, "", "", fmt.Errorf("not a manifest: %w", err)
	}
	if m.SchemaVersion != 2 {
		return nil, "", "", fmt.Errorf("not a manifest: schemaVersion %d", m.SchemaVersion)
	}
	kind := ""
	switch {
	case m.Manifests != nil:
		kind = "application/vnd.oci.image.index.v1+json"
	case m.Config != nil && m.Layers != nil:
		kind = "application/vnd.oci.image.manifest.v1+json"
	}
	var refs []digest.Digest
	all := append(append(append([]descriptor{}, m.Layers...), m.Manifests...), m.Blobs...)
	if m.Config != nil {
		all = append(all, *m.Config)
	}
	for _, d := range all {
		if d.Digest.Validate() != nil {
			return nil, "", "", fmt.Errorf("invalid digest %q in manifest", d.Digest)
		}
		refs = append(refs, d.Digest)
	}
	return refs, m.MediaType, kind, nil
}
