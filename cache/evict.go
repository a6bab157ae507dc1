package cache

import (
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// EvictOptions say when and how far to evict. The zero value evicts nothing.
type EvictOptions struct {
	// MaxSize is the cap on the bytes the store holds; 0: no cap.
	MaxSize int64
	// MinFree is how many bytes must stay free on the data directory's
	// filesystem; 0: no floor.
	MinFree int64
	// MinFreeFraction is the same floor as a fraction of the filesystem's
	// size (0.1 = 10%); the larger of the two applies.
	MinFreeFraction float64
	// KeepAccessedAfter: nothing accessed after this is evicted (content
	// in use, and during an outage, everything recently pulled).
	KeepAccessedAfter time.Time
	// DryRun reports what would be evicted without removing anything.
	DryRun bool
}

// Once a limit is crossed, eviction goes on to leave this much headroom, so
// that it does not run again at the next blob.
const (
	lowWater   = 0.90 // of MaxSize
	freeMargin = 1.10 // of MinFree
)

// Evicted is one removed blob.
type Evicted struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	// Reason is "orphan" (no manifest refers to it) or "lru" (part of
	// the least recently used image).
	Reason string `json:"reason"`
}

// EvictReport says what an eviction pass did (or, dry, would do).
type EvictReport struct {
	SizeBefore, SizeAfter int64
	ObjectsAfter          int64
	PinnedBytes           int64
	FreeBefore            int64 // -1 when unknown
	DiskSize              int64 // the filesystem's size, -1 when unknown
	Needed                int64 // bytes the limits asked to free
	Removed               []Evicted
	Tags                  []string // tag rows removed with their images
	Duration              time.Duration
}

// Freed is the bytes removed.
func (r EvictReport) Freed() int64 { return r.SizeBefore - r.SizeAfter }

