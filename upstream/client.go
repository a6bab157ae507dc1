// Package upstream is lifeboat's client for one remote registry endpoint.
// It owns what talking to a registry takes: deadlines on every phase (dial,
// TLS, response headers, a stall limit on bodies), authentication through
// go-containerregistry's transport with one token exchange per repository
// at a time, the classification of failures (Error, Unavailable), a circuit
// breaker, and the upstream request and rate-limit metrics.
//
// The proxy uses a Client per mirrored registry; the cluster tier will use
// the same type for peers. It knows nothing of the cache or of policy: it
// fetches, verifies nothing, and says how a call failed.
package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/lifeboat-dev/lifeboat/internal/logtext"
)

// Config describes one registry endpoint.
type Config struct {
	// Name is the registry name clients use: what containerd sends as ns=.
	Name string
	// URL is the registry's endpoint, e.g. https://registry-1.docker.io.
	URL string
	// Timeouts bound calls to this registry.
	Timeouts Timeouts
	// InsecureSkipVerify disables TLS certificate checks (test registries).
	InsecureSkipVerify bool
	// CAFile is a PEM bundle trusted for this registry besides the system
	// roots (a private registry's CA).
	CAFile string
	// Breaker tunes this registry's circuit breaker.
	Breaker BreakerConfig
	// TokenRealms are the hosts ("host", any port, or "host:port") besides
	// the registry's own host that may receive its credentials when its
	// WWW-Authenticate challenge names them as the token realm, over https
	// only. Any other realm is still asked for a token, anonymously.
	// Nil: DefaultTokenRealms of Name and of URL's host; empty: the
	// registry's own host only.
	TokenRealms []string
}

// Options are what every Client of a process shares.
type Options struct {
	// Keychain resolves credentials. Nil: anonymous.
	Keychain authn.Keychain
	// UserAgent is sent with every request. Empty: "lifeboat".
	UserAgent string
	// Logger receives the circuit breaker's transitions, a warning the
	// first time credentials are withheld from a token realm and, at debug
	// level, an "upstream call" line per request sent. Nil: discard.
	Logger *slog.Logger
	// Metrics counts requests, breaker state and rate limits. Nil: none.
	Metrics *Metrics
	// Now returns the current time. Nil: time.Now.
	Now func() time.Time
	// DialContext opens connections to the registry (and its token
	// service) instead of a TCP dialer: for tests, which reach an
	// in-memory registry inside a testing/synctest bubble
	// (internal/upstreamtest's Network), and for unusual deployments (a
	// registry behind a tunnel or a unix socket). It is called with
	// Timeouts.Dial as the context's deadline; every other timeout (TLS,
	// response headers, the revalidation and request budgets, the body
	// stall limit) applies as over TCP. An HTTP(S)_PROXY from the
	// environment still applies: the dialer then reaches the proxy. Not
	// exposed as a setting. Nil: net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Client talks to one registry endpoint. It is safe for concurrent use.
type Client struct {
	cfg      Config
	base     *url.URL
	reg      name.Registry // the endpoint, for ping and token scopes
	keychain authn.Keychain
	authReg  name.Registry // the registry name, for credential lookup
	rt       http.RoundTripper
	breaker  *breaker
	now      func() time.Time
	auth     transports
	log      *slog.Logger
}

// New builds the client for one registry.
func New(cfg Config, opts Options) (*Client, error) {
	cfg.Timeouts = cfg.Timeouts.withDefaults()
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream %s: URL %q must be http(s)://host[:port]", cfg.Name, cfg.URL)
	}
	if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
		// The registry API lives at /v2/ on the host; a path would be used
		// by some requests (ours) and not others (the ping and token
		// exchange), so it is refused rather than half honoured.
		return nil, fmt.Errorf("upstream %s: URL %q must be http(s)://host[:port] with no path, query or user", cfg.Name, cfg.URL)
	}
	var nameOpts []name.Option
	if u.Scheme == "http" {
		nameOpts = append(nameOpts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", cfg.Name, err)
	}
	authReg := reg
	if r, err := name.NewRegistry(cfg.Name); err == nil {
		authReg = r
	}
	tlsConfig, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	realmEntries := cfg.TokenRealms
	if realmEntries == nil {
		realmEntries = append(DefaultTokenRealms(cfg.Name), DefaultTokenRealms(u.Hostname())...)
	}
	realms, err := parseRealmHosts(realmEntries)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", cfg.Name, err)
	}
	if opts.Keychain == nil {
		opts.Keychain = authn.NewMultiKeychain()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "lifeboat"
	}
	var rt http.RoundTripper = &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialContext(cfg.Timeouts.Dial, opts.DialContext),
		TLSHandshakeTimeout:   cfg.Timeouts.TLSHandshake,
		ResponseHeaderTimeout: cfg.Timeouts.ResponseHeader,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   16,
		ForceAttemptHTTP2:     true,
		TLSClientConfig:       tlsConfig,
	}
	opts.Metrics.initRegistry(cfg.Name)
	rt = opts.Metrics.instrument(cfg.Name, rt)
	rt = userAgent{ua: opts.UserAgent, next: rt}
	rt = schemeGuard{scheme: u.Scheme, host: u.Host, next: rt}
	c := &Client{
		cfg: cfg, base: u, reg: reg, keychain: opts.Keychain, authReg: authReg,
		rt:  newCredGuard(cfg.Name, u, reg.RegistryStr(), realms, opts.Logger, rt),
		now: opts.Now,
		log: opts.Logger,
		auth: transports{
			m: make(map[string]cachedTransport),
		},
	}
	c.breaker = newBreaker(cfg.Breaker, opts.Now, breakerReporter(cfg.Name, opts.Logger, opts.Metrics))
	if opts.Logger != nil && authReg.RegistryStr() != reg.RegistryStr() {
		// Credentials are looked up by the name clients use, and go to the
		// endpoint configured for it: say so once, since a mirror endpoint
		// (docker.io=https://mirror.example) then receives them.
		opts.Logger.Info("upstream credentials for this registry name are sent to its configured endpoint",
			"registry", cfg.Name, "endpoint", u.Host)
	}
	return c, nil
}

