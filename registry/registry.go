// Package registry is lifeboat's HTTP face: the read-only OCI distribution
// pull API. A handler parses the request once, asks the proxy, and writes the
// answer; no policy lives here.
package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/lifeboat-dev/lifeboat/proxy"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
)

// CacheHeader tells a client where an answer came from: hit, miss or stale.
const CacheHeader = "X-Lifeboat-Cache"

// Options configure the handler.
type Options struct {
	// Logger receives one access line per request. Nil: discard.
	Logger *slog.Logger
	// Registerer receives the request metrics. Nil: not registered.
	Registerer prometheus.Registerer
}

type handler struct {
	p       *proxy.Proxy
	log     *slog.Logger
	metrics *metrics
}

// New returns the registry API handler over p.
func New(p *proxy.Proxy, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &handler{p: p, log: opts.Logger, metrics: newMetrics(opts.Registerer)}
}

// outcome is what a request did, for the access log and metrics.
type outcome struct {
	kind     kind
	registry string
	source   proxy.Source
	err      *apiError
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	rec.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	o := h.serve(rec, r)

	result := string(o.source)
	if o.err != nil || rec.status >= 400 {
		result = "error"
	}
	h.metrics.requests.WithLabelValues(string(o.kind), r.Method, result).Inc()
	h.metrics.duration.WithLabelValues(string(o.kind), result).Observe(time.Since(start).Seconds())
	switch o.source {
	case proxy.Hit, proxy.Stale:
		h.metrics.served.WithLabelValues("cache").Add(float64(rec.bytes))
	case proxy.Miss:
		h.metrics.served.WithLabelValues("upstream").Add(float64(rec.bytes))
	}
	attrs := []any{
		"method", r.Method, "path", r.URL.Path, "status", rec.status, "bytes", rec.bytes,
		"duration", time.Since(start), "kind", o.kind, "registry", o.registry,
	}
	if o.source != "" {
		attrs = append(attrs, "cache", o.source)
	}
	if o.err != nil {
		attrs = append(attrs, "error_code", o.err.code, "error", o.err.message)
	}
	h.log.Info("request", attrs...)
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request) outcome {
	rt, err := parsePath(r.URL.Path)
	o := outcome{kind: rt.kind}
	if err == nil && r.Method != http.MethodGet && r.Method != http.MethodHead {
		err = errUnsupported
	}
	if err == nil && rt.kind == kindUnsupport {
		err = errUnsupported
	}
	if err == nil && rt.kind == kindReferrers {
		err = errNotFound
	}
	if err == nil && rt.kind != kindBase {
		o.registry, err = h.p.Registry(r.URL.Query().Get("ns"))
	}
	if err == nil {
		switch rt.kind {
		case kindBase:
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, "{}")
		case kindManifest:
			o.source, err = h.manifest(w, r, o.registry, rt)
		case kindBlob:
			o.source, err = h.blob(w, r, o.registry, rt)
		case kindTags:
			o.source, err = h.tags(w, r, o.registry, rt)
		}
	}
	if err != nil {
		if o.kind == "" {
			o.kind = kindUnsupport
		}
		e := writeError(w, rt.kind, err)
		o.err = &e
	}
	return o
}

func (h *handler) manifest(w http.ResponseWriter, r *http.Request, registry string, rt route) (proxy.Source, error) {
	m, err := h.p.Manifest(r.Context(), registry, rt.name, rt.ref)
	if err != nil {
		return "", err
	}
	hdr := w.Header()
	hdr.Set("Content-Type", m.MediaType)
	hdr.Set("Docker-Content-Digest", m.Digest.String())
	hdr.Set("Etag", `"`+m.Digest.String()+`"`)
	hdr.Set(CacheHeader, string(m.Source))
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(m.Body))
	return m.Source, nil
}

func (h *handler) blob(w http.ResponseWriter, r *http.Request, registry string, rt route) (proxy.Source, error) {
	d := digest.Digest(rt.ref)
	hdr := w.Header()
	hdr.Set("Docker-Content-Digest", d.String())
	hdr.Set("Etag", `"`+d.String()+`"`)
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Accept-Ranges", "bytes")
	if r.Method == http.MethodHead {
		size, src, err := h.p.BlobHead(r.Context(), registry, rt.name, d)
		if err != nil {
			return "", err
		}
		if size >= 0 {
			hdr.Set("Content-Length", strconv.FormatInt(size, 10))
		}
		hdr.Set(CacheHeader, string(src))
		w.WriteHeader(http.StatusOK)
		return src, nil
	}
	b, err := h.p.Blob(r.Context(), registry, rt.name, d, r.Header.Get("Range") == "")
	if err != nil {
		return "", err
	}
	defer b.Content.Close()
	hdr.Set(CacheHeader, string(b.Source))
	// ServeContent answers Range and If-None-Match, and sends a cached file
	// with sendfile. A download in progress that fails is cut short of its
	// Content-Length, so the client sees the failure; so does the log.
	if f, ok := b.Content.(*os.File); ok {
		// A cached file, passed as itself so the copy can use sendfile.
		http.ServeContent(w, r, "", b.ModTime, f)
		return b.Source, nil
	}
	content := &readErr{ReadSeeker: b.Content}
	http.ServeContent(w, r, "", b.ModTime, content)
	if content.err != nil {
		return b.Source, fmt.Errorf("stream cut short: %w", content.err)
	}
	return b.Source, nil
}

// readErr remembers the first read error other than EOF.
type readErr struct {
	io.ReadSeeker
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.ReadSeeker.Read(p)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

var errPaginationN = errors.New("invalid n: must be a non-negative integer")

// tags answers tags/list with the spec's n and last paging, applied to the
// whole sorted list the proxy returns.
func (h *handler) tags(w http.ResponseWriter, r *http.Request, registry string, rt route) (proxy.Source, error) {
	q := r.URL.Query()
	n := -1
	if v := q.Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			return "", fmt.Errorf("%w: %q", errPaginationN, v)
		}
	}
	all, src, err := h.p.Tags(r.Context(), registry, rt.name)
	if err != nil {
		return "", err
	}
	page := all
	if last := q.Get("last"); last != "" {
		i, _ := slices.BinarySearch(page, last)
		for i < len(page) && page[i] <= last {
			i++
		}
		page = page[i:]
	}
	if n >= 0 && n < len(page) {
		page = page[:n]
		if n > 0 {
			next := url.Values{"n": {strconv.Itoa(n)}, "last": {page[n-1]}}
			if ns := q.Get("ns"); ns != "" {
				next.Set("ns", ns)
			}
			w.Header().Set("Link", fmt.Sprintf(`</v2/%s/tags/list?%s>; rel="next"`, rt.name, next.Encode()))
		}
	}
	if page == nil {
		page = []string{}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(CacheHeader, string(src))
	body, err := json.Marshal(map[string]any{"name": rt.name, "tags": page})
	if err != nil {
		return "", err
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	return src, nil
}

// recorder notes status and bytes for the access log. It passes ReadFrom
// through so that sendfile still works for cached blobs.
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	r.wroteHeader = true
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	r.wroteHeader = true
	var n int64
	var err error
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(struct{ io.Writer }{r.ResponseWriter}, src)
	}
	r.bytes += n
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
