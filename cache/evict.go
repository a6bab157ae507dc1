package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
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

// EvictReport says what an eviction pass did (or, dry, would do). Sizes
// count blob files and remembered tag lists (their index rows); objects
// count blobs.
type EvictReport struct {
	SizeBefore, SizeAfter int64
	ObjectsAfter          int64
	PinnedBytes           int64
	FreeBefore            int64 // -1 when unknown
	DiskSize              int64 // the filesystem's size, -1 when unknown
	MinFree               int64 // the free-disk floor applied, in bytes (MinFree or MinFreeFraction of DiskSize); 0: none
	Needed                int64 // bytes the limits asked to free
	Removed               []Evicted
	Tags                  []string // tag rows removed with their images
	TagLists              []string // remembered tag lists removed (registry/repo)
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
// its limits: what nothing refers to first (orphan blobs, and remembered
// tag lists by when they were fetched), then whole images (a manifest or
// index with everything only it refers to; a blob two images share stays
// while either does). Pinned images and anything accessed (a tag list:
// fetched) after opts.KeepAccessedAfter are never evicted. A tag list
// fetched TagListMaxAge before opts.KeepAccessedAfter is removed whatever
// the limits. Readers of an evicted file keep reading it: the space is
// freed when they close it.
//
// A pass plans in a read transaction. A store under its limits (or with
// nothing it may evict, and no files an interrupted pass left to unlink)
// costs no write transaction, no fsync and no hold of commits. Only when
// the plan removes something does the pass hold commits off and plan again
// in the write transaction that removes the rows, so that no manifest, tag,
// tag list or blob committed meanwhile can be missed by the choice or
// removed by it; it unlinks the files before it lets commits in.
//
// The free-disk floor needs the filesystem's free space. When that cannot
// be read, the pass still applies MaxSize, and the error it returns (with
// the report) joins the statfs failure: the floor was not applied.
//
// When ctx ends, the pass stops and returns the report so far with an
// error wrapping ctx.Err(). Stopped while planning, it removed nothing.
// Stopped while unlinking, the rows in the report are gone and the files
// not yet unlinked keep their tombstones; the next pass (or Open) removes
// them.
func (s *Store) Evict(ctx context.Context, opts EvictOptions) (EvictReport, error) {
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	start := time.Now()
	var base EvictReport
	var diskErr error
	base.FreeBefore, base.DiskSize, diskErr = s.DiskSpace()
	if diskErr != nil {
		diskErr = fmt.Errorf("evict: free-disk floor not applied: %w", diskErr)
	}
	if base.DiskSize > 0 {
		opts.MinFree = max(opts.MinFree, int64(opts.MinFreeFraction*float64(base.DiskSize)))
	}
	base.MinFree = opts.MinFree
	r, err := s.evict(ctx, opts, base)
	r.Duration = time.Since(start)
	return r, errors.Join(err, diskErr)
}

// evict is Evict once the disk space is known (in base).
func (s *Store) evict(ctx context.Context, opts EvictOptions, base EvictReport) (EvictReport, error) {
	r := base
	var removed map[digest.Digest]bool
	leftovers := false
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		removed, err = s.planIn(ctx, tx, opts, &r)
		leftovers = hasTombstones(tx)
		return err
	})
	if err != nil {
		return r, fmt.Errorf("evict: %w", err)
	}
	if opts.DryRun || (len(removed) == 0 && len(r.TagLists) == 0 && !leftovers) {
		return r, nil
	}

	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	var files map[digest.Digest]bool // to unlink
	err = s.db.Update(func(tx *bolt.Tx) error {
		r = base
		var err error
		if files, err = leftoverTombstones(tx); err != nil {
			return err
		}
		if removed, err = s.planIn(ctx, tx, opts, &r); err != nil || (len(removed) == 0 && len(r.TagLists) == 0) {
			return err
		}
		return s.removeRows(tx, removed, &r)
	})
	if err != nil {
		r.rolledBack()
		return r, fmt.Errorf("evict: %w", err)
	}
	if len(removed) > 0 {
		s.removals.Add(1)
	}
	// Forgotten again now that the deletes committed: a GetTag that read
	// the old row between forget and commit must not keep it.
	for _, t := range r.Tags {
		s.tags.forget(t)
	}
	maps.Copy(files, removed)
	return r, s.unlink(ctx, files)
}

