package upstream

import (
	"context"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// RefusesAnonymous reports whether upstream refuses an anonymous client ref
// in repo: whether the repository is private. It asks with a ping, token
// exchange and HEAD of its own, without credentials (nothing cached, so it
// is for an occasional check). 401 and 403 mean private; so does 404,
// since a caller asks about what lifeboat's credentials found. When
// lifeboat itself has no credentials for the repository, everything it
// fetches there anyone could: false, without asking. An upstream that
// gives no usable answer is an *Error, as for any call.
func (c *Client) RefusesAnonymous(ctx context.Context, repo, ref string) (bool, error) {
	if c.breaker.isOpen() {
		return false, &Error{Registry: c.cfg.Name, Reason: ReasonCircuitOpen, Err: errCircuitOpen}
	}
	ct, err := c.transport(ctx, repo)
	if err != nil {
		return false, err
	}
	if !ct.credentialed {
		return false, nil
	}
	scope := c.reg.Repo(repo).Scope(transport.PullScope)
	rt, err := transport.NewWithContext(ctx, c.reg, authn.Anonymous, c.rt, []string{scope})
	if err != nil {
		if ue := c.classify(err); ue.Reason != ReasonDenied {
			return false, ue
		}
		return true, nil // the token service refused an anonymous client
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, c.url(repo, "manifests", ref), nil)
	if err != nil {
		return false, err
	}
	req.Header = manifestHeader()
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return false, c.classify(err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		return false, nil
	case resp.StatusCode == http.StatusUnauthorized, resp.StatusCode == http.StatusForbidden, resp.StatusCode == http.StatusNotFound:
		return true, nil
	}
	return false, statusError(c.cfg.Name, resp)
}
