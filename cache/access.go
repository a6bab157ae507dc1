package cache

import (
	"encoding/binary"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Touch records an access to d in memory. Flush writes the batch.
func (s *Store) Touch(d digest.Digest) {
	now := s.now()
	s.mu.Lock()
	s.access[d] = now
	s.mu.Unlock()
}

// Flush writes what the store keeps in memory to be written in batches —
// the access times recorded since the last flush (Touch) and the tag
// confirmations (ConfirmTag) — in one bbolt transaction.
func (s *Store) Flush() error {
	s.mu.Lock()
	empty := len(s.access) == 0
	s.mu.Unlock()
	if empty && !s.tags.hasPending() {
		return nil
	}
	var batch map[digest.Digest]time.Time
	var confirmations map[string]Tag
	err := s.db.Update(func(tx *bolt.Tx) error {
		// Taken from memory inside the write transaction: an eviction
		// (also a write transaction) sees each time either in memory or in
		// the index, never in neither — unless this transaction fails:
		// its batch is put back just after it ends.
		s.mu.Lock()
		batch = s.access
		s.access = make(map[digest.Digest]time.Time, len(batch))
		s.mu.Unlock()
		b := bucket(tx, bucketAccess)
		for d, t := range batch {
			// A value of its own for each Put: bbolt keeps the slice until
			// the transaction commits.
			v := binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano()))
			if err := b.Put([]byte(d.String()), v); err != nil {
				return err
			}
		}
		var err error
		confirmations, err = s.flushConfirmations(tx)
		return err
	})
	if err != nil {
		// Put the batches back (keeping any newer times) so they are not lost.
		s.mu.Lock()
		for d, t := range batch {
			if cur, ok := s.access[d]; !ok || cur.Before(t) {
				s.access[d] = t
			}
		}
		s.mu.Unlock()
		s.tags.putBack(confirmations)
	}
	return err
}

// LastAccess returns when d was last read, from memory or the index.
func (s *Store) LastAccess(d digest.Digest) (time.Time, bool) {
	s.mu.Lock()
	t, ok := s.access[d]
	s.mu.Unlock()
	if ok {
		return t, true
	}
	_ = s.db.View(func(tx *bolt.Tx) error {
		if raw := bucket(tx, bucketAccess).Get([]byte(d.String())); len(raw) == 8 {
			t, ok = time.Unix(0, int64(binary.BigEndian.Uint64(raw))), true
		}
		return nil
	})
	return t, ok
}