// rolledBack makes r say that nothing was removed: the transaction that
// removed its rows did not commit.
func (r *EvictReport) rolledBack() {
	r.ObjectsAfter += int64(len(r.Removed))
	r.SizeAfter = r.SizeBefore
	r.Removed, r.Tags, r.TagLists = nil, nil, nil
}

// planIn reads the graph in tx and plans from it.
func (s *Store) planIn(ctx context.Context, tx *bolt.Tx, opts EvictOptions, r *EvictReport) (map[digest.Digest]bool, error) {
	g, err := s.readGraph(tx)
	if err != nil {
		return nil, err
	}
	return plan(ctx, g, opts, r)
}

// plan chooses what to evict from g and fills in r. It sets r.Removed,
// r.Tags and r.TagLists only once the choice is complete: when ctx ends
// first, it returns ctx's error and r says that nothing is removed.
func plan(ctx context.Context, g *graph, opts EvictOptions, r *EvictReport) (map[digest.Digest]bool, error) {
	for _, n := range g.size {
		r.SizeBefore += n
	}
	for _, l := range g.tagLists {
		r.SizeBefore += l.size
	}
	if opts.MaxSize > 0 && r.SizeBefore > opts.MaxSize {
		r.Needed = r.SizeBefore - int64(lowWater*float64(opts.MaxSize))
	}
	if opts.MinFree > 0 && r.FreeBefore >= 0 && r.FreeBefore < opts.MinFree {
		r.Needed = max(r.Needed, int64(freeMargin*float64(opts.MinFree))-r.FreeBefore)
	}
	r.SizeAfter = r.SizeBefore
	r.ObjectsAfter = int64(len(g.size))
	c := &choice{g: g, pinned: g.pinnedSet(), removed: map[digest.Digest]bool{}, lists: map[string]bool{}}
	for d := range c.pinned {
		r.PinnedBytes += g.size[d]
	}
	// A tag list nobody has listed for long goes whatever the limits.
	expiry := opts.KeepAccessedAfter.Add(-TagListMaxAge)
	for k, l := range g.tagLists {
		if l.fetched.Before(expiry) {
			c.dropList(k)
		}
	}
	if c.freed < r.Needed {
		if err := c.free(ctx, opts.KeepAccessedAfter, r.Needed); err != nil {
			return nil, err
		}
	}
	r.Removed = c.evicted
	for d := range c.removed {
		r.Tags = append(r.Tags, g.tags[d]...)
	}
	slices.Sort(r.Tags)
	r.TagLists = slices.Sorted(maps.Keys(c.lists))
	r.SizeAfter = r.SizeBefore - c.freed
	r.ObjectsAfter -= int64(len(c.removed))
	return c.removed, nil
}

// choice is an eviction plan in the making.
type choice struct {
	g       *graph
	pinned  map[digest.Digest]bool
	removed map[digest.Digest]bool // blobs
	lists   map[string]bool        // tag lists
	evicted []Evicted
	freed   int64
}

func (c *choice) remove(d digest.Digest, reason string) {
	c.removed[d] = true
	c.freed += c.g.size[d]
	c.evicted = append(c.evicted, Evicted{Digest: d, Size: c.g.size[d], Reason: reason})
}

func (c *choice) dropList(key string) {
	c.lists[key] = true
	c.freed += c.g.tagLists[key].size
}

