package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Damaged is a stored blob whose file no longer matches its digest.
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

// Verify re-hashes every stored blob. With repair, a blob whose bytes no
// longer match is removed (rows and file) so that it is fetched again.
func (s *Store) Verify(repair bool) (VerifyReport, error) {
	var digests []digest.Digest
	sizes := map[digest.Digest]int64{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return bucket(tx, bucketBlobs).ForEach(func(k, v []byte) error {
			var rec blobRecord
			_ = json.Unmarshal(v, &rec)
			d := digest.Digest(k)
			digests = append(digests, d)
			sizes[d] = rec.Size
			return nil
		})
	})
	if err != nil {
		return VerifyReport{}, err
	}
	var r VerifyReport
	for _, d := range digests {
		r.Checked++
		problem := ""
		if d.Validate() != nil {
			problem = "invalid digest in the index"
		} else if fi, err := os.Stat(s.blobPath(d)); errors.Is(err, os.ErrNotExist) {
			problem = "file missing"
		} else if err != nil {
			return r, err
		} else if fi.Size() != sizes[d] {
			problem = fmt.Sprintf("size %d, indexed %d", fi.Size(), sizes[d])
		} else if ok, err := fileMatches(s.blobPath(d), d); err != nil {
			return r, err
		} else if !ok {
			problem = "bytes do not match the digest"
		} else {
			r.Bytes += fi.Size()
		}
		if problem == "" {
			continue
		}
		dm := Damaged{Digest: d, Problem: problem}
		if repair {
			s.forget(d)
			dm.Removed = true
		}
		r.Damaged = append(r.Damaged, dm)
	}
	return r, nil
}
