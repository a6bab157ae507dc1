package cache

import (
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Image is one image the store holds, as `lifeboat ls` shows it.
type Image struct {
	Digest     digest.Digest `json:"digest"`
	MediaType  string        `json:"mediaType"`
	Tags       []string      `json:"tags,omitempty"` // registry/repo:tag
	Size       int64         `json:"size"`           // bytes of everything in it the store holds
	Blobs      int           `json:"blobs"`
	LastAccess time.Time     `json:"lastAccess"`
	Confirmed  time.Time     `json:"confirmed,omitzero"` // latest upstream confirmation of one of its tags
	Pinned     []string      `json:"pinned,omitempty"`   // pin refs
	// Private: upstream refused an anonymous client one of its tags'
	// repositories (RepoAccess).
	Private bool `json:"private,omitempty"`
}

// Stats are the store's totals. Bytes counts blob files and remembered tag
// lists (their index rows); Objects counts blobs.
type Stats struct {
	Bytes, Objects, PinnedBytes int64
}

// Images lists the images (manifests no other manifest refers to), most
// recently used first.
func (s *Store) Images() ([]Image, error) {
	g, err := s.snapshot()
	if err != nil {
		return nil, err
	}
	private, err := s.privateRepos()
	if err != nil {
		return nil, err
	}
	var out []Image
	for _, root := range g.roots() {
		members := g.closure(root)
		img := Image{Digest: root, MediaType: g.mediaType[root], LastAccess: g.lastAccess(members), Blobs: len(members)}
		for _, d := range members {
			img.Size += g.size[d]
		}
		for _, t := range g.tags[root] {
			img.Tags = append(img.Tags, t)
			img.Private = img.Private || private[tagRepo(t)]
			if c := g.tagRows[t].Confirmed; c.After(img.Confirmed) {
				img.Confirmed = c
			}
		}
		slices.Sort(img.Tags)
		for _, p := range g.pinned[root] {
			img.Pinned = append(img.Pinned, p.Ref)
		}
		out = append(out, img)
	}
	slices.SortFunc(out, func(a, b Image) int {
		if c := b.LastAccess.Compare(a.LastAccess); c != 0 {
			return c
		}
		return strings.Compare(string(a.Digest), string(b.Digest))
	})
	return out, nil
}

// Stats counts what the store holds.
func (s *Store) Stats() (Stats, error) {
	g, err := s.snapshot()
	if err != nil {
		return Stats{}, err
	}
	var st Stats
	for _, n := range g.size {
		st.Bytes += n
		st.Objects++
	}
	for _, l := range g.tagLists {
		st.Bytes += l.size
	}
	for d := range g.pinnedSet() {
		st.PinnedBytes += g.size[d]
	}
	return st, nil
}