// free chooses until needed bytes are freed: first what nothing refers to
// (orphan blobs, tag lists), oldest first; then whole images, least
// recently used first. Nothing pinned or used after keepAfter is chosen.
func (c *choice) free(ctx context.Context, keepAfter time.Time, needed int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	g := c.g
	keep := func(d digest.Digest) bool {
		return c.pinned[d] || g.access[d].After(keepAfter)
	}
	type loose struct {
		blob digest.Digest // or
		list string
		used time.Time
	}
	var candidates []loose
	for d := range g.size {
		if _, isManifest := g.refs[d]; !isManifest && g.parents[d] == 0 && !keep(d) {
			candidates = append(candidates, loose{blob: d, used: g.access[d]})
		}
	}
	for k, l := range g.tagLists {
		if !c.lists[k] && !l.fetched.After(keepAfter) {
			candidates = append(candidates, loose{list: k, used: l.fetched})
		}
	}
	slices.SortFunc(candidates, func(a, b loose) int { return a.used.Compare(b.used) })
	for _, l := range candidates {
		if c.freed >= needed {
			return nil
		}
		if l.list != "" {
			c.dropList(l.list)
		} else {
			c.remove(l.blob, "orphan")
		}
	}

	type image struct {
		root   digest.Digest
		access time.Time
	}
	var images []image
	for _, root := range g.roots() {
		if err := ctx.Err(); err != nil {
			return err
		}
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
		if c.removed[d] || c.pinned[d] {
			return
		}
		if _, stored := g.size[d]; stored {
			c.remove(d, "lru")
		}
		for _, ref := range g.refs[d] {
			refcount[ref]--
			if refcount[ref] <= 0 {
				drop(ref)
			}
		}
	}
	for _, img := range images {
		if c.freed >= needed {
			break
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		drop(img.root)
	}
	return nil
}

// removeRows deletes the rows of removed blobs, the tags resolving to them
// and the tag lists removed, and records tombstones: if the process dies before the files are
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
		s.tags.forget(t)
	}
	for _, l := range r.TagLists {
		if err := bucket(tx, bucketTagLists).Delete([]byte(l)); err != nil {
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
// commitMu, so no commit of the same digest can be undone here. When ctx
// ends (or a file cannot be removed), the files left keep their
// tombstones: the next pass or Open removes them.
func (s *Store) unlink(ctx context.Context, files map[digest.Digest]bool) error {
	var gone [][]byte
	var err error
	for d := range files {
		if err = ctx.Err(); err != nil {
			break
		}
		// A row an index edit left with an invalid digest has no path.
		if d.Validate() == nil {
			if rerr := os.Remove(s.blobPath(d)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				err = rerr
				break
			}
		}
		gone = append(gone, []byte(d.String()))
	}
	if len(gone) > 0 {
		err = errors.Join(err, s.db.Update(func(tx *bolt.Tx) error {
			for _, k := range gone {
				if err := bucket(tx, bucketTombstones).Delete(k); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	if err != nil {
		return fmt.Errorf("evict: %d of %d files not unlinked yet: %w", len(files)-len(gone), len(files), err)
	}
	return nil
}

// hasTombstones reports whether an earlier pass left files to unlink.
func hasTombstones(tx *bolt.Tx) bool {
	k, _ := bucket(tx, bucketTombstones).Cursor().First()
	return k != nil
}

// leftoverTombstones returns the blobs whose rows an earlier pass removed
// but whose files it did not unlink. A digest committed again since has a
// row and a new file: its tombstone is dropped and the file kept.
func leftoverTombstones(tx *bolt.Tx) (map[digest.Digest]bool, error) {
	files := map[digest.Digest]bool{}
	var recommitted [][]byte
	err := bucket(tx, bucketTombstones).ForEach(func(k, _ []byte) error {
		if bucket(tx, bucketBlobs).Get(k) != nil {
			recommitted = append(recommitted, bytes.Clone(k))
		} else {
			files[digest.Digest(k)] = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, k := range recommitted {
		if err := bucket(tx, bucketTombstones).Delete(k); err != nil {
			return nil, err
		}
	}
	return files, nil
}