// DiskSpace is the free bytes (for an unprivileged user) and the size of
// the data directory's filesystem.
func (s *Store) DiskSpace() (free, size int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dir, &st); err != nil {
		return -1, -1, fmt.Errorf("statfs %s: %w", s.dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

// Evict removes least recently used content until the store is back under
// its limits: orphan blobs first, then whole images (a manifest or index
// with everything only it refers to; a blob two images share stays while
// either does). Pinned images and anything accessed after
// opts.KeepAccessedAfter are never evicted. Readers of an evicted file keep
// reading it: the space is freed when they close it.
//
// The choice and the removal of rows happen in one write transaction, with
// commits held off, so no manifest, tag or blob committed meanwhile can be
// missed by the choice or removed by it.
func (s *Store) Evict(opts EvictOptions) (EvictReport, error) {
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	start := time.Now()
	var r EvictReport
	r.FreeBefore, r.DiskSize, _ = s.DiskSpace()
	if r.DiskSize > 0 {
		opts.MinFree = max(opts.MinFree, int64(opts.MinFreeFraction*float64(r.DiskSize)))
	}
	var removed map[digest.Digest]bool
	decide := func(tx *bolt.Tx) error {
		g, err := s.readGraph(tx)
		if err != nil {
			return err
		}
		removed = plan(g, opts, &r)
		return nil
	}
	if opts.DryRun {
		err := s.db.View(decide)
		r.Duration = time.Since(start)
		return r, err
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := decide(tx); err != nil || len(removed) == 0 {
			return err
		}
		return s.removeRows(tx, removed, &r)
	})
	if err != nil {
		return r, fmt.Errorf("evict: %w", err)
	}
	if len(removed) > 0 {
		if err := s.unlink(removed); err != nil {
			return r, err
		}
	}
	r.Duration = time.Since(start)
	return r, nil
}

// plan chooses what to evict from g and fills in r's sizes.
func plan(g *graph, opts EvictOptions, r *EvictReport) map[digest.Digest]bool {
	for _, n := range g.size {
		r.SizeBefore += n
	}
	if opts.MaxSize > 0 && r.SizeBefore > opts.MaxSize {
		r.Needed = r.SizeBefore - int64(lowWater*float64(opts.MaxSize))
	}
	if opts.MinFree > 0 && r.FreeBefore >= 0 && r.FreeBefore < opts.MinFree {
		r.Needed = max(r.Needed, int64(freeMargin*float64(opts.MinFree))-r.FreeBefore)
	}
	r.SizeAfter = r.SizeBefore
	r.ObjectsAfter = int64(len(g.size))
	pinned := g.pinnedSet()
	for d := range pinned {
		r.PinnedBytes += g.size[d]
	}
	removed := map[digest.Digest]bool{}
	if r.Needed <= 0 {
		return removed
	}
	keep := func(d digest.Digest) bool {
		return pinned[d] || g.access[d].After(opts.KeepAccessedAfter)
	}
	freed := int64(0)
	remove := func(d digest.Digest, reason string) {
		removed[d] = true
		freed += g.size[d]
		r.Removed = append(r.Removed, Evicted{Digest: d, Size: g.size[d], Reason: reason})
	}

	// Orphans first, oldest first.
	var orphans []digest.Digest
	for d := range g.size {
		if _, isManifest := g.refs[d]; !isManifest && g.parents[d] == 0 && !keep(d) {
			orphans = append(orphans, d)
		}
	}
	slices.SortFunc(orphans, func(a, b digest.Digest) int { return g.access[a].Compare(g.access[b]) })
	for _, d := range orphans {
		if freed >= r.Needed {
			break
		}
		remove(d, "orphan")
	}

	// Then whole images, least recently used first.
	type image struct {
		root   digest.Digest
		access time.Time
	}
	var images []image
	for _, root := range g.roots() {
		members := g.closure(root)
		if slices.ContainsFunc(members, keep) {
			continue
		}
		images = append(images, image{root, g.lastAccess(members)})
	}
	slices.SortFunc(images, func(a, b image) int { return a.access.Compare(b.access) })
	refcount := g.parents
	var drop func(d digest.Digest)
	drop = func(d digest.Digest) {
		if removed[d] || pinned[d] {
			return
		}
		if _, stored := g.size[d]; stored {
			remove(d, "lru")
		}
		for _, ref := range g.refs[d] {
			refcount[ref]--
			if refcount[ref] <= 0 {
				drop(ref)
			}
		}
	}
	for _, img := range images {
		if freed >= r.Needed {
			break
		}
		drop(img.root)
	}
	for d := range removed {
		r.Tags = append(r.Tags, g.tags[d]...)
	}
	slices.Sort(r.Tags)
	r.SizeAfter = r.SizeBefore - freed
	r.ObjectsAfter -= int64(len(removed))
	return removed
}

// removeRows deletes the rows of removed blobs and the tags resolving to
// them, and records tombstones: if the process dies before the files are
// unlinked, Open removes them without re-hashing.
func (s *Store) removeRows(tx *bolt.Tx, removed map[digest.Digest]bool, r *EvictReport) error {
	for d := range removed {
		if err := deleteBlobRows(tx, d.String()); err != nil {
			return err
		}
		if err := bucket(tx, bucketTombstones).Put([]byte(d.String()), nil); err != nil {
			return err
		}
	}
	for _, t := range r.Tags {
		if err := bucket(tx, bucketTags).Delete([]byte(t)); err != nil {
			return err
		}
	}
	s.mu.Lock()
	for d := range removed {
		delete(s.access, d)
	}
	s.mu.Unlock()
	return nil
}

// unlink removes evicted files, then their tombstones. The caller holds
// commitMu, so no commit of the same digest can be undone here.
func (s *Store) unlink(removed map[digest.Digest]bool) error {
	for d := range removed {
		if err := os.Remove(s.blobPath(d)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("evict: %w", err)
		}
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for d := range removed {
			if err := bucket(tx, bucketTombstones).Delete([]byte(d.String())); err != nil {
				return err
			}
		}
		return nil
	})
}
