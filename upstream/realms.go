package upstream

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// defaultTokenRealms are the token realms of well-known registries: the
// hosts their WWW-Authenticate challenge names, by registry name. The
// registry's own host is always allowed, so most rows only document that
// the realm is where one would expect it; Docker Hub, GitLab and NGC keep
// their token service on another host.
//
// Sources: the challenges these registries send on GET /v2/, as quoted by
// public client code and tests (Docker Hub `https://auth.docker.io/token`,
// ghcr.io `https://ghcr.io/token`, quay.io `https://quay.io/v2/auth`, gcr.io
// `https://gcr.io/v2/token`, Artifact Registry
// `https://<region>-docker.pkg.dev/v2/token`, registry.k8s.io
// `https://registry.k8s.io/v2/token`, public.ecr.aws
// `https://public.ecr.aws/token/`, registry.gitlab.com
// `https://gitlab.com/jwt/auth`, nvcr.io `https://authn.nvidia.com/token`).
// mcr.microsoft.com is anonymous and sends no challenge. Not checked against
// the live registries: a registry that moves its realm is fixed with the
// upstream's tokenRealms setting.
var defaultTokenRealms = map[string][]string{
	"docker.io":            {"auth.docker.io"},
	"index.docker.io":      {"auth.docker.io"},
	"registry-1.docker.io": {"auth.docker.io"},
	"ghcr.io":              {"ghcr.io"},
	"quay.io":              {"quay.io"},
	"gcr.io":               {"gcr.io"},
	"registry.k8s.io":      {"registry.k8s.io"},
	"mcr.microsoft.com":    {"mcr.microsoft.com"},
	"public.ecr.aws":       {"public.ecr.aws"},
	"registry.gitlab.com":  {"gitlab.com"},
	"nvcr.io":              {"authn.nvidia.com"},
}

// DefaultTokenRealms returns the token realm hosts known for a registry
// name (see defaultTokenRealms), or nil for a registry not in the table.
// Artifact Registry (*.pkg.dev) and gcr.io's regional hosts (*.gcr.io) keep
// their realm on the registry's own host.
func DefaultTokenRealms(name string) []string {
	name = strings.ToLower(name)
	if r, ok := defaultTokenRealms[name]; ok {
		return slices.Clone(r)
	}
	if strings.HasSuffix(name, ".pkg.dev") || strings.HasSuffix(name, ".gcr.io") {
		return []string{name}
	}
	return nil
}

// realmHost is one allowed token realm: a host name, and a port if the
// entry named one (none: any port).
type realmHost struct{ host, port string }

// parseRealmHosts validates the TokenRealms entries: "host" or "host:port",
// no scheme, no path.
func parseRealmHosts(entries []string) ([]realmHost, error) {
	out := make([]realmHost, 0, len(entries))
	for _, e := range entries {
		s := strings.ToLower(strings.TrimSpace(e))
		if s == "" || strings.ContainsAny(s, "/@?#* ") {
			return nil, fmt.Errorf("token realm %q: want a host or host:port", e)
		}
		h := realmHost{host: s}
		if host, port, err := net.SplitHostPort(s); err == nil {
			h = realmHost{host: host, port: port}
		}
		h.host = strings.TrimSuffix(strings.TrimPrefix(h.host, "["), "]")
		if h.host == "" {
			return nil, fmt.Errorf("token realm %q: want a host or host:port", e)
		}
		out = append(out, h)
	}
	return out, nil
}

// effectivePort is u's port, or its scheme's default.
func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "http" {
		return "80"
	}
	return "443"
}