// dialContext is the transport's dialer: a TCP dialer bounded by timeout,
// or dial (Options.DialContext) under the same bound.
func dialContext(timeout time.Duration, dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if dial == nil {
		return (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return dial(ctx, network, addr)
	}
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	c := &tls.Config{InsecureSkipVerify: cfg.InsecureSkipVerify} //nolint:gosec // opt-in, for test registries
	if cfg.CAFile == "" {
		return c, nil
	}
	pem, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: CA file: %w", cfg.Name, err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("upstream %s: CA file %s holds no PEM certificate", cfg.Name, cfg.CAFile)
	}
	c.RootCAs = pool
	return c, nil
}

// Name is the registry name clients use.
func (c *Client) Name() string { return c.cfg.Name }

// Timeouts are the client's timeouts, defaults applied: callers read the
// Revalidate and Request budgets from here.
func (c *Client) Timeouts() Timeouts { return c.cfg.Timeouts }

// CircuitOpen reports whether the breaker is open: upstream failed
// repeatedly and is not being asked now.
func (c *Client) CircuitOpen() bool { return c.breaker.isOpen() }

// RepoPath is the repository name upstream knows: Docker Hub keeps official
// images under library/, which clients leave out.
func (c *Client) RepoPath(repo string) string {
	if c.cfg.Name == "docker.io" && !strings.Contains(repo, "/") {
		return "library/" + repo
	}
	return repo
}

func (c *Client) classify(err error) *Error {
	return classify(c.cfg.Name, c.isRegistryURL, err)
}

// apiPath matches the registry API paths lifeboat calls: the ping and the
// manifests, blobs and tags of a repository. Anything else (a token realm,
// even one on the registry's host, such as quay.io's /v2/auth) is not.
var apiPath = regexp.MustCompile(`^/v2/(?:$|.+/(?:manifests|blobs|tags)/)`)

func (c *Client) isRegistryURL(target *url.URL) bool {
	prefix := strings.TrimSuffix(c.base.Path, "/")
	return target.Host == c.base.Host && apiPath.MatchString(strings.TrimPrefix(target.Path, prefix))
}

