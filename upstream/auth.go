package upstream

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/singleflight"
)

// transportTTL is how long an authenticated transport for one repository is
// reused before a fresh ping and token exchange.
const transportTTL = 10 * time.Minute

// maxTransports bounds the remembered transports (one per repository).
// Past it, expired ones are swept, at most once per sweepEvery; if that is
// not enough, the oldest go.
const (
	maxTransports = 1024
	sweepEvery    = time.Minute
)

// transports holds an authenticated transport per repository, and the
// token exchanges in flight: concurrent cold requests for one repository
// share one ping and one token request.
type transports struct {
	flights singleflight.Group
	waiting atomic.Int32 // callers waiting on a flight (tests gather them)

	mu        sync.Mutex
	m         map[string]cachedTransport
	lastSweep time.Time
}

type cachedTransport struct {
	rt      http.RoundTripper
	expires time.Time
}

func (t *transports) get(repo string, now time.Time) (http.RoundTripper, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ct, ok := t.m[repo]
	if !ok || !now.Before(ct.expires) {
		return nil, false
	}
	return ct.rt, true
}

func (t *transports) put(repo string, rt http.RoundTripper, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) >= maxTransports && now.Sub(t.lastSweep) >= sweepEvery {
		t.lastSweep = now
		for k, v := range t.m {
			if !now.Before(v.expires) {
				delete(t.m, k)
			}
		}
	}
	if len(t.m) >= maxTransports {
		// Still full of live entries: drop the one closest to expiry.
		// Rare (more than maxTransports repositories within the TTL), so a
		// scan is fine here.
		var oldest string
		for k, v := range t.m {
			if oldest == "" || v.expires.Before(t.m[oldest].expires) {
				oldest = k
			}
		}
		delete(t.m, oldest)
	}
	t.m[repo] = cachedTransport{rt: rt, expires: now.Add(transportTTL)}
}

// transport returns an authenticated transport for pulls from repo. On
// first use it pings the registry and exchanges a token, once for all the
// callers that ask meanwhile: the exchange runs on a context of its own
// (bounded by the Request timeout), so a caller that leaves does not fail
// the others, and each caller waits only as long as its own context allows.
func (c *Client) transport(ctx context.Context, repo string) (http.RoundTripper, error) {
	if rt, ok := c.auth.get(repo, c.now()); ok {
		return rt, nil
	}
	ch := c.auth.flights.DoChan(repo, func() (any, error) {
		if rt, ok := c.auth.get(repo, c.now()); ok {
			return rt, nil // another flight just finished
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.Timeouts.Request)
		defer cancel()
		auth, err := authn.Resolve(actx, c.keychain, c.authRes)
		if err != nil {
			return nil, &Error{Registry: c.cfg.Name, Reason: ReasonOther, Err: fmt.Errorf("resolve credentials: %w", err)}
		}
		scope := c.reg.Repo(repo).Scope(transport.PullScope)
		rt, err := transport.NewWithContext(actx, c.reg, auth, c.rt, []string{scope})
		if err != nil {
			return nil, c.classify(err)
		}
		c.auth.put(repo, rt, c.now())
		return rt, nil
	})
	c.auth.waiting.Add(1)
	defer c.auth.waiting.Add(-1)
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(http.RoundTripper), nil
	case <-ctx.Done():
		return nil, &Error{Registry: c.cfg.Name, Reason: ReasonTimeout, Err: fmt.Errorf("waiting for the registry's ping and token exchange: %w", ctx.Err())}
	}
}
