package peers

import (
	"log/slog"
	"slices"
	"strings"
	"sync"
)

// Member is one ready lifeboat of the cluster.
type Member struct {
	// Addr is its peer API's host:port.
	Addr string
	// Node is the Kubernetes node it runs on, if known.
	Node string
}

// membership is the current set of ready members, this node's included
// when it is ready: every node hashes over the same set, so all agree on a
// digest's owners.
type membership struct {
	self, node string // this node's peer address and node name
	log        *slog.Logger
	changed    func(ready int)

	mu      sync.RWMutex
	addrs   []string // sorted
	selfIn  bool
	started bool
}

// set replaces the members, and logs one line when they changed.
func (m *membership) set(members []Member) {
	var addrs []string
	selfIn := false
	for _, mem := range members {
		if mem.Addr == "" {
			continue
		}
		if m.isSelf(mem) {
			selfIn = true
			addrs = append(addrs, m.self) // one name for this node, however it is listed
			continue
		}
		addrs = append(addrs, mem.Addr)
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	m.mu.Lock()
	old, started := m.addrs, m.started
	m.addrs, m.selfIn, m.started = addrs, selfIn, true
	m.mu.Unlock()
	if started && slices.Equal(old, addrs) {
		return
	}
	added, removed := diff(old, addrs), diff(addrs, old)
	m.log.Info("peer membership changed", "ready", len(addrs), "self_included", selfIn,
		"added", strings.Join(added, ","), "removed", strings.Join(removed, ","))
	if m.changed != nil {
		m.changed(len(addrs))
	}
}

// isSelf recognises this node: by its peer address, or by its node name.
func (m *membership) isSelf(mem Member) bool {
	return mem.Addr == m.self || (m.node != "" && mem.Node == m.node)
}

// snapshot is the ready members' addresses, sorted; read-only.
func (m *membership) snapshot() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.addrs
}

// diff is what a has that b has not (both sorted).
func diff(a, b []string) []string {
	var out []string
	for _, x := range a {
		if _, found := slices.BinarySearch(b, x); !found {
			out = append(out, x)
		}
	}
	return out
}
