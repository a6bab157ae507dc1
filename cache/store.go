package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
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
	bucketRoot      = []byte("v1")
	bucketBlobs     = []byte("blobs")
	bucketManifests = []byte("manifests")
	bucketTags      = []byte("tags")
	bucketTagLists  = []byte("taglists")
	bucketAccess    = []byte("access")

	allBuckets = [][]byte{bucketBlobs, bucketManifests, bucketTags, bucketTagLists, bucketAccess}
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
}

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
	db, err := bolt.Open(dbPath, 0o644, &bolt.Options{Timeout: opts.LockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w (waited %s for its lock)", dbPath, ErrLocked, opts.LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open index %s: %w", dbPath, err)
	}
	s := &Store{dir: dir, db: db, now: opts.Now, access: make(map[digest.Digest]time.Time)}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := s.removeIngestLeftovers(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := s.dropMissing(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

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

// dropMissing removes index rows whose blob file no longer exists, so the
// store never claims content it cannot serve.
func (s *Store) dropMissing() error {
	var missing [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		return bucket(tx, bucketBlobs).ForEach(func(k, _ []byte) error {
			d, err := digest.Parse(string(k))
			if err != nil {
				missing = append(missing, append([]byte(nil), k...))
				return nil
			}
			if _, err := os.Stat(s.blobPath(d)); errors.Is(err, os.ErrNotExist) {
				missing = append(missing, append([]byte(nil), k...))
			}
			return nil
		})
	})
	if err != nil || len(missing) == 0 {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, k := range missing {
			for _, b := range []([]byte){bucketBlobs, bucketManifests, bucketAccess} {
				if err := bucket(tx, b).Delete(k); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// Close flushes access times and closes the index.
func (s *Store) Close() error {
	ferr := s.FlushAccess()
	return errors.Join(ferr, s.db.Close())
}

// Dir is the data directory.
func (s *Store) Dir() string { return s.dir }

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

func putJSON(tx *bolt.Tx, b []byte, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return bucket(tx, b).Put([]byte(key), raw)
}
