package proxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Timeouts bound every upstream call. Zero fields take the defaults below.
type Timeouts struct {
	// Dial bounds establishing a TCP connection. Default 3s.
	Dial time.Duration
	// TLSHandshake bounds the TLS handshake. Default 5s.
	TLSHandshake time.Duration
	// ResponseHeader bounds the wait for response headers. Default 10s.
	ResponseHeader time.Duration
	// Revalidate is the whole budget (auth included) for checking a cached
	// tag with upstream; past it the cached digest is served stale.
	// Default 1.5s.
	Revalidate time.Duration
	// Request is the whole budget for a manifest or tag list fetch that
	// has no cached answer to fall back on. Default 10s.
	Request time.Duration
	// BodyStall is how long a blob download may make no progress before it
	// is abandoned. Default 30s.
	BodyStall time.Duration
}

// DefaultTimeouts are used for zero fields of Timeouts.
var DefaultTimeouts = Timeouts{
	Dial:           3 * time.Second,
	TLSHandshake:   5 * time.Second,
	ResponseHeader: 10 * time.Second,
	Revalidate:     1500 * time.Millisecond,
	Request:        10 * time.Second,
	BodyStall:      30 * time.Second,
}

func (t Timeouts) withDefaults() Timeouts {
	d := DefaultTimeouts
	for _, f := range []struct {
		dst *time.Duration
		def time.Duration
	}{
		{&t.Dial, d.Dial}, {&t.TLSHandshake, d.TLSHandshake}, {&t.ResponseHeader, d.ResponseHeader},
		{&t.Revalidate, d.Revalidate}, {&t.Request, d.Request}, {&t.BodyStall, d.BodyStall},
	} {
		if *f.dst <= 0 {
			*f.dst = f.def
		}
	}
	return t
}

// UpstreamConfig describes one mirrored registry.
type UpstreamConfig struct {
	// Name is the registry name clients use: what containerd sends as ns=.
	Name string
	// URL is the registry's endpoint, e.g. https://registry-1.docker.io.
	URL string
	// Timeouts bound calls to this registry.
	Timeouts Timeouts
	// TagTTL skips revalidation of a tag confirmed less than TagTTL ago.
	// Zero: always revalidate.
	TagTTL time.Duration
	// InsecureSkipVerify disables TLS certificate checks (test registries).
	InsecureSkipVerify bool
	// CAFile is a PEM bundle trusted for this registry besides the system
	// roots (a private registry's CA).
	CAFile string
	// Breaker tunes this registry's circuit breaker.
	Breaker BreakerConfig
	// ServeStaleOnNotFound serves a cached tag stale when upstream says it
	// no longer exists (404). Default false: a deleted tag is not served.
	ServeStaleOnNotFound bool
	// MaxStaleness refuses to serve a tag stale once upstream last
	// confirmed it longer ago than this. Zero: no limit.
	MaxStaleness time.Duration
	// MaxConcurrentFills bounds the blob downloads from this registry at
	// once; more wait for a slot. Zero: 16.
	MaxConcurrentFills int
}

// manifestMediaTypes is the Accept list for manifests: every format lifeboat
// stores and serves unchanged. Docker schema 1 is not among them: its digest
// is not the digest of its bytes.
var manifestMediaTypes = []string{
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}

// transportTTL is how long an authenticated transport for one repository is
// reused before a fresh ping and token exchange.
const transportTTL = 10 * time.Minute

// upstream is the client for one registry: authentication through
// go-containerregistry's transport, deadlines on every call.
type upstream struct {
	cfg       UpstreamConfig
	base      *url.URL
	reg       name.Registry // the endpoint, for ping and token scopes
	keychain  authn.Keychain
	authRes   authn.Resource // the registry name, for credential lookup
	rt        http.RoundTripper
	breaker   *breaker
	fillSlots chan struct{}

	mu         sync.Mutex
	transports map[string]cachedTransport
}

type cachedTransport struct {
	rt      http.RoundTripper
	expires time.Time
}