// credGuard keeps credentials on the hosts allowed to receive them. The
// token exchange is go-containerregistry's, and it sends the configured
// credentials to whatever realm the registry's challenge names; a registry
// (or whoever answers in its name) could name any host. So every request
// leaving the client passes here:
//
//   - to the registry itself (same scheme, host and port): unchanged;
//   - over https to the registry's host name on another port, or to an
//     allowed realm (Config.TokenRealms): unchanged;
//   - anywhere else: sent without its credentials. A Basic (or any
//     non-Bearer) Authorization header is removed, so the token request goes
//     out anonymously and public content still works; a Bearer header is
//     kept, as go-containerregistry only sets one there for a token that
//     host's own realm issued anonymously (a cross-host redirect). A POST
//     is go-containerregistry's OAuth2 token request, which carries an
//     identity token in its body: it is not sent, and a local 404 makes
//     go-containerregistry fall back to the (then anonymous) GET.
//
// Plain http never carries credentials to any host but the registry itself.
type credGuard struct {
	scheme   string   // the registry's
	hosts    []string // the registry's host:port as configured, and as go-containerregistry names it
	realms   []realmHost
	registry string
	logger   *slog.Logger
	warned   sync.Map // realm host → struct{}: withheld credentials are logged once per host
	next     http.RoundTripper
}

func newCredGuard(registry string, base *url.URL, regHost string, realms []realmHost, logger *slog.Logger, next http.RoundTripper) *credGuard {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &credGuard{
		scheme: base.Scheme, hosts: []string{base.Host, regHost}, realms: realms,
		registry: registry, logger: logger, next: next,
	}
}

func (g *credGuard) RoundTrip(r *http.Request) (*http.Response, error) {
	if g.trusted(r.URL) {
		return g.next.RoundTrip(r)
	}
	if r.Method == http.MethodPost {
		if r.Body != nil {
			r.Body.Close()
		}
		g.withheld(r.URL)
		return notSent(r), nil
	}
	if a := r.Header.Get("Authorization"); a != "" && !isBearer(a) {
		g.withheld(r.URL)
		r = r.Clone(r.Context())
		r.Header.Del("Authorization")
	}
	return g.next.RoundTrip(r)
}

// trusted reports whether u may receive the registry's credentials.
func (g *credGuard) trusted(u *url.URL) bool {
	if u.Scheme == g.scheme && slices.ContainsFunc(g.hosts, func(h string) bool { return sameHostPort(u, g.scheme, h) }) {
		return true
	}
	if u.Scheme != "https" {
		return false
	}
	name := u.Hostname()
	for _, h := range g.hosts {
		if hu := (&url.URL{Host: h}); strings.EqualFold(hu.Hostname(), name) {
			return true // TLS proves the name; the port is the operator's business
		}
	}
	port := effectivePort(u)
	return slices.ContainsFunc(g.realms, func(rh realmHost) bool {
		return strings.EqualFold(rh.host, name) && (rh.port == "" || rh.port == port)
	})
}

// sameHostPort reports whether u is on host (host[:port], default port by
// scheme).
func sameHostPort(u *url.URL, scheme, host string) bool {
	h := &url.URL{Scheme: scheme, Host: host}
	return strings.EqualFold(u.Hostname(), h.Hostname()) && effectivePort(u) == effectivePort(h)
}

func isBearer(authorization string) bool {
	scheme, _, _ := strings.Cut(authorization, " ")
	return strings.EqualFold(scheme, "bearer")
}

// withheld logs, once per host, that credentials were kept from it: a
// private pull that fails for it is then explained.
func (g *credGuard) withheld(u *url.URL) {
	if _, seen := g.warned.LoadOrStore(u.Host, struct{}{}); seen {
		return
	}
	g.logger.Warn("credentials withheld from a token realm not allowed for this registry; add it to the upstream's tokenRealms if it is the registry's own token service",
		"registry", g.registry, "realm", u.Scheme+"://"+u.Host)
}

// notSent is the local answer to a request that was not sent.
func notSent(r *http.Request) *http.Response {
	const msg = "not sent: credentials are not allowed to this host"
	return &http.Response{
		Status: "404 Not Found", StatusCode: http.StatusNotFound,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
		Body:          io.NopCloser(strings.NewReader(msg)),
		ContentLength: int64(len(msg)),
		Request:       r,
	}
}
