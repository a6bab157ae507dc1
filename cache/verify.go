package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Damaged is a stored blob whose file is missing, has another size than
// its row says, or no longer matches its digest.
type Damaged struct {
	Digest  digest.Digest `json:"digest"`
	Problem string        `json:"problem"`
	Removed bool          `json:"removed"`
}

// VerifyReport says what Verify found.
type VerifyReport struct {
	Checked int       `json:"checked"`
	Bytes   int64     `json:"bytes"`
	Damaged []Damaged `json:"damaged,omitempty"`
}

// Verify re-hashes every stored blob. It checks without holding commits
// off, and reports a problem only once it has re-checked it with commits
// and evictions held off: a blob evicted or committed again meanwhile is
// not damage. With repair, a damaged blob's rows and file are removed, in
// that same hold, so that it is fetched again; Removed says whether that
// happened, and the removals that failed are returned, joined, after the
// whole pass.
//
// When ctx ends (checked between blobs and while hashing one), Verify
// returns the report so far with an error wrapping ctx.Err().
func (s *Store) Verify(ctx context.Context, repair bool) (VerifyReport, error) {
	rows, err := s.blobRows()
	if err != nil {
		return VerifyReport{}, fmt.Errorf("verify: %w", err)
	}
	var r VerifyReport
	var failed []error
	for _, seen := range rows {
		if err := ctx.Err(); err != nil {
			return r, errors.Join(append(failed, fmt.Errorf("verify: %w", err))...)
		}
		r.Checked++
		problem, err := s.check(ctx, &seen)
		if err != nil {
			return r, errors.Join(append(failed, fmt.Errorf("verify %s: %w", seen.d, err))...)
		}
		if problem == "" {
			r.Bytes += seen.row.Size
			continue
		}
		confirmed, removed, err := s.recheck(seen, repair)
		if err != nil {
			failed = append(failed, fmt.Errorf("verify %s: %w", seen.d, err))
		}
		if confirmed {
			r.Damaged = append(r.Damaged, Damaged{Digest: seen.d, Problem: problem, Removed: removed})
		}
	}
	return r, errors.Join(failed...)
}

// blobRows lists every blob row, in one read transaction.
func (s *Store) blobRows() ([]sighting, error) {
	var rows []sighting
	err := s.db.View(func(tx *bolt.Tx) error {
		return bucket(tx, bucketBlobs).ForEach(func(k, v []byte) error {
			var rec blobRecord
			_ = json.Unmarshal(v, &rec) // an unreadable row is size 0: damaged
			rows = append(rows, sighting{d: digest.Digest(k), row: rec})
			return nil
		})
	})
	return rows, err
}

// check looks at seen's file without any lock and says what is wrong with
// it ("" when nothing); it records the file it looked at in seen.
func (s *Store) check(ctx context.Context, seen *sighting) (string, error) {
	if seen.d.Validate() != nil {
		return "invalid digest in the index", nil
	}
	f, err := os.Open(s.blobPath(seen.d))
	if errors.Is(err, fs.ErrNotExist) {
		return "file missing", nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	seen.file = fi
	switch {
	case !fi.Mode().IsRegular():
		return "not a regular file", nil
	case fi.Size() != seen.row.Size:
		return fmt.Sprintf("size %d, indexed %d", fi.Size(), seen.row.Size), nil
	}
	if ok, err := hashMatches(ctx, f, seen.d); err != nil {
		return "", err
	} else if !ok {
		return "bytes do not match the digest", nil
	}
	return "", nil
}
