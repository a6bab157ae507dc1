package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// ErrDigestMismatch is returned by Ingest.Commit when the bytes written do not
// hash to the digest they were announced under.
var ErrDigestMismatch = errors.New("content does not match its digest")

// ErrSizeMismatch is returned by Ingest.Commit when fewer or more bytes were
// written than announced.
var ErrSizeMismatch = errors.New("content does not match its announced size")

// BlobInfo describes a stored blob.
type BlobInfo struct {
	Digest digest.Digest
	Size   int64
	Stored time.Time
}

type blobRecord struct {
	Size   int64     `json:"size"`
	Stored time.Time `json:"stored"`
}

// blobPath is where a validated digest lives. Callers validate first: a
// digest that passed Validate has a registered algorithm and a hex encoding
// of the right length, so it cannot escape the blobs directory.
func (s *Store) blobPath(d digest.Digest) string {
	enc := d.Encoded()
	return filepath.Join(s.dir, "blobs", d.Algorithm().String(), enc[:2], enc)
}

func validate(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("digest %q: %w", d, err)
	}
	return nil
}

// Stat reports whether the blob is stored, without touching its access time.
func (s *Store) Stat(d digest.Digest) (BlobInfo, error) {
	if err := validate(d); err != nil {
		return BlobInfo{}, err
	}
	var rec blobRecord
	if err := s.getJSON(bucketBlobs, d.String(), &rec); err != nil {
		return BlobInfo{}, err
	}
	return BlobInfo{Digest: d, Size: rec.Size, Stored: rec.Stored}, nil
}

// OpenBlob opens a stored blob for reading and records the access. The file
// was verified against its digest before it became visible.
func (s *Store) OpenBlob(d digest.Digest) (*os.File, BlobInfo, error) {
	info, err := s.Stat(d)
	if err != nil {
		return nil, BlobInfo{}, err
	}
	seen := sighting{d: d, row: blobRecord{Size: info.Size, Stored: info.Stored}}
	f, err := os.Open(s.blobPath(d))
	if errors.Is(err, os.ErrNotExist) {
		// The row outlived its file (removed by hand, or a disk fault):
		// forget it so the content is fetched again. (If an eviction
		// removed both since Stat, forget finds the row gone.)
		return nil, BlobInfo{}, s.notServed(seen, fmt.Errorf("blob %s: file missing: %w", d, ErrNotFound))
	}
	if err != nil {
		return nil, BlobInfo{}, fmt.Errorf("open blob %s: %w", d, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, BlobInfo{}, fmt.Errorf("stat blob %s: %w", d, err)
	}
	if fi.Size() != info.Size {
		// Truncated or grown behind our back: never serve it.
		f.Close()
		seen.file = fi
		return nil, BlobInfo{}, s.notServed(seen, fmt.Errorf("blob %s: file size differs from the index: %w", d, ErrNotFound))
	}
	s.Touch(d)
	return f, info, nil
}

// notServed forgets a blob OpenBlob found damaged and returns err, with
// the failure to forget it if any.
func (s *Store) notServed(seen sighting, err error) error {
	if _, ferr := s.forget(seen); ferr != nil {
		return fmt.Errorf("%w (%w)", err, ferr)
	}
	return err
}

// sighting is what a check made without the commit lock saw of a blob: its
// row, and its file (nil when missing). An eviction or a commit may have
// changed both before the check's conclusion is acted on.
type sighting struct {
	d    digest.Digest
	row  blobRecord
	file os.FileInfo
}

// unchanged reports whether the row and the file of seen.d are still the
// ones seen: the same row (size and stored time), and the file still
// missing or still the same file (same inode, size and modification time).
// Nothing rewrites a blob file in place (a commit renames a new file over
// it), so the same file still has the bytes that were checked: what was
// wrong with them still is, without re-hashing with commits held off. The
// caller holds commitMu exclusively, so that neither can change meanwhile.
func (s *Store) unchanged(seen sighting) (bool, error) {
	var row blobRecord
	found := false
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := bucket(tx, bucketBlobs).Get([]byte(seen.d.String()))
		if found = raw != nil; found {
			_ = json.Unmarshal(raw, &row) // as Verify lists it: an unreadable row is size 0
		}
		return nil
	})
	if err != nil || !found || row.Size != seen.row.Size || !row.Stored.Equal(seen.row.Stored) {
		return false, err
	}
	if seen.d.Validate() != nil {
		return true, nil // no file: the row is what is wrong
	}
	fi, err := os.Stat(s.blobPath(seen.d))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return seen.file == nil, nil
	case err != nil:
		return false, err
	case seen.file == nil:
		return false, nil // committed again since
	}
	return os.SameFile(fi, seen.file) && fi.Size() == seen.file.Size() && fi.ModTime().Equal(seen.file.ModTime()), nil
}

