package cache

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrNotFound is returned when the store holds no such blob, manifest, tag or
// tag list.
var ErrNotFound = errors.New("not found in cache")

// ErrLocked is returned by Open when another process holds the index.
var ErrLocked = errors.New("data directory is in use by another process")

var (
	bucketRoot       = []byte("v1")
	bucketBlobs      = []byte("blobs")
	bucketManifests  = []byte("manifests")
	bucketTags       = []byte("tags")
	bucketTagLists   = []byte("taglists")
	bucketAccess     = []byte("access")
	bucketPins       = []byte("pins")
	bucketTombstones = []byte("tombstones")
	bucketRepos      = []byte("repos")

	allBuckets = [][]byte{bucketBlobs, bucketManifests, bucketTags, bucketTagLists, bucketAccess, bucketPins, bucketTombstones, bucketRepos}
)

// Options tune a Store. The zero value is usable.
type Options struct {
	// LockTimeout bounds how long Open waits for another process to release
	// index.db. Zero means one second.
	LockTimeout time.Duration
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
}

// Store is the content-addressed store. It is safe for concurrent use.
type Store struct {
	dir string
	db  *bolt.DB
	now func() time.Time

	mu     sync.Mutex
	access map[digest.Digest]time.Time // not yet flushed to bbolt

	tags tagMemo // tag rows, for GetTag
	// removals counts blob rows removed (eviction, repair, a file found
	// damaged): a cache of this store's content above it compares it to
	// know its copy may hold what the store no longer does.
	removals atomic.Uint64

	rebuiltFrom string // a corrupt index moved aside at Open, if any

	// commitMu: a commit (rename and index row) holds it shared; eviction
	// holds it exclusively while it chooses, removes rows and unlinks (not
	// while it plans a pass that removes nothing), and so does forgetting
	// a damaged blob while it re-checks and removes it.
	commitMu sync.RWMutex
	evictMu  sync.Mutex // one eviction at a time
}

// maxManifestBytes bounds what is read to recognise an adopted manifest.
const maxManifestBytes = 4 << 20

// errCorrupt marks an index bbolt cannot read.
var errCorrupt = errors.New("index is corrupt")

// openIndex opens bbolt and checks every page of it; a file bbolt cannot
// read (or that makes it panic) is reported as errCorrupt.
func openIndex(path string, lockTimeout time.Duration) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				_ = db.Close()
			}
			db, err = nil, fmt.Errorf("%w: %v", errCorrupt, r)
		}
	}()
	db, err = bolt.Open(path, 0o644, &bolt.Options{Timeout: lockTimeout})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, ErrLocked
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum),
		errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrInvalidMapping),
		err != nil && strings.Contains(err.Error(), "file size too small"): // a truncated file
		return nil, fmt.Errorf("%w: %w", errCorrupt, err)
	case err != nil:
		return nil, err
	}
	var problems []error
	_ = db.View(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			problems = append(problems, e)
		}
		return nil
	})
	if len(problems) > 0 {
		_ = db.Close()
		return nil, fmt.Errorf("%w: %w", errCorrupt, errors.Join(problems...))
	}
	return db, nil
}

// Removals is how many times blob rows were removed since Open (eviction,
// repair, a damaged file forgotten). A memory of the store's content that
// saw a different count may hold what the store no longer does.
func (s *Store) Removals() uint64 { return s.removals.Load() }

// RebuiltFrom names the corrupt index Open moved aside and rebuilt from the
// blob files ("" when the index was sound). Tags and tag lists are lost in a
// rebuild; blobs and manifests are re-hashed and kept.
func (s *Store) RebuiltFrom() string { return s.rebuiltFrom }

// Open opens (creating if needed) the store in dir, removes leftovers of
// downloads interrupted by a crash and drops index rows whose file is gone.
func Open(dir string, opts Options) (*Store, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	for _, d := range []string{dir, filepath.Join(dir, "blobs"), filepath.Join(dir, "ingest")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create data directory: %w", err)
		}
	}
	dbPath := filepath.Join(dir, "index.db")
	db, err := openIndex(dbPath, opts.LockTimeout)
	if errors.Is(err, ErrLocked) {
		return nil, fmt.Errorf("open %s: %w (waited %s for its lock)", dbPath, ErrLocked, opts.LockTimeout)
	}
	movedAside := ""
	if errors.Is(err, errCorrupt) {
		// Do not crash-loop on a corrupt index: move it aside and rebuild
		// from the blob files, which reconcile re-hashes and adopts.
		movedAside = fmt.Sprintf("%s.corrupt-%d", dbPath, opts.Now().Unix())
		if rerr := os.Rename(dbPath, movedAside); rerr != nil {
			return nil, fmt.Errorf("move corrupt index aside: %w (after: %w)", rerr, err)
		}
		db, err = openIndex(dbPath, opts.LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open index %s: %w", dbPath, err)
	}
	s := &Store{dir: dir, db: db, now: opts.Now, access: make(map[digest.Digest]time.Time), rebuiltFrom: movedAside}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := s.removeIngestLeftovers(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := s.reconcile(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// init creates the root bucket and every bucket under it.
func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketRoot)
		if err != nil {
			return err
		}
		for _, b := range allBuckets {
			if _, err := root.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
}

// removeIngestLeftovers deletes downloads that were in progress when the
// previous process stopped. Only one process holds the index, so nothing else
// can be writing there.
func (s *Store) removeIngestLeftovers() error {
	dir := filepath.Join(s.dir, "ingest")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read ingest directory: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("remove ingest leftover: %w", err)
		}
	}
	return nil
}

