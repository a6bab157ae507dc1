package cache

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// TagKey names a tag of a repository of an upstream registry.
type TagKey struct {
	Registry, Repo, Tag string
}

// String is the key's row in the tags bucket: registry/repo:tag.
func (k TagKey) String() string { return k.Registry + "/" + k.Repo + ":" + k.Tag }

// Tag is what a tag resolved to, and when upstream last confirmed it.
type Tag struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Confirmed time.Time     `json:"confirmed"`
}

// PutTag records that upstream said key resolves to t.Digest at t.Confirmed.
func (s *Store) PutTag(key TagKey, t Tag) error {
	k := key.String()
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := putJSON(tx, bucketTags, k, t); err != nil {
			return err
		}
		// Write transactions run one at a time: the memo changes in the
		// order the rows do.
		s.tags.set(k, t)
		return nil
	})
	if err != nil {
		s.tags.forget(k) // the row was not written after all
	}
	return err
}

// ConfirmTag records that upstream confirmed, at at, that key still resolves
// to d: what a revalidation that found the tag unchanged learned. GetTag
// answers the new time at once; the index gets it with the next Flush, in
// one transaction with the other confirmations and access times since,
// never one bbolt write (and fsync) per revalidation. So a crash loses at
// most the confirmations since the last Flush: the tag then looks
// confirmed when it was before them, which at worst costs a revalidation
// or a stale answer refused a little early. A tag the memo does not hold
// is written at once. Nothing is recorded when the row no longer says d
// (the tag moved or was removed meanwhile), nor when at is not later than
// the time it has.
func (s *Store) ConfirmTag(key TagKey, d digest.Digest, at time.Time) error {
	k := key.String()
	if s.tags.confirm(k, d, at) {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		var t Tag
		raw := bucket(tx, bucketTags).Get([]byte(k))
		if raw == nil || json.Unmarshal(raw, &t) != nil || t.Digest != d || !at.After(t.Confirmed) {
			return nil
		}
		t.Confirmed = at
		if err := putJSON(tx, bucketTags, k, t); err != nil {
			return err
		}
		s.tags.set(k, t)
		return nil
	})
}

// flushConfirmations writes, in tx, the confirmations ConfirmTag kept in
// memory, each only over a row that still says its digest with an older
// time (a tag moved, refetched or removed since keeps what it has). It
// returns them, to be put back if tx does not commit.
func (s *Store) flushConfirmations(tx *bolt.Tx) (map[string]Tag, error) {
	batch := s.tags.takePending()
	b := bucket(tx, bucketTags)
	for k, c := range batch {
		var t Tag
		raw := b.Get([]byte(k))
		if raw == nil || json.Unmarshal(raw, &t) != nil || t.Digest != c.Digest || !c.Confirmed.After(t.Confirmed) {
			continue
		}
		t.Confirmed = c.Confirmed
		if err := putJSON(tx, bucketTags, k, t); err != nil {
			return batch, err
		}
		s.tags.flushed(k, t)
	}
	return batch, nil
}

// GetTag returns the cached resolution of a tag, or ErrNotFound. A tag read
// once is answered from memory afterwards (every cached tag request reads
// one: a read transaction and a JSON decoding were a third of its cost).
func (s *Store) GetTag(key TagKey) (Tag, error) {
	k := key.String()
	if t, ok := s.tags.get(k); ok {
		return t, nil
	}
	gen := s.tags.generation()
	var t Tag
	if err := s.getJSON(bucketTags, k, &t); err != nil {
		return t, err
	}
	return s.tags.fill(k, t, gen), nil
}

// tagMemo holds tag rows, for GetTag, and the confirmations not yet
// written (pending: ConfirmTag). A row is as the index has it, with its
// pending confirmation's later time, if any: what the index will have once
// flushed. Every change of a tag row (a flush's included) changes the memo
// inside the transaction that makes it (so in commit order) and bumps its
// generation; a row read from the index is remembered only if nothing
// changed since the read began, so a read racing a write never puts back
// what the write replaced. At most maxMemoTags rows are kept; past that, an
// arbitrary one is dropped (it is read from the index again when asked
// for). At most maxMemoTags confirmations are pending; a confirmation that
// a failed flush cannot put back under that bound is dropped (the tag then
// looks confirmed when it was before, as after a crash). The zero value is
// empty.
type tagMemo struct {
	mu      sync.RWMutex
	m       map[string]Tag
	gen     uint64
	pending map[string]Tag
}