// recheck confirms, holding commits and evictions off, that a problem seen
// without the lock is still there (see unchanged); with remove, it then
// removes that row and that file, in the same hold. removed says whether
// both went.
func (s *Store) recheck(seen sighting, remove bool) (confirmed, removed bool, err error) {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if confirmed, err = s.unchanged(seen); err != nil || !confirmed || !remove {
		return confirmed, false, err
	}
	if seen.d.Validate() == nil {
		if err := os.Remove(s.blobPath(seen.d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return true, false, fmt.Errorf("remove blob %s: %w", seen.d, err)
		}
	}
	s.removals.Add(1)
	if err := s.db.Update(func(tx *bolt.Tx) error { return deleteBlobRows(tx, seen.d.String()) }); err != nil {
		return true, false, fmt.Errorf("forget blob %s: %w", seen.d, err)
	}
	s.mu.Lock()
	delete(s.access, seen.d)
	s.mu.Unlock()
	return true, true, nil
}

// forget removes a blob's rows and file, found damaged or missing, if they
// are still the ones seen: a blob evicted and committed again since is
// left alone. It reports whether it removed them.
func (s *Store) forget(seen sighting) (bool, error) {
	_, removed, err := s.recheck(seen, true)
	return removed, err
}

// Ingest is a blob being written. Write hashes as it goes; Commit verifies,
// makes the file durable, moves it into place and indexes it. Exactly one of
// Commit or Abort must be called.
type Ingest struct {
	s       *Store
	f       *os.File
	d       digest.Digest
	size    int64 // -1 when unknown
	h       hash.Hash
	written int64
}

// NewIngest starts writing blob d. size is the announced length, or -1 if
// unknown.
func (s *Store) NewIngest(d digest.Digest, size int64) (*Ingest, error) {
	if err := validate(d); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, "ingest"), d.Encoded()[:12]+"-*")
	if err != nil {
		return nil, fmt.Errorf("create ingest file: %w", err)
	}
	return &Ingest{s: s, f: f, d: d, size: size, h: d.Algorithm().Hash()}, nil
}

// Path is the file being written; readers may open it to follow the download.
func (w *Ingest) Path() string { return w.f.Name() }

// Write writes to the ingest file and hashes what was written.
func (w *Ingest) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.written += int64(n)
	return n, err
}

// Hash is the running hash of the bytes written so far. A caller that
// abandons the file (Abort) may go on hashing with it.
func (w *Ingest) Hash() hash.Hash { return w.h }

// Abort discards the ingest file.
func (w *Ingest) Abort() {
	_ = w.f.Close()
	_ = os.Remove(w.f.Name())
}

// Commit verifies the digest and size, fsyncs and renames the file into
// place, fsyncs the directory, and only then writes the index row. On any
// error the ingest file is removed and nothing becomes visible.
func (w *Ingest) Commit() error { return w.commit(nil) }

// commit is Commit with more index writes (extra) in the same transaction
// as the blob row.
func (w *Ingest) commit(extra func(*bolt.Tx) error) (err error) {
	defer func() {
		if err != nil {
			w.Abort()
		}
	}()
	if w.size >= 0 && w.written != w.size {
		return fmt.Errorf("blob %s: wrote %d bytes, expected %d: %w", w.d, w.written, w.size, ErrSizeMismatch)
	}
	if got := digest.NewDigest(w.d.Algorithm(), w.h); got != w.d {
		return fmt.Errorf("blob %s: got %s: %w", w.d, got, ErrDigestMismatch)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("sync ingest file: %w", err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("close ingest file: %w", err)
	}
	w.s.commitMu.RLock()
	defer w.s.commitMu.RUnlock()
	dst := w.s.blobPath(w.d)
	if err := mkdirSynced(filepath.Dir(dst)); err != nil {
		return err
	}
	if err := os.Rename(w.f.Name(), dst); err != nil {
		return fmt.Errorf("move blob into place: %w", err)
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return err
	}
	now := w.s.now()
	err = w.s.db.Update(func(tx *bolt.Tx) error {
		if err := putJSON(tx, bucketBlobs, w.d.String(), blobRecord{Size: w.written, Stored: now}); err != nil {
			return err
		}
		if extra != nil {
			return extra(tx)
		}
		return nil
	})
	if err != nil {
		// The file is in place without a row; Open adopts it after a
		// re-hash, or it is fetched again.
		return fmt.Errorf("index blob %s: %w", w.d, err)
	}
	w.s.Touch(w.d)
	return nil
}

// mkdirSynced creates dir (a blob shard) if needed, and fsyncs its parent
// so the new entry survives a power cut.
func mkdirSynced(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create blob directory: %w", err)
	}
	return syncDir(filepath.Dir(dir))
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory for sync: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
