package cache

import (
	"encoding/binary"
	"encoding/json"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// graph is a snapshot of what the store holds and what refers to what:
// the basis of eviction and of listing images.
type graph struct {
	size      map[digest.Digest]int64
	refs      map[digest.Digest][]digest.Digest // manifest → what it refers to
	mediaType map[digest.Digest]string
	parents   map[digest.Digest]int // how many stored manifests refer to a digest
	access    map[digest.Digest]time.Time
	tags      map[digest.Digest][]string // manifest → tag keys resolving to it
	tagRows   map[string]Tag
	pinned    map[digest.Digest][]Pin // root → pins
	tagLists  map[string]tagListRow   // registry/repo → its remembered tag list
}

// tagListRow is what eviction needs of a tag list: its row's size in the
// index and when it was fetched.
type tagListRow struct {
	size    int64
	fetched time.Time
}

// snapshot reads the graph in one read transaction.
func (s *Store) snapshot() (*graph, error) {
	var g *graph
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		g, err = s.readGraph(tx)
		return err
	})
	return g, err
}

// readGraph reads the graph in tx, with access times not yet flushed
// merged in.
func (s *Store) readGraph(tx *bolt.Tx) (*graph, error) {
	g := &graph{
		size: map[digest.Digest]int64{}, refs: map[digest.Digest][]digest.Digest{}, mediaType: map[digest.Digest]string{},
		parents: map[digest.Digest]int{}, access: map[digest.Digest]time.Time{},
		tags: map[digest.Digest][]string{}, tagRows: map[string]Tag{}, pinned: map[digest.Digest][]Pin{},
		tagLists: map[string]tagListRow{},
	}
	err := func() error {
		if err := bucket(tx, bucketBlobs).ForEach(func(k, v []byte) error {
			var rec blobRecord
			if json.Unmarshal(v, &rec) == nil {
				g.size[digest.Digest(k)] = rec.Size
			}
			return nil
		}); err != nil {
			return err
		}
		if err := bucket(tx, bucketManifests).ForEach(func(k, v []byte) error {
			var rec manifestRecord
			if json.Unmarshal(v, &rec) == nil {
				d := digest.Digest(k)
				g.refs[d], g.mediaType[d] = rec.Refs, rec.MediaType
			}
			return nil
		}); err != nil {
			return err
		}
		if err := bucket(tx, bucketAccess).ForEach(func(k, v []byte) error {
			if len(v) == 8 {
				g.access[digest.Digest(k)] = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
			}
			return nil
		}); err != nil {
			return err
		}
		if err := bucket(tx, bucketTags).ForEach(func(k, v []byte) error {
			var t Tag
			if json.Unmarshal(v, &t) == nil {
				g.tags[t.Digest] = append(g.tags[t.Digest], string(k))
				g.tagRows[string(k)] = t
			}
			return nil
		}); err != nil {
			return err
		}
		if err := bucket(tx, bucketTagLists).ForEach(func(k, v []byte) error {
			g.tagLists[string(k)] = tagListRow{size: int64(len(k) + len(v)), fetched: tagListFetched(v)}
			return nil
		}); err != nil {
			return err
		}
		return bucket(tx, bucketPins).ForEach(func(_, v []byte) error {
			var p Pin
			if json.Unmarshal(v, &p) == nil {
				g.pinned[p.Digest] = append(g.pinned[p.Digest], p)
			}
			return nil
		})
	}()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	for d, t := range s.access {
		if t.After(g.access[d]) {
			g.access[d] = t
		}
	}
	s.mu.Unlock()
	for k, c := range s.tags.pendingConfirmations() {
		if t, ok := g.tagRows[k]; ok && t.Digest == c.Digest && c.Confirmed.After(t.Confirmed) {
			t.Confirmed = c.Confirmed
			g.tagRows[k] = t
		}
	}
	for m, refs := range g.refs {
		if _, stored := g.size[m]; !stored {
			delete(g.refs, m)
			continue
		}
		for _, r := range refs {
			g.parents[r]++
		}
	}
	return g, nil
}

// closure is d and everything it refers to that the store holds.
func (g *graph) closure(d digest.Digest) []digest.Digest {
	seen := map[digest.Digest]bool{}
	var out []digest.Digest
	var walk func(digest.Digest)
	walk = func(d digest.Digest) {
		if seen[d] {
			return
		}
		seen[d] = true
		if _, ok := g.size[d]; ok {
			out = append(out, d)
		}
		for _, r := range g.refs[d] {
			walk(r)
		}
	}
	walk(d)
	return out
}

// roots are the images: stored manifests no other stored manifest refers to.
func (g *graph) roots() []digest.Digest {
	var out []digest.Digest
	for m := range g.refs {
		if g.parents[m] == 0 {
			out = append(out, m)
		}
	}
	return out
}

// lastAccess of an image is the latest access to anything in it.
func (g *graph) lastAccess(members []digest.Digest) time.Time {
	var t time.Time
	for _, d := range members {
		if a := g.access[d]; a.After(t) {
			t = a
		}
	}
	return t
}

// pinnedSet is every digest some pin keeps.
func (g *graph) pinnedSet() map[digest.Digest]bool {
	out := map[digest.Digest]bool{}
	for root := range g.pinned {
		for _, d := range g.closure(root) {
			out[d] = true
		}
	}
	return out
}
