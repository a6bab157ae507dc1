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
	// gen is the keychain's generation the credentials came from: a
	// transport of an older one is not reused.
	gen uint64
	// credentialed says lifeboat had credentials for the repository, so
	// what it fetches with them may be private.
	credentialed bool
}

func (t *transports) get(repo string, now time.Time, gen uint64) (cachedTransport, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ct, ok := t.m[repo]
	if !ok || !now.Before(ct.expires) || ct.gen != gen {
		return cachedTransport{}, false
	}
	return ct, true
}

// forget drops repo's transport: upstream refused its credentials, which
// may have changed since.
func (t *transports) forget(repo string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, repo)
}

func (t *transports) put(repo string, ct cachedTransport, now time.Time) {
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
	ct.expires = now.Add(transportTTL)
	t.m[repo] = ct
}

// transport returns an authenticated transport for pulls from repo. On
// first use it pings the registry and exchanges a token, once for all the
// callers that ask meanwhile: the exchange runs on a context of its own
// (bounded by the Request timeout), so a caller that leaves does not fail
// the others, and each caller waits only as long as its own context allows.
//
// A keychain that cannot say (a credential plugin or helper that fails or
// hangs, a docker config that no longer parses) is an auth-unavailable
// failure: upstream cannot be asked, so cached content is served stale.
func (c *Client) transport(ctx context.Context, repo string) (cachedTransport, error) {
	gen := c.generation()
	if ct, ok := c.auth.get(repo, c.now(), gen); ok {
		return ct, nil
	}
	ch := c.auth.flights.DoChan(repo, func() (any, error) {
		if ct, ok := c.auth.get(repo, c.now(), gen); ok {
			return ct, nil // another flight just finished
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.Timeouts.Request)
		defer cancel()
		auth, err := authn.Resolve(actx, c.keychain, c.authReg.Repo(repo))
		if err != nil {
			return nil, &Error{Registry: c.cfg.Name, Reason: ReasonAuthUnavailable, Err: fmt.Errorf("resolve credentials: %w", err)}
		}
		scope := c.reg.Repo(repo).Scope(transport.PullScope)
		rt, err := transport.NewWithContext(actx, c.reg, auth, c.rt, []string{scope})
		if err != nil {
			return nil, c.classify(err)
		}
		ct := cachedTransport{rt: rt, gen: gen, credentialed: auth != authn.Anonymous}
		c.auth.put(repo, ct, c.now())
		return ct, nil
	})
	c.auth.waiting.Add(1)
	defer c.auth.waiting.Add(-1)
	select {
	case r := <-ch:
		if r.Err != nil {
			return cachedTransport{}, r.Err
		}
		return r.Val.(cachedTransport), nil
	case <-ctx.Done():
		return cachedTransport{}, &Error{Registry: c.cfg.Name, Reason: ReasonTimeout, Err: fmt.Errorf("waiting for the registry's ping and token exchange: %w", ctx.Err())}
	}
}

// generational is a keychain whose credentials change (a docker config
// re-read, a plugin's new answer): Generation moves when they may have.
type generational interface{ Generation() uint64 }

func (c *Client) generation() uint64 {
	if g, ok := c.keychain.(generational); ok {
		return g.Generation()
	}
	return 0
}