// reconcile makes the index and the blob files agree after a crash or a
// hand edit: a row whose file is gone (or has another size) is dropped; a
// file without a row is adopted if its bytes hash to its name, and removed
// otherwise.
func (s *Store) reconcile() error {
	rows := map[string]int64{}
	tombstones := map[string]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		if err := bucket(tx, bucketTombstones).ForEach(func(k, _ []byte) error {
			tombstones[string(k)] = true
			return nil
		}); err != nil {
			return err
		}
		return bucket(tx, bucketBlobs).ForEach(func(k, v []byte) error {
			var rec blobRecord
			if json.Unmarshal(v, &rec) == nil {
				rows[string(k)] = rec.Size
			} else {
				rows[string(k)] = -1
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	var drop []string
	adopt := map[string]int64{}
	adoptedManifests := map[string]manifestRecord{}
	adoptedAccess := map[string]time.Time{}
	root := filepath.Join(s.dir, "blobs")
	err = filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		parts := strings.Split(filepath.ToSlash(rel), "/")
		d := digest.Digest("")
		if len(parts) == 3 {
			d = digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[2])
		}
		fi, ferr := e.Info()
		size, indexed := rows[d.String()]
		switch {
		case d.Validate() != nil || ferr != nil:
			return os.Remove(path) // not a blob of ours
		case indexed && size == fi.Size():
			delete(rows, d.String())
			return nil
		case indexed:
			drop = append(drop, d.String()) // size differs: damaged
			delete(rows, d.String())
			return os.Remove(path)
		case tombstones[d.String()]:
			return os.Remove(path) // evicted; the process died before the unlink
		}
		if ok, err := fileMatches(path, d); err != nil {
			return err
		} else if !ok {
			return os.Remove(path)
		}
		adopt[d.String()] = fi.Size()
		adoptedAccess[d.String()] = fi.ModTime()
		if fi.Size() <= maxManifestBytes {
			// A manifest keeps its row (media type, references) too.
			if body, err := os.ReadFile(path); err == nil {
				if refs, mt, err := ParseManifest(body); err == nil {
					adoptedManifests[d.String()] = manifestRecord{MediaType: mt, Refs: refs}
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reconcile blob files with the index: %w", err)
	}
	for k := range rows { // rows left have no file
		drop = append(drop, k)
	}
	if len(drop) == 0 && len(adopt) == 0 && len(tombstones) == 0 {
		return nil
	}
	now := s.now()
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, k := range drop {
			if err := deleteBlobRows(tx, k); err != nil {
				return err
			}
		}
		for k, size := range adopt {
			if err := putJSON(tx, bucketBlobs, k, blobRecord{Size: size, Stored: now}); err != nil {
				return err
			}
			if m, ok := adoptedManifests[k]; ok {
				if err := putJSON(tx, bucketManifests, k, m); err != nil {
					return err
				}
			}
			// Its file's time stands for its last access, so that
			// eviction after a rebuild is not arbitrary.
			t := adoptedAccess[k]
			if err := bucket(tx, bucketAccess).Put([]byte(k), binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano()))); err != nil {
				return err
			}
		}
		for k := range tombstones {
			if err := bucket(tx, bucketTombstones).Delete([]byte(k)); err != nil {
				return err
			}
		}
		return nil
	})
}

// fileMatches re-hashes a file against the digest it is named by.
func fileMatches(path string, d digest.Digest) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	return hashMatches(context.Background(), f, d)
}

// hashMatches hashes what r holds against d; it stops when ctx ends.
func hashMatches(ctx context.Context, r io.Reader, d digest.Digest) (bool, error) {
	v := d.Verifier()
	if _, err := io.Copy(v, ctxReader{ctx, r}); err != nil {
		return false, fmt.Errorf("re-hash %s: %w", d, err)
	}
	return v.Verified(), nil
}

// ctxReader reads from r until ctx ends, so that hashing a big file can be
// interrupted between reads.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Close flushes access times and tag confirmations, and closes the index.
func (s *Store) Close() error {
	ferr := s.Flush()
	return errors.Join(ferr, s.db.Close())
}

// Dir is the data directory.
func (s *Store) Dir() string { return s.dir }

// deleteBlobRows deletes everything the index says about one blob.
func deleteBlobRows(tx *bolt.Tx, key string) error {
	for _, b := range [][]byte{bucketBlobs, bucketManifests, bucketAccess} {
		if err := bucket(tx, b).Delete([]byte(key)); err != nil {
			return err
		}
	}
	return nil
}

// bucket is the bucket name under the root bucket.
func bucket(tx *bolt.Tx, name []byte) *bolt.Bucket {
	return tx.Bucket(bucketRoot).Bucket(name)
}

// getJSON decodes the row key of bucket b into v, or returns ErrNotFound.
func (s *Store) getJSON(b []byte, key string, v any) error {
	return s.db.View(func(tx *bolt.Tx) error {
		raw := bucket(tx, b).Get([]byte(key))
		if raw == nil {
			return ErrNotFound
		}
		return json.Unmarshal(raw, v)
	})
}

// putJSON encodes v as the row key of bucket b.
func putJSON(tx *bolt.Tx, b []byte, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return bucket(tx, b).Put([]byte(key), raw)
}