func newUpstream(cfg UpstreamConfig, keychain authn.Keychain, wrap func(http.RoundTripper) http.RoundTripper, b *breaker) (*upstream, error) {
	cfg.Timeouts = cfg.Timeouts.withDefaults()
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream %s: URL %q must be http(s)://host[:port]", cfg.Name, cfg.URL)
	}
	var opts []name.Option
	if u.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", cfg.Name, err)
	}
	var authRes authn.Resource = reg
	if r, err := name.NewRegistry(cfg.Name); err == nil {
		authRes = r
	}
	tlsConfig := &tls.Config{InsecureSkipVerify: cfg.InsecureSkipVerify} //nolint:gosec // opt-in, for test registries
	if cfg.CAFile != "" {
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
		tlsConfig.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: cfg.Timeouts.Dial, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   cfg.Timeouts.TLSHandshake,
		ResponseHeaderTimeout: cfg.Timeouts.ResponseHeader,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   16,
		ForceAttemptHTTP2:     true,
		TLSClientConfig:       tlsConfig,
	}
	return &upstream{
		cfg: cfg, base: u, reg: reg, keychain: keychain, authRes: authRes,
		rt:         schemeGuard{scheme: u.Scheme, host: u.Host, next: wrap(t)},
		breaker:    b,
		fillSlots:  make(chan struct{}, cmp.Or(cfg.MaxConcurrentFills, 16)),
		transports: make(map[string]cachedTransport),
	}, nil
}

func (u *upstream) classify(err error) *UpstreamError {
	return classify(u.cfg.Name, u.isRegistryURL, err)
}

// apiPath matches the registry API paths lifeboat calls: the ping and the
// manifests, blobs and tags of a repository. Anything else (a token realm,
// even one on the registry's host, such as quay.io's /v2/auth) is not.
var apiPath = regexp.MustCompile(`^/v2/(?:$|.+/(?:manifests|blobs|tags)/)`)

