package proxy

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/lifeboat-dev/lifeboat/upstream"
)

// flights coalesces manifest fetches: concurrent requests for the same
// manifest (by tag or by digest) share one upstream GET, since registries
// count every manifest GET against a pull limit (a rollout of 32 pods must
// cost one, not 32). A fetch belongs to no client: it runs on the proxy's
// own context within its budget, a client that leaves never cancels it,
// and once it ends it is forgotten, so the next request asks again.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done    chan struct{}
	waiters int // callers that joined, under flights.mu (for tests and metrics)
	m       *Manifest
	err     error
}

// do returns the outcome of fetch for key, sharing a fetch in progress.
// The fetch gets budget; the caller waits at most budget too, and at most
// as long as its own ctx, and then gets an unavailable error (so that a
// cached answer can be served stale) while the fetch goes on for others.
func (p *Proxy) shared(ctx context.Context, registry, key string, budget time.Duration, fetch func(context.Context) (*Manifest, error)) (*Manifest, error) {
	fl := &p.manifests
	fl.mu.Lock()
	if fl.m == nil {
		fl.m = make(map[string]*flight)
	}
	f, ok := fl.m[key]
	if !ok {
		f = &flight{done: make(chan struct{})}
		started := p.background(func(bg context.Context) {
			fctx, cancel := context.WithTimeout(bg, budget)
			defer cancel()
			f.m, f.err = fetch(fctx)
			fl.mu.Lock()
			delete(fl.m, key)
			fl.mu.Unlock()
			close(f.done)
		})
		if !started {
			fl.mu.Unlock()
			return nil, errClosed
		}
		fl.m[key] = f
	}
	f.waiters++
	fl.mu.Unlock()

	wait := time.NewTimer(budget)
	defer wait.Stop()
	select {
	case <-f.done:
		if f.err != nil {
			return nil, f.err
		}
		cp := *f.m // each caller sets its own Source; the body is shared, read-only
		return &cp, nil
	case <-ctx.Done():
		return nil, &upstream.Error{Registry: registry, Reason: upstream.ReasonTimeout, Err: fmt.Errorf("waiting for the manifest fetch: %w", ctx.Err())}
	case <-wait.C:
		return nil, &upstream.Error{Registry: registry, Reason: upstream.ReasonTimeout, Err: fmt.Errorf("waiting for the manifest fetch: no answer within %s", budget)}
	}
}
