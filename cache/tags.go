package cache

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// TagKey names a tag of a repository of an upstream registry.
type TagKey struct {
	Registry, Repo, Tag string
}

// String is the key's row in the tags bucket: registry/repo:tag.
func (k TagKey) String() string { return k.Registry + "/" + k.Repo + ":" + k.Tag }

// Tag is what a tag resolved to, and when upstream last confirmed it.
type Tag struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Confirmed time.Time     `json:"confirmed"`
}

// PutTag records that upstream said key resolves to t.Digest at t.Confirmed.
func (s *Store) PutTag(key TagKey, t Tag) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return putJSON(tx, bucketTags, key.String(), t)
	})
}

// GetTag returns the cached resolution of a tag, or ErrNotFound.
func (s *Store) GetTag(key TagKey) (Tag, error) {
	var t Tag
	err := s.getJSON(bucketTags, key.String(), &t)
	return t, err
}

// A remembered tag list is bounded: it is a fallback for outages, held in
// the index, and upstream's list can be as long as upstream likes. PutTagList
// keeps the first tags of a longer list, up to MaxTagListTags of them and
// MaxTagListBytes for the whole row, and marks it Truncated.
const (
	MaxTagListTags  = 100_000
	MaxTagListBytes = 4 << 20
)

// TagListMaxAge: an eviction pass removes a tag list last fetched this long
// before its KeepAccessedAfter, whatever the limits (a repository nobody
// lists any more). Under the limits' pressure, a list fetched before
// KeepAccessedAfter goes with the orphans, oldest first.
const TagListMaxAge = 7 * 24 * time.Hour

// TagList is a repository's tag list as upstream last returned it.
type TagList struct {
	Tags    []string  `json:"tags"`
	Fetched time.Time `json:"fetched"`
	// Truncated says upstream's list was longer than a remembered list may
	// be: Tags holds only its first entries, and is not the whole list.
	Truncated bool `json:"truncated,omitempty"`
}

func repoKey(registry, repo string) string { return registry + "/" + repo }

// A tag list row is tagListFormat, the fetch time (unix nanoseconds, 8
// bytes, big endian), then tagListBody as JSON: eviction reads the time
// and the row's size without decoding the list. A row written before the
// format (JSON, starting with '{') is still read.
const (
	tagListFormat = 1
	tagListHeader = 9
)

type tagListBody struct {
	Tags      []string `json:"tags"`
	Truncated bool     `json:"truncated,omitempty"`
}

// PutTagList records a repository's tag list, truncated (and marked so)
// past MaxTagListTags tags or MaxTagListBytes.
func (s *Store) PutTagList(registry, repo string, l TagList) error {
	raw, err := encodeTagList(l)
	if err != nil {
		return fmt.Errorf("tag list of %s: %w", repoKey(registry, repo), err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return bucket(tx, bucketTagLists).Put([]byte(repoKey(registry, repo)), raw)
	})
}

// GetTagList returns the last tag list recorded for a repository.
func (s *Store) GetTagList(registry, repo string) (TagList, error) {
	var l TagList
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := bucket(tx, bucketTagLists).Get([]byte(repoKey(registry, repo)))
		if raw == nil {
			return ErrNotFound
		}
		var err error
		l, err = decodeTagList(raw) // decoding copies out of the transaction
		return err
	})
	return l, err
}

// encodeTagList encodes the first tags of l that fit the bounds.
func encodeTagList(l TagList) ([]byte, error) {
	budget := MaxTagListBytes - tagListHeader - len(`{"tags":[],"truncated":true}`)
	n := 0
	for ; n < len(l.Tags) && n < MaxTagListTags; n++ {
		enc, err := json.Marshal(l.Tags[n])
		if err != nil {
			return nil, err
		}
		if budget -= len(enc) + 1; budget < 0 { // a comma after each
			break
		}
	}
	body, err := json.Marshal(tagListBody{Tags: l.Tags[:n], Truncated: l.Truncated || n < len(l.Tags)})
	if err != nil {
		return nil, err
	}
	fetched := int64(0)
	if !l.Fetched.IsZero() {
		fetched = l.Fetched.UnixNano()
	}
	raw := make([]byte, 0, tagListHeader+len(body))
	raw = append(raw, tagListFormat)
	raw = binary.BigEndian.AppendUint64(raw, uint64(fetched))
	return append(raw, body...), nil
}

func decodeTagList(raw []byte) (TagList, error) {
	if len(raw) > 0 && raw[0] == '{' {
		var l TagList
		err := json.Unmarshal(raw, &l)
		return l, err
	}
	if len(raw) < tagListHeader || raw[0] != tagListFormat {
		return TagList{}, fmt.Errorf("tag list row of an unknown format")
	}
	var body tagListBody
	if err := json.Unmarshal(raw[tagListHeader:], &body); err != nil {
		return TagList{}, err
	}
	return TagList{Tags: body.Tags, Fetched: tagListFetched(raw), Truncated: body.Truncated}, nil
}

// tagListFetched reads a row's fetch time without decoding the list; zero
// for a row written before the format.
func tagListFetched(raw []byte) time.Time {
	if len(raw) < tagListHeader || raw[0] != tagListFormat {
		return time.Time{}
	}
	if ns := int64(binary.BigEndian.Uint64(raw[1:tagListHeader])); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}
