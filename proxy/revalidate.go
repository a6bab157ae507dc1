package proxy

import (
	"context"
	"errors"
	"sync"

	"github.com/lifeboat-dev/lifeboat/upstream"
)

// revalidations coalesces tag revalidations: concurrent requests for one tag
// share one upstream HEAD, and no request is answered from a HEAD that was
// sent before it arrived. Requests arriving while a HEAD is in flight queue
// for the next one, which starts when the current one ends; so a burst of
// any size costs upstream at most two HEADs. If the current HEAD finds
// upstream unavailable, that finding (made after the queued requests
// arrived) answers them too, and no second HEAD is sent.
type revalidations struct {
	// launch runs a HEAD on the proxy's own context, tracked by Close; it
	// reports false once the proxy is closing.
	launch func(func(context.Context)) bool
	// gate, if set, runs each HEAD within its registry's request slots
	// (Proxy.gateRevalidation).
	gate func(ctx context.Context, key string, run func(context.Context) (string, error)) (string, error)

	mu sync.Mutex
	m  map[string]*tagFlights
}

type tagFlights struct {
	cur, next *revalidation
}

type revalidation struct {
	done   chan struct{}
	digest string
	err    error
}

// head returns upstream's current digest for the tag, sharing the HEAD with
// concurrent callers. run performs the HEAD on a context of its own.
func (rv *revalidations) head(ctx context.Context, key string, run func(context.Context) (string, error)) (string, error) {
	rv.mu.Lock()
	if rv.m == nil {
		rv.m = make(map[string]*tagFlights)
	}
	tf := rv.m[key]
	var mine *revalidation
	switch {
	case tf == nil:
		mine = &revalidation{done: make(chan struct{})}
		if !rv.launch(func(ctx context.Context) { rv.run(ctx, key, mine, run) }) {
			rv.mu.Unlock()
			return "", errClosed
		}
		rv.m[key] = &tagFlights{cur: mine}
	case tf.next == nil:
		mine = &revalidation{done: make(chan struct{})}
		tf.next = mine
	default:
		mine = tf.next
	}
	rv.mu.Unlock()

	select {
	case <-mine.done:
		return mine.digest, mine.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (rv *revalidations) run(ctx context.Context, key string, r *revalidation, run func(context.Context) (string, error)) {
	for r != nil {
		if rv.gate != nil {
			r.digest, r.err = rv.gate(ctx, key, run)
		} else {
			r.digest, r.err = run(ctx)
		}
		rv.mu.Lock()
		tf := rv.m[key]
		next := tf.next
		var ue *upstream.Error
		if next != nil && r.err != nil && errors.As(r.err, &ue) && ue.Unavailable() {
			// Upstream was found unavailable after the queued requests
			// arrived: that answers them too.
			next.digest, next.err = r.digest, r.err
			close(next.done)
			next = nil
		}
		tf.cur, tf.next = next, nil
		if next == nil {
			delete(rv.m, key)
		}
		rv.mu.Unlock()
		close(r.done)
		r = next
	}
}