// schemeGuard refuses to send a request to the registry's host with another
// scheme than configured: go-containerregistry falls back from https to http
// for hosts that look local, and an https upstream must never be downgraded.
type schemeGuard struct {
	scheme, host string
	next         http.RoundTripper
}

func (g schemeGuard) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host == g.host && r.URL.Scheme != g.scheme {
		return nil, fmt.Errorf("refusing %s to %s: upstream is configured as %s", r.URL.Scheme, g.host, g.scheme)
	}
	return g.next.RoundTrip(r)
}

// userAgent sets the User-Agent of every request, token exchanges included.
type userAgent struct {
	ua   string
	next http.RoundTripper
}

func (u userAgent) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", u.ua)
	return u.next.RoundTrip(r)
}

func (c *Client) url(repo, kind, ref string) string {
	p := *c.base
	p.Path = strings.TrimSuffix(p.Path, "/") + "/v2/" + repo + "/" + kind + "/" + ref
	p.RawQuery = ""
	return p.String()
}

// errCircuitOpen is the cause of an Error while the breaker is open.
var errCircuitOpen = errors.New("circuit breaker open: upstream failed repeatedly, not asking it now")

// do sends a request for repo and returns the response if it is 2xx; any
// other outcome is an *Error and the body is closed. While the circuit
// breaker is open it fails at once without calling upstream.
func (c *Client) do(ctx context.Context, repo, method, target string, header http.Header) (*http.Response, error) {
	ok, probe := c.breaker.allow()
	if !ok {
		return nil, &Error{Registry: c.cfg.Name, Reason: ReasonCircuitOpen, Err: errCircuitOpen}
	}
	resp, err := c.send(ctx, repo, method, target, header)
	c.record(ctx, err, probe)
	return resp, err
}

// record tells the breaker how a call went.
func (c *Client) record(ctx context.Context, err error, probe bool) {
	var ue *Error
	switch {
	case err == nil:
		c.breaker.success()
	case errors.Is(ctx.Err(), context.Canceled):
		c.breaker.release(probe) // the caller left; that says nothing of upstream
	case errors.As(err, &ue) && ue.Unavailable():
		c.breaker.failure(ue.Reason, ue.RetryAfter, probe)
	default:
		c.breaker.success() // an answer about the content: upstream is up
	}
}

func (c *Client) send(ctx context.Context, repo, method, target string, header http.Header) (*http.Response, error) {
	ct, err := c.transport(ctx, repo)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	start := time.Now()
	resp, err := (&http.Client{Transport: ct.rt}).Do(req)
	c.logRequest(ctx, req, resp, err, time.Since(start))
	if err != nil {
		return nil, c.classify(err)
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		c.auth.forget(repo) // the next call resolves credentials again
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, statusError(c.cfg.Name, resp)
	}
	return resp, nil
}

// logRequest writes the debug line of one request sent upstream: how long
// upstream took to answer (to the response headers; a body is read later),
// a token refresh or retry within it included. The ping and token exchange
// before a repository's first request (Client.transport) have no line.
// The path and error are clipped, as the access line's are: an error may
// quote what upstream sent.
func (c *Client) logRequest(ctx context.Context, req *http.Request, resp *http.Response, err error, took time.Duration) {
	if c.log == nil || !c.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	var buf [6]slog.Attr
	attrs := append(buf[:0], slog.String("registry", c.cfg.Name), slog.String("method", req.Method),
		slog.String("path", logtext.Clip(req.URL.Path, maxLoggedPath)), slog.Duration("duration", took))
	if err != nil {
		attrs = append(attrs, slog.String("error", logtext.Clip(err.Error(), maxLoggedError)))
	} else {
		attrs = append(attrs, slog.Int("status", resp.StatusCode))
	}
	c.log.LogAttrs(ctx, slog.LevelDebug, "upstream call", attrs...)
}

// The debug line's bounds, the access line's (registry/registry.go).
const (
	maxLoggedPath  = 256
	maxLoggedError = 512
)