func (u *upstream) isRegistryURL(target *url.URL) bool {
	prefix := strings.TrimSuffix(u.base.Path, "/")
	return target.Host == u.base.Host && apiPath.MatchString(strings.TrimPrefix(target.Path, prefix))
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

// transport returns an authenticated transport for pulls from repo, doing
// the ping and token exchange on first use.
func (u *upstream) transport(ctx context.Context, repo string) (http.RoundTripper, error) {
	now := time.Now()
	u.mu.Lock()
	ct, ok := u.transports[repo]
	u.mu.Unlock()
	if ok && now.Before(ct.expires) {
		return ct.rt, nil
	}
	auth, err := authn.Resolve(ctx, u.keychain, u.authRes)
	if err != nil {
		return nil, &UpstreamError{Registry: u.cfg.Name, Reason: ReasonOther, Err: fmt.Errorf("resolve credentials: %w", err)}
	}
	scope := u.reg.Repo(repo).Scope(transport.PullScope)
	rt, err := transport.NewWithContext(ctx, u.reg, auth, u.rt, []string{scope})
	if err != nil {
		return nil, u.classify(err)
	}
	u.mu.Lock()
	if len(u.transports) > 1024 {
		for k, v := range u.transports {
			if now.After(v.expires) {
				delete(u.transports, k)
			}
		}
	}
	u.transports[repo] = cachedTransport{rt: rt, expires: now.Add(transportTTL)}
	u.mu.Unlock()
	return rt, nil
}

func (u *upstream) url(repo, kind, ref string) string {
	p := *u.base
	p.Path = strings.TrimSuffix(p.Path, "/") + "/v2/" + repo + "/" + kind + "/" + ref
	p.RawQuery = ""
	return p.String()
}

// errCircuitOpen is the cause of an UpstreamError while the breaker is open.
var errCircuitOpen = errors.New("circuit breaker open: upstream failed repeatedly, not asking it now")

// do sends a request for repo and returns the response if it is 2xx; any
// other outcome is an *UpstreamError and the body is closed. While the
// circuit breaker is open it fails at once without calling upstream.
func (u *upstream) do(ctx context.Context, repo, method, target string, header http.Header) (*http.Response, error) {
	ok, probe := u.breaker.allow()
	if !ok {
		return nil, &UpstreamError{Registry: u.cfg.Name, Reason: ReasonCircuitOpen, Err: errCircuitOpen}
	}
	resp, err := u.send(ctx, repo, method, target, header)
	u.record(ctx, err, probe)
	return resp, err
}

// record tells the breaker how a call went.
func (u *upstream) record(ctx context.Context, err error, probe bool) {
	var ue *UpstreamError
	switch {
	case err == nil:
		u.breaker.success()
	case errors.Is(ctx.Err(), context.Canceled):
		u.breaker.release(probe) // the caller left; that says nothing of upstream
	case errors.As(err, &ue) && ue.Unavailable():
		u.breaker.failure(ue.Reason, ue.RetryAfter, probe)
	default:
		u.breaker.success() // an answer about the content: upstream is up
	}
}

func (u *upstream) send(ctx context.Context, repo, method, target string, header http.Header) (*http.Response, error) {
	rt, err := u.transport(ctx, repo)
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
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return nil, u.classify(err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, statusError(u.cfg.Name, resp)
	}
	return resp, nil
}

func manifestHeader() http.Header {
	return http.Header{"Accept": {strings.Join(manifestMediaTypes, ", ")}}
}

// headManifest asks upstream which digest ref resolves to. The digest is ""
// when upstream does not say.
func (u *upstream) headManifest(ctx context.Context, repo, ref string) (string, error) {
	resp, err := u.do(ctx, repo, http.MethodHead, u.url(repo, "manifests", ref), manifestHeader())
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return resp.Header.Get("Docker-Content-Digest"), nil
}

// maxManifestSize bounds a manifest read into memory (distribution's limit).
const maxManifestSize = 4 << 20

type fetchedManifest struct {
	body      []byte
	mediaType string
	digest    string // Docker-Content-Digest, if sent
}

func (u *upstream) getManifest(ctx context.Context, repo, ref string) (fetchedManifest, error) {
	resp, err := u.do(ctx, repo, http.MethodGet, u.url(repo, "manifests", ref), manifestHeader())
	if err != nil {
		return fetchedManifest{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return fetchedManifest{}, u.classify(err)
	}
	if len(body) > maxManifestSize {
		return fetchedManifest{}, &UpstreamError{Registry: u.cfg.Name, Reason: ReasonBadResponse, Err: fmt.Errorf("manifest %s/%s:%s: %w (%d bytes)", u.cfg.Name, repo, ref, ErrTooLarge, maxManifestSize)}
	}
	mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	return fetchedManifest{body: body, mediaType: strings.TrimSpace(mt), digest: resp.Header.Get("Docker-Content-Digest")}, nil
}

// getBlob starts a blob download. The caller reads and closes the body.
func (u *upstream) getBlob(ctx context.Context, repo, dgst string) (*http.Response, error) {
	return u.do(ctx, repo, http.MethodGet, u.url(repo, "blobs", dgst), nil)
}

// headBlob returns the blob's size as upstream announces it (-1 if unsaid).
func (u *upstream) headBlob(ctx context.Context, repo, dgst string) (int64, error) {
	resp, err := u.do(ctx, repo, http.MethodHead, u.url(repo, "blobs", dgst), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.ContentLength, nil
}

// maxTagPages bounds how many pages of a tag list are followed.
const maxTagPages = 100

// listTags fetches a repository's whole tag list, following Link headers.
func (u *upstream) listTags(ctx context.Context, repo string) ([]string, error) {
	next := u.url(repo, "tags", "list") + "?n=1000"
	var all []string
	for page := 0; next != ""; page++ {
		if page == maxTagPages {
			return nil, fmt.Errorf("tag list of %s/%s: more than %d pages", u.cfg.Name, repo, maxTagPages)
		}
		resp, err := u.do(ctx, repo, http.MethodGet, next, nil)
		if err != nil {
			return nil, err
		}
		var body struct {
			Tags []string `json:"tags"`
		}
		err = decodeJSON(resp.Body, &body)
		resp.Body.Close()
		if err != nil {
			return nil, u.classify(fmt.Errorf("decode tag list: %w", err))
		}
		all = append(all, body.Tags...)
		next = nextLink(resp.Request.URL, resp.Header.Get("Link"))
	}
	return all, nil
}

// nextLink resolves an RFC 5988 rel="next" link against the request URL.
func nextLink(base *url.URL, link string) string {
	if link == "" {
		return ""
	}
	for _, part := range strings.Split(link, ",") {
		target, params, ok := strings.Cut(strings.TrimSpace(part), ";")
		if !ok || !strings.Contains(params, `rel="next"`) {
			continue
		}
		target = strings.Trim(strings.TrimSpace(target), "<>")
		ref, err := url.Parse(target)
		if err != nil {
			return ""
		}
		return base.ResolveReference(ref).String()
	}
	return ""
}

var errStalled = errors.New("upstream body stalled")
