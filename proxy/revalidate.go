package proxy

import (
	"context"
	"sync"
)

// revalidations coalesces tag revalidations: concurrent requests for one
// tag share the upstream HEAD in flight, so a burst of any size costs
// upstream one HEAD (two when it straddles the answer of one), and no
// request waits longer than one upstream round trip. A request joins a
// HEAD only while that HEAD's answer has not arrived: it is answered with
// what upstream said after it arrived, or at most one round trip before.
// (Waiting for a HEAD sent after each request arrived cost a request up to
// two round trips.) What a HEAD found is recorded by then, after its
// waiters were answered: the index write (an fsync) is not on their path.
type revalidations struct {
	// launch runs a HEAD on the proxy's own context, tracked by Close; it
	// reports false once the proxy is closing.
	launch func(func(context.Context)) bool
	// gate, if set, runs each HEAD within its registry's request slots
	// (Proxy.gateRevalidation).
	gate func(ctx context.Context, key string, run func(context.Context) (string, error)) (string, error)

	mu sync.Mutex
	m  map[string]*revalidation
}

type revalidation struct {
	done    chan struct{}
	waiters int // requests sharing it (under revalidations.mu)
	digest  string
	err     error
}

// head returns upstream's current digest for the tag, sharing the HEAD in
// flight with concurrent callers. run performs the HEAD on a context of
// its own; then, if set, runs after a successful HEAD's waiters were
// answered, with what it returned.
func (rv *revalidations) head(ctx context.Context, key string, run func(context.Context) (string, error), then func(context.Context, string)) (string, error) {
	rv.mu.Lock()
	if rv.m == nil {
		rv.m = make(map[string]*revalidation)
	}
	r := rv.m[key]
	if r == nil {
		r = &revalidation{done: make(chan struct{})}
		if !rv.launch(func(ctx context.Context) { rv.run(ctx, key, r, run, then) }) {
			rv.mu.Unlock()
			return "", errClosed
		}
		rv.m[key] = r
	}
	r.waiters++
	rv.mu.Unlock()

	select {
	case <-r.done:
		return r.digest, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (rv *revalidations) run(ctx context.Context, key string, r *revalidation, run func(context.Context) (string, error), then func(context.Context, string)) {
	if rv.gate != nil {
		r.digest, r.err = rv.gate(ctx, key, run)
	} else {
		r.digest, r.err = run(ctx)
	}
	rv.mu.Lock()
	delete(rv.m, key)
	rv.mu.Unlock()
	close(r.done)
	if r.err == nil && then != nil {
		then(ctx, r.digest)
	}
}