const maxMemoTags = 1 << 14

func (tm *tagMemo) get(k string) (Tag, bool) {
	tm.mu.RLock()
	defer tm.mu.RUnlock()
	t, ok := tm.m[k]
	return t, ok
}

func (tm *tagMemo) generation() uint64 {
	tm.mu.RLock()
	defer tm.mu.RUnlock()
	return tm.gen
}

// set records a row being written (with a later pending confirmation of
// its digest, which the next flush writes over it).
func (tm *tagMemo) set(k string, t Tag) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.gen++
	tm.keep(k, tm.withPending(k, t))
}

// fill remembers a row read at generation gen, unless a row changed since,
// and returns it with its pending confirmation, if any.
func (tm *tagMemo) fill(k string, t Tag, gen uint64) Tag {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	t = tm.withPending(k, t)
	if tm.gen == gen {
		tm.keep(k, t)
	}
	return t
}

// withPending is t, the row for k, with the later time of a pending
// confirmation of the same digest. Under mu.
func (tm *tagMemo) withPending(k string, t Tag) Tag {
	if c, ok := tm.pending[k]; ok && c.Digest == t.Digest && c.Confirmed.After(t.Confirmed) {
		t.Confirmed = c.Confirmed
	}
	return t
}

// flushed records that a flush wrote t, a pending confirmation, as the
// row for k: a memo row of the same digest with an older time (one read
// from the index before) takes its time.
func (tm *tagMemo) flushed(k string, t Tag) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.gen++
	if cur, ok := tm.m[k]; ok && cur.Digest == t.Digest && t.Confirmed.After(cur.Confirmed) {
		tm.m[k] = t
	}
}

// confirm moves the confirmation time of the row it holds for k to at,
// keeping it pending for the next flush, if that row says d. It reports
// false when it holds no row for k, or the pending confirmations are at
// their bound: the caller writes the row itself.
func (tm *tagMemo) confirm(k string, d digest.Digest, at time.Time) bool {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	t, ok := tm.m[k]
	if !ok {
		return false
	}
	if t.Digest != d || !at.After(t.Confirmed) {
		return true // moved, or confirmed later already: nothing to record
	}
	if _, queued := tm.pending[k]; !queued && len(tm.pending) >= maxMemoTags {
		return false
	}
	if tm.pending == nil {
		tm.pending = make(map[string]Tag)
	}
	t.Confirmed = at
	tm.gen++ // a read of the index begun before must not put back the older time
	tm.m[k] = t
	tm.pending[k] = t
	return true
}

// takePending returns the pending confirmations and forgets them.
func (tm *tagMemo) takePending() map[string]Tag {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	p := tm.pending
	tm.pending = nil
	return p
}

// putBack returns confirmations a failed flush took, keeping any newer,
// within the bound.
func (tm *tagMemo) putBack(batch map[string]Tag) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	for k, t := range batch {
		cur, ok := tm.pending[k]
		if ok && !t.Confirmed.After(cur.Confirmed) || !ok && len(tm.pending) >= maxMemoTags {
			continue
		}
		if tm.pending == nil {
			tm.pending = make(map[string]Tag)
		}
		tm.pending[k] = t
	}
}

func (tm *tagMemo) hasPending() bool {
	tm.mu.RLock()
	defer tm.mu.RUnlock()
	return len(tm.pending) > 0
}

// pendingConfirmations copies the pending confirmations.
func (tm *tagMemo) pendingConfirmations() map[string]Tag {
	tm.mu.RLock()
	defer tm.mu.RUnlock()
	return maps.Clone(tm.pending)
}

// forget drops a row being deleted (or whose write failed).
func (tm *tagMemo) forget(k string) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.gen++
	delete(tm.m, k)
}

func (tm *tagMemo) keep(k string, t Tag) {
	if tm.m == nil {
		tm.m = make(map[string]Tag)
	}
	if _, ok := tm.m[k]; !ok && len(tm.m) >= maxMemoTags {
		for old := range tm.m {
			delete(tm.m, old)
			break
		}
	}
	tm.m[k] = t
}

