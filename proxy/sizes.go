package proxy

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/opencontainers/go-digest"
)

// What bounds a blob download, tightest first:
//
//  1. the size a manifest this proxy fetched declared for the blob in that
//     repository (sizeHints): the descriptor is what the client will check,
//     so a byte more is never useful. It also serves as the size of a blob
//     upstream sends without Content-Length, so clients can stream it;
//  2. the size upstream announced (Content-Length);
//  3. MaxBlobSize (default 20 GiB) for a stream of unknown size;
//
// and a blob whose size is known before the first byte must fit on the
// disk with DiskReserve to spare, beside what the downloads in progress
// still have to write (diskBudget). Sizes from manifests served from the
// cache are not known here (the store keeps references, not sizes): such
// blobs are bounded by 2 and 3.

// maxSizeHints bounds the sizes remembered (a few MiB of keys at most).
const maxSizeHints = 1 << 14

// sizeHints remembers, per registry, repository and digest, the size the
// last manifest fetched from upstream declared for a blob. It is keyed by
// repository so that a manifest in one repository, which anybody may
// push, cannot shrink the bound of a blob pulled through another. The
// oldest hints are forgotten first.
type sizeHints struct {
	mu    sync.Mutex
	sizes map[string]int64
	order []string // ring of keys, oldest at next
	next  int
}

func hintKey(registry, repo string, d digest.Digest) string {
	return registry + "/" + repo + "@" + d.String()
}

// learn records the sizes of the config, layers and blobs an image
// manifest declares. Anything else (an index, not JSON) teaches nothing.
func (h *sizeHints) learn(registry, repo string, body []byte) {
	type descriptor struct {
		Digest digest.Digest `json:"digest"`
		Size   int64         `json:"size"`
	}
	var m struct {
		Config *descriptor  `json:"config"`
		Layers []descriptor `json:"layers"`
		Blobs  []descriptor `json:"blobs"`
	}
	if json.Unmarshal(body, &m) != nil {
		return
	}
	all := append(m.Layers, m.Blobs...)
	if m.Config != nil {
		all = append(all, *m.Config)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sizes == nil {
		h.sizes = make(map[string]int64)
		h.order = make([]string, maxSizeHints)
	}
	for _, d := range all {
		if d.Digest.Validate() != nil || d.Size < 0 {
			continue
		}
		k := hintKey(registry, repo, d.Digest)
		if _, ok := h.sizes[k]; !ok {
			delete(h.sizes, h.order[h.next])
			h.order[h.next] = k
			h.next = (h.next + 1) % maxSizeHints
		}
		h.sizes[k] = d.Size
	}
}

// lookup returns the declared size of d in repo, if a manifest said.
func (h *sizeHints) lookup(registry, repo string, d digest.Digest) (int64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	size, ok := h.sizes[hintKey(registry, repo, d)]
	return size, ok
}

// diskBudget refuses downloads that would not fit on the cache's disk.
type diskBudget struct {
	store   *cache.Store
	reserve int64 // < 0: no check

	mu      sync.Mutex
	pending int64 // bytes the admitted downloads have yet to write
}

// admit reserves size bytes for the download of d, or refuses it with
// ErrDiskFull if the disk's free space, less what the downloads in
// progress still have to write, less the reserve, is smaller. A size of
// -1 (unknown) is admitted: the stream's bound and the disk-full relay
// (relay.go) apply. The caller reports what it writes (wrote) and
// releases what is left (done).
func (b *diskBudget) admit(d digest.Digest, size int64) (*diskClaim, error) {
	c := &diskClaim{b: b}
	if b.reserve < 0 || size <= 0 {
		return c, nil
	}
	free, _, err := b.store.DiskSpace()
	if err != nil {
		return c, nil // unknown: a full disk is still caught by the relay
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := free - b.pending - b.reserve; size > room {
		return nil, fmt.Errorf("blob %s is %d bytes; the cache's disk has %d free, %d promised to downloads in progress, %d reserved: %w",
			d, size, free, b.pending, b.reserve, ErrDiskFull)
	}
	b.pending += size
	c.left = size
	return c, nil
}

// diskClaim is one admitted download's share of the disk budget.
type diskClaim struct {
	b    *diskBudget
	left int64
}

func (c *diskClaim) wrote(n int64) {
	if c.left == 0 {
		return
	}
	n = min(n, c.left)
	c.left -= n
	c.b.mu.Lock()
	c.b.pending -= n
	c.b.mu.Unlock()
}

func (c *diskClaim) done() { c.wrote(c.left) }
