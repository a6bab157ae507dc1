package cache

import (
	"encoding/json"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Pin keeps an image (a manifest or index, with everything it refers to)
// from eviction.
type Pin struct {
	Ref    string        `json:"ref"`    // what was asked for, e.g. docker.io/library/alpine:3.20
	Digest digest.Digest `json:"digest"` // what it resolved to
	Source string        `json:"source"` // who pinned it, e.g. "prefetch"
	Pinned time.Time     `json:"pinned"`
}

// ReplacePins makes pins the whole set of pins from source: pins of that
// source not in the set are removed.
func (s *Store) ReplacePins(source string, pins []Pin) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := bucket(tx, bucketPins)
		var stale [][]byte
		err := b.ForEach(func(k, v []byte) error {
			var p Pin
			if json.Unmarshal(v, &p) != nil || p.Source == source {
				stale = append(stale, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range stale {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		for _, p := range pins {
			p.Source = source
			if err := putJSON(tx, bucketPins, source+" "+p.Ref, p); err != nil {
				return err
			}
		}
		return nil
	})
}

// AddPin pins one image for source, keeping its other pins.
func (s *Store) AddPin(source string, p Pin) error {
	p.Source = source
	return s.db.Update(func(tx *bolt.Tx) error {
		return putJSON(tx, bucketPins, source+" "+p.Ref, p)
	})
}

// Pins lists every pin.
func (s *Store) Pins() ([]Pin, error) {
	var out []Pin
	err := s.db.View(func(tx *bolt.Tx) error {
		return bucket(tx, bucketPins).ForEach(func(_, v []byte) error {
			var p Pin
			if err := json.Unmarshal(v, &p); err == nil {
				out = append(out, p)
			}
			return nil
		})
	})
	return out, err
}

// RemovePin removes source's pin of ref; it reports whether there was one.
func (s *Store) RemovePin(source, ref string) (bool, error) {
	found := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := bucket(tx, bucketPins)
		key := []byte(source + " " + ref)
		found = b.Get(key) != nil
		return b.Delete(key)
	})
	return found, err
}