// A remembered tag list is bounded: it is a fallback for outages, held in
// the index, and upstream's list can be as long as upstream likes. PutTagList
// keeps the first tags of a longer list, up to MaxTagListTags of them and
// MaxTagListBytes for the whole row, and marks it Truncated.
const (
	MaxTagListTags  = 100_000
	MaxTagListBytes = 4 << 20
)

// TagListMaxAge: an eviction pass removes a tag list last fetched this long
// before its KeepAccessedAfter, whatever the limits (a repository nobody
// lists any more). Under the limits' pressure, a list fetched before
// KeepAccessedAfter goes with the orphans, oldest first.
const TagListMaxAge = 7 * 24 * time.Hour

// TagList is a repository's tag list as upstream last returned it.
type TagList struct {
	Tags    []string  `json:"tags"`
	Fetched time.Time `json:"fetched"`
	// Truncated says upstream's list was longer than a remembered list may
	// be: Tags holds only its first entries, and is not the whole list.
	Truncated bool `json:"truncated,omitempty"`
}

func repoKey(registry, repo string) string { return registry + "/" + repo }

// A tag list row is tagListFormat, the fetch time (unix nanoseconds, 8
// bytes, big endian), then tagListBody as JSON: eviction reads the time
// and the row's size without decoding the list. A row written before the
// format (JSON, starting with '{') is still read.
const (
	tagListFormat = 1
	tagListHeader = 9
)

type tagListBody struct {
	Tags      []string `json:"tags"`
	Truncated bool     `json:"truncated,omitempty"`
}

// PutTagList records a repository's tag list, truncated (and marked so)
// past MaxTagListTags tags or MaxTagListBytes.
func (s *Store) PutTagList(registry, repo string, l TagList) error {
	raw, err := encodeTagList(l)
	if err != nil {
		return fmt.Errorf("tag list of %s: %w", repoKey(registry, repo), err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return bucket(tx, bucketTagLists).Put([]byte(repoKey(registry, repo)), raw)
	})
}

// GetTagList returns the last tag list recorded for a repository.
func (s *Store) GetTagList(registry, repo string) (TagList, error) {
	var l TagList
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := bucket(tx, bucketTagLists).Get([]byte(repoKey(registry, repo)))
		if raw == nil {
			return ErrNotFound
		}
		var err error
		l, err = decodeTagList(raw) // decoding copies out of the transaction
		return err
	})
	return l, err
}

// encodeTagList encodes the first tags of l that fit the bounds.
func encodeTagList(l TagList) ([]byte, error) {
	budget := MaxTagListBytes - tagListHeader - len(`{"tags":[],"truncated":true}`)
	n := 0
	for ; n < len(l.Tags) && n < MaxTagListTags; n++ {
		enc, err := json.Marshal(l.Tags[n])
		if err != nil {
			return nil, err
		}
		if budget -= len(enc) + 1; budget < 0 { // a comma after each
			break
		}
	}
	body, err := json.Marshal(tagListBody{Tags: l.Tags[:n], Truncated: l.Truncated || n < len(l.Tags)})
	if err != nil {
		return nil, err
	}
	fetched := int64(0)
	if !l.Fetched.IsZero() {
		fetched = l.Fetched.UnixNano()
	}
	raw := make([]byte, 0, tagListHeader+len(body))
	raw = append(raw, tagListFormat)
	raw = binary.BigEndian.AppendUint64(raw, uint64(fetched))
	return append(raw, body...), nil
}

func decodeTagList(raw []byte) (TagList, error) {
	if len(raw) > 0 && raw[0] == '{' {
		var l TagList
		err := json.Unmarshal(raw, &l)
		return l, err
	}
	if len(raw) < tagListHeader || raw[0] != tagListFormat {
		return TagList{}, fmt.Errorf("tag list row of an unknown format")
	}
	var body tagListBody
	if err := json.Unmarshal(raw[tagListHeader:], &body); err != nil {
		return TagList{}, err
	}
	return TagList{Tags: body.Tags, Fetched: tagListFetched(raw), Truncated: body.Truncated}, nil
}

// tagListFetched reads a row's fetch time without decoding the list; zero
// for a row written before the format.
func tagListFetched(raw []byte) time.Time {
	if len(raw) < tagListHeader || raw[0] != tagListFormat {
		return time.Time{}
	}
	if ns := int64(binary.BigEndian.Uint64(raw[1:tagListHeader])); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}
