package cache

import (
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

// TagList is a repository's tag list as upstream last returned it.
type TagList struct {
	Tags    []string  `json:"tags"`
	Fetched time.Time `json:"fetched"`
}

func repoKey(registry, repo string) string { return registry + "/" + repo }

// PutTagList records a repository's full tag list.
func (s *Store) PutTagList(registry, repo string, l TagList) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return putJSON(tx, bucketTagLists, repoKey(registry, repo), l)
	})
}

// GetTagList returns the last tag list recorded for a repository.
func (s *Store) GetTagList(registry, repo string) (TagList, error) {
	var l TagList
	err := s.getJSON(bucketTagLists, repoKey(registry, repo), &l)
	return l, err
}
