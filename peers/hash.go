package peers

import (
	"cmp"
	"hash/fnv"
	"slices"
)

// rank orders members by their rendezvous (highest random weight) weight
// for key, highest first: the first R are key's owners. Every node that
// knows the same members computes the same order, with no coordination,
// and a member joining or leaving moves only the keys it gains or held
// (about 1/N of them).
func rank(members []string, key string) []string {
	type weighted struct {
		addr string
		w    uint64
	}
	ws := make([]weighted, len(members))
	for i, m := range members {
		ws[i] = weighted{m, weight(m, key)}
	}
	slices.SortFunc(ws, func(a, b weighted) int {
		if c := cmp.Compare(b.w, a.w); c != 0 {
			return c
		}
		return cmp.Compare(a.addr, b.addr)
	})
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.addr
	}
	return out
}

// weight is member's weight for key: FNV-1a of both, then a 64-bit
// finalizer (splitmix64's) so that similar addresses spread evenly.
func weight(member, key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(member))
	h.Write([]byte{0})
	h.Write([]byte(key))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
