package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-dev/lifeboat/upstream"
)

// flights coalesces upstream requests other than blob downloads:
// concurrent requests for the same manifest (by tag or by digest), or the
// same blob HEAD, share one upstream call, since registries count every
// manifest GET against a pull limit (a rollout of 32 pods must cost one,
// not 32). A call belongs to no client: it runs on the proxy's own context
// within its budget, taking one of its registry's request slots first
// (requestSlot), a client that leaves never cancels it, and once it ends
// it is forgotten, so the next request asks again.
type flights[T any] struct {
	mu sync.Mutex
	m  map[string]*flight[T]
}

type flight[T any] struct {
	done    chan struct{}
	slotted chan struct{} // closed once the call has a request slot
	waiters int           // callers that joined, under flights.mu (for tests and metrics)
	v       T
	err     error
}

// share returns the outcome of fetch for key, sharing a call in progress.
// The call gets budget, its wait for a request slot of m included; the
// caller waits at most budget too, and at most as long as its own ctx, and
// then gets an unavailable error (so that a cached answer can be served
// stale) while the call goes on for others.
func share[T any](p *Proxy, fl *flights[T], ctx context.Context, m *mirror, key, what string, budget time.Duration, fetch func(context.Context) (T, error)) (T, error) {
	var zero T
	fl.mu.Lock()
	if fl.m == nil {
		fl.m = make(map[string]*flight[T])
	}
	f, ok := fl.m[key]
	if !ok {
		f = &flight[T]{done: make(chan struct{}), slotted: make(chan struct{})}
		started := p.background(func(bg context.Context) {
			fctx, cancel := context.WithTimeout(bg, budget)
			defer cancel()
			if leave, err := p.requestSlot(fctx, m, what); err != nil {
				f.err = err
			} else {
				close(f.slotted)
				f.v, f.err = fetch(fctx)
				leave()
			}
			fl.mu.Lock()
			delete(fl.m, key)
			fl.mu.Unlock()
			close(f.done)
		})
		if !started {
			fl.mu.Unlock()
			return zero, errClosed
		}
		fl.m[key] = f
	}
	f.waiters++
	fl.mu.Unlock()

	wait := time.NewTimer(budget)
	defer wait.Stop()
	var err error
	select {
	case <-f.done:
		if f.err == nil {
			return f.v, nil
		}
		err = f.err
	case <-ctx.Done():
		return zero, &upstream.Error{Registry: m.name, Reason: upstream.ReasonTimeout, Err: fmt.Errorf("waiting for the %s: %w", what, ctx.Err())}
	case <-wait.C:
		select {
		case <-f.slotted:
			err = &upstream.Error{Registry: m.name, Reason: upstream.ReasonTimeout, Err: fmt.Errorf("waiting for the %s: no answer within %s", what, budget)}
		default:
			err = busy(m.name, what, budget)
		}
	}
	if errors.Is(err, ErrBusy) {
		p.metrics.busy.WithLabelValues(m.name, "request").Inc()
	}
	return zero, err
}

// shared is share for manifest fetches. key is the one manifests.go
// builds (registry/repo@digest or registry/repo:tag); the sizes a fetched
// manifest declares for its blobs are remembered for that repository
// (sizeHints), once per fetch.
func (p *Proxy) shared(ctx context.Context, registry, key string, budget time.Duration, fetch func(context.Context) (*Manifest, error)) (*Manifest, error) {
	m, err := p.mirror(registry)
	if err != nil {
		return nil, err
	}
	fm, err := share(p, &p.manifests, ctx, m, key, "manifest fetch", budget, func(ctx context.Context) (*Manifest, error) {
		fm, err := fetch(ctx)
		if err == nil {
			if repo, ok := repoOfKey(registry, key); ok {
				p.sizes.learn(registry, repo, fm.Body)
			}
		}
		return fm, err
	})
	if err != nil {
		return nil, err
	}
	cp := *fm // each caller sets its own Source; the body is shared, read-only
	return &cp, nil
}

// repoOfKey is the repository in a manifest flight key: registry/repo@digest
// or registry/repo:tag (a repository holds neither "@" nor ":").
func repoOfKey(registry, key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, registry+"/")
	if !ok {
		return "", false
	}
	if repo, _, ok := strings.Cut(rest, "@"); ok {
		return repo, repo != ""
	}
	i := strings.LastIndexByte(rest, ':')
	return rest[:max(i, 0)], i > 0
}
