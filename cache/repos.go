package cache

import (
	"encoding/json"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// RepoAccess is what upstream last said of a repository to an anonymous
// client: whether it refused (Private), and when that was checked.
type RepoAccess struct {
	Private bool      `json:"private"`
	Checked time.Time `json:"checked"`
}

// PutRepoAccess records what upstream said of a repository to an
// anonymous client.
func (s *Store) PutRepoAccess(registry, repo string, a RepoAccess) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return putJSON(tx, bucketRepos, repoKey(registry, repo), a)
	})
}

// GetRepoAccess returns a repository's recorded access, or ErrNotFound
// when it was never checked.
func (s *Store) GetRepoAccess(registry, repo string) (RepoAccess, error) {
	var a RepoAccess
	err := s.getJSON(bucketRepos, repoKey(registry, repo), &a)
	return a, err
}

// privateRepos is the set of repositories (registry/repo) recorded private.
func (s *Store) privateRepos() (map[string]bool, error) {
	out := map[string]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return bucket(tx, bucketRepos).ForEach(func(k, v []byte) error {
			var a RepoAccess
			if json.Unmarshal(v, &a) == nil && a.Private {
				out[string(k)] = true
			}
			return nil
		})
	})
	return out, err
}

// tagRepo is the registry/repo of a tag row's key (registry/repo:tag; a
// tag holds no colon, a registry may).
func tagRepo(tagKey string) string {
	if i := strings.LastIndex(tagKey, ":"); i > strings.LastIndex(tagKey, "/") {
		return tagKey[:i]
	}
	return tagKey
}
