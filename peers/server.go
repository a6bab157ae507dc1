package peers

import (
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/proxy"
	"github.com/opencontainers/go-digest"
)

// server is the peer API: what other lifeboats may ask this node. It runs
// on the peer listener only (the registry API stays on loopback), every
// request must carry the shared token, and it answers from the cache,
// fetching upstream only for a digest this node owns (while its upstream's
// breaker is closed). A tag is answered only from the cache, with when
// upstream last confirmed it.
type server struct {
	p     proxy.PeerView
	c     *Cluster
	token []byte
	log   *slog.Logger
}

// Handler is the peer API over p.
func (c *Cluster) Handler(p *proxy.Proxy) http.Handler {
	return &server{p: proxy.ForPeers(p), c: c, token: []byte("Bearer " + c.cfg.Token), log: c.log}
}

// peerRoute is a peer API path, parsed once: /v2/ or
// /v2/_lifeboat/<registry>/<repository>/(manifests|blobs)/<reference>.
type peerRoute struct {
	kind           string // base, manifest, blob
	registry, repo string
	ref            string
}

func parsePeerPath(path string) (peerRoute, bool) {
	if path == "/v2/" {
		return peerRoute{kind: "base"}, true
	}
	rest, ok := strings.CutPrefix(path, "/v2/"+peerPrefix)
	if !ok {
		return peerRoute{}, false
	}
	for _, kind := range []string{"manifests", "blobs"} {
		i := strings.LastIndex(rest, "/"+kind+"/")
		if i <= 0 {
			continue
		}
		name, ref := rest[:i], rest[i+len(kind)+2:]
		registry, repo, ok := strings.Cut(name, "/")
		if !ok || registry == "" || ref == "" || strings.Contains(ref, "/") {
			return peerRoute{}, false
		}
		if _, err := reference.WithName(repo); err != nil {
			return peerRoute{}, false
		}
		return peerRoute{kind: strings.TrimSuffix(kind, "s"), registry: registry, repo: repo, ref: ref}, true
	}
	return peerRoute{}, false
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Nothing about the cache is said before the token is checked, not even
	// whether a path exists.
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), s.token) != 1 {
		s.c.metrics.servedReqs.WithLabelValues("base", "unauthorized").Inc()
		w.Header().Set("WWW-Authenticate", `Basic realm="lifeboat-peer"`)
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "the peer token is required")
		return
	}
	rt, ok := parsePeerPath(r.URL.Path)
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "not a peer API path")
		return
	}
	if rt.kind != "base" {
		if _, err := s.p.Registry(rt.registry); err != nil {
			writeError(w, http.StatusNotFound, "NAME_UNKNOWN", "registry not mirrored here")
			return
		}
	}
	var result string
	switch rt.kind {
	case "base":
		result = "hit"
		w.WriteHeader(http.StatusOK)
	case "blob":
		result = s.blob(w, r, rt)
	default:
		result = s.manifest(w, r, rt)
	}
	kind := rt.kind
	if _, err := digest.Parse(rt.ref); err != nil && kind == "manifest" {
		kind = "tag"
	}
	s.c.metrics.servedReqs.WithLabelValues(kind, result).Inc()
}

// replicate starts this node's copy of blob d, from the owners above it.
func (s *server) replicate(rt peerRoute, d digest.Digest) {
	go func() {
		ctx, cancel := context.WithTimeout(proxy.FromPeer(context.Background()), replicateTimeout)
		defer cancel()
		b, err := s.p.Blob(ctx, rt.registry, rt.repo, d, true)
		s.c.metrics.ownerFetches.WithLabelValues("replica", okOr(err)).Inc()
		if err == nil {
			b.Content.Close()
		}
	}()
}

// ownerFetch reports whether this node fetches d from upstream for a peer:
// it owns d and its upstream is not known to be down.
func (s *server) ownerFetch(registry string, d digest.Digest) bool {
	return s.c.Owns(d) && !s.p.UpstreamDown(registry)
}

func (s *server) blob(w http.ResponseWriter, r *http.Request, rt peerRoute) string {
	d, err := digest.Parse(rt.ref)
	if err != nil {
		writeError(w, http.StatusBadRequest, "DIGEST_INVALID", "invalid digest")
		return "error"
	}
	result := "hit"
	b, err := s.p.CachedBlob(d)
	if errors.Is(err, cache.ErrNotFound) && r.Method == http.MethodHead && s.ownerFetch(rt.registry, d) {
		// The owner above asks this one to take a copy (Cluster.Stored):
		// start it and answer at once; the download runs on its own.
		s.replicate(rt, d)
		w.WriteHeader(http.StatusAccepted)
		return "replicate"
	}
	if errors.Is(err, cache.ErrNotFound) && s.ownerFetch(rt.registry, d) {
		result = "owner_fetch"
		b, err = s.p.Blob(proxy.FromPeer(r.Context()), rt.registry, rt.repo, d, true)
		s.c.metrics.ownerFetches.WithLabelValues("blob", okOr(err)).Inc()
	}
	if err != nil {
		return s.failed(w, err)
	}
	defer b.Content.Close()
	h := w.Header()
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Content-Type", "application/octet-stream")
	if b.Size >= 0 {
		h.Set("Content-Length", strconv.FormatInt(b.Size, 10))
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return result
	}
	n, err := io.Copy(w, b.Content)
	s.c.metrics.served.Add(float64(n))
	if err != nil {
		// Cut the connection: the peer sees a short body, never a whole
		// one that is wrong (and verifies anyway).
		s.log.Info("peer blob stream cut short", "digest", d, "error", err)
		panic(http.ErrAbortHandler)
	}
	return result
}

func (s *server) manifest(w http.ResponseWriter, r *http.Request, rt peerRoute) string {
	var (
		m      *proxy.Manifest
		err    error
		result = "hit"
	)
	if !s.p.SharedWithPeers(rt.registry, rt.repo) {
		err = cache.ErrNotFound // a private repository's, under privateContent verify
	} else if d, derr := digest.Parse(rt.ref); derr == nil {
		m, err = s.p.CachedManifest(d)
		if errors.Is(err, cache.ErrNotFound) && s.ownerFetch(rt.registry, d) {
			result = "owner_fetch"
			m, err = s.p.Manifest(proxy.FromPeer(r.Context()), rt.registry, rt.repo, d.String())
			s.c.metrics.ownerFetches.WithLabelValues("manifest", okOr(err)).Inc()
		}
	} else {
		var confirmed time.Time
		m, confirmed, err = s.p.CachedTag(rt.registry, rt.repo, rt.ref)
		if err == nil {
			w.Header().Set(ConfirmedHeader, confirmed.UTC().Format(time.RFC3339Nano))
		}
	}
	if err != nil {
		return s.failed(w, err)
	}
	h := w.Header()
	h.Set("Docker-Content-Digest", m.Digest.String())
	h.Set("Content-Type", m.MediaType)
	h.Set("Content-Length", strconv.Itoa(len(m.Body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		n, _ := w.Write(m.Body)
		s.c.metrics.served.Add(float64(n))
	}
	return result
}

// failed answers a lookup that found nothing (404) or failed (503: the
// asking node moves on either way).
func (s *server) failed(w http.ResponseWriter, err error) string {
	if errors.Is(err, cache.ErrNotFound) {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "not cached here")
		return "not_found"
	}
	s.log.Info("peer request failed", "error", err)
	writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "not available from this peer")
	return "error"
}

func okOr(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, `{"errors":[{"code":"`+code+`","message":"`+msg+`"}]}`+"\n")
}
