package proxy

import (
	"container/list"
	"sync"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"
)

// DefaultManifestMemory is the default budget for manifest bodies kept in
// memory.
const DefaultManifestMemory = 64 << 20

// bodies keeps verified manifests in memory, least recently used first
// out, within a byte budget: a hot manifest is read from disk and hashed
// once, not per request, and concurrent requests share one buffer (100
// clients of a 4 MiB manifest cost 4 MiB, not 400). Loads of one digest
// are shared too. A manifest is content-addressed and verified when it is
// loaded, so the copy in memory can never be stale or wrong; bodies are
// read-only for everyone who gets them.
type bodies struct {
	max   int64
	loads singleflight.Group

	mu      sync.Mutex
	removed uint64 // the store's Removals when what is kept was loaded
	size    int64
	m       map[digest.Digest]*list.Element
	lru     list.List // of cache.Manifest, most recent first
}

func newBodies(max int64) *bodies {
	return &bodies{max: max, m: make(map[digest.Digest]*list.Element)}
}

// get returns the manifest d from memory, or loads it with load (sharing a
// load in progress) and keeps it if it fits.
// removed is the store's Removals before the load: a load that raced an
// eviction is answered but not kept.
func (b *bodies) get(d digest.Digest, removed uint64, load func(digest.Digest) (cache.Manifest, error)) (cache.Manifest, error) {
	if m, ok := b.lookup(d, removed); ok {
		return m, nil
	}
	v, err, _ := b.loads.Do(string(d), func() (any, error) {
		m, err := load(d)
		if err == nil {
			b.add(m, removed)
		}
		return m, err
	})
	if err != nil {
		return cache.Manifest{}, err
	}
	return v.(cache.Manifest), nil
}

// lookup returns d if it is kept, after forgetting everything kept should
// the store have removed rows since (removed: its Removals now).
func (b *bodies) lookup(d digest.Digest, removed uint64) (cache.Manifest, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.syncLocked(removed)
	e, ok := b.m[d]
	if !ok {
		return cache.Manifest{}, false
	}
	b.lru.MoveToFront(e)
	return e.Value.(cache.Manifest), true
}

// add keeps m unless it would take more than an eighth of the budget (one
// huge manifest must not push out every other).
func (b *bodies) add(m cache.Manifest, removed uint64) {
	n := int64(len(m.Body))
	if n > b.max/8 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if removed != b.removed {
		return // the store removed rows while this was loaded
	}
	if _, ok := b.m[m.Digest]; ok {
		return
	}
	b.m[m.Digest] = b.lru.PushFront(m)
	b.size += n
	for b.size > b.max {
		last := b.lru.Back()
		old := b.lru.Remove(last).(cache.Manifest)
		delete(b.m, old.Digest)
		b.size -= int64(len(old.Body))
	}
}

// syncLocked forgets everything kept once the store has removed rows since (an
// eviction pass, a repair): an evicted manifest must not be answered from
// memory, or its image would run on blobs nothing on disk refers to.
// Evictions are rare; the check is one atomic load per answer.
func (b *bodies) syncLocked(removed uint64) {
	if b.removed == removed {
		return
	}
	b.removed, b.size = removed, 0
	clear(b.m)
	b.lru.Init()
}

// manifest returns the stored manifest d, from memory when it is there.
// Every answer counts as an access of d, for eviction.
func (p *Proxy) manifest(d digest.Digest) (cache.Manifest, error) {
	m, err := p.bodies.get(d, p.store.Removals(), p.store.GetManifest)
	if err == nil {
		p.store.Touch(d)
	}
	return m, err
}
