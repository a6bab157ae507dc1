// Package registry is lifeboat's HTTP face: the read-only OCI distribution
// pull API. A handler parses the request once, asks the proxy, and writes the
// answer; no policy lives here.
package registry

import (
	"bytes"
	"cmp"
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

	"github.com/lifeboat-dev/lifeboat/internal/logtext"
	"github.com/lifeboat-dev/lifeboat/proxy"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
)

// CacheHeader tells a client where an answer came from: hit, miss or stale.
const CacheHeader = "X-Lifeboat-Cache"

// DefaultWriteStall is Options.WriteStall's default.
const DefaultWriteStall = 30 * time.Second

// Options configure the handler.
type Options struct {
	// Logger receives one access line per request. Nil: discard.
	Logger *slog.Logger
	// Registerer receives the request metrics. Nil: not registered.
	Registerer prometheus.Registerer
	// WriteStall is how long one write of a response may make no progress
	// (a client that stops reading) before the response is abandoned and
	// the connection closed. Zero: DefaultWriteStall.
	WriteStall time.Duration
}

type handler struct {
	p       *proxy.Proxy
	log     *slog.Logger
	metrics *metrics
	stall   time.Duration
}

// New returns the registry API handler over p.
func New(p *proxy.Proxy, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.WriteStall <= 0 {
		opts.WriteStall = DefaultWriteStall
	}
	return &handler{p: p, log: opts.Logger, metrics: newMetrics(opts.Registerer), stall: opts.WriteStall}
}

// outcome is what a request did, for the access log and metrics.
type outcome struct {
	kind     kind
	registry string
	source   proxy.Source
	err      *apiError
	// abort: the response failed after its headers were sent, so the only
	// honest signal left is to cut the connection.
	abort bool
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := newRecorder(w, h.stall)
	rec.Header()["Docker-Distribution-Api-Version"] = apiVersion
	o := h.serve(rec, r)
	h.record(r, rec, o, time.Since(start))
	if o.abort {
		// Logged and counted: now cut the connection. The server closes it
		// without a stack trace; a client counting on Content-Length sees
		// an unexpected EOF, never an error body read as content.
		panic(http.ErrAbortHandler)
	}
	// A deadline for the server's flush of the end of the body, too.
	rec.extend()
}

// record writes the access line and the request metrics.
func (h *handler) record(r *http.Request, rec *recorder, o outcome, took time.Duration) {
	result := resultLabel(o, rec)
	h.metrics.requests.WithLabelValues(string(o.kind), methodLabel(r.Method), result).Inc()
	h.metrics.duration.WithLabelValues(string(o.kind), result).Observe(took.Seconds())
	switch o.source {
	case proxy.Hit, proxy.Stale:
		h.metrics.served.WithLabelValues("cache").Add(float64(rec.bytes))
	case proxy.Miss:
		h.metrics.served.WithLabelValues("upstream").Add(float64(rec.bytes))
	}
	if !h.log.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	// LogAttrs with a fixed-size array: no value is boxed into an
	// interface and, for a hit, nothing is allocated beyond the handler's
	// own encoding.
	var buf [13]slog.Attr
	attrs := append(buf[:0],
		slog.String("method", logtext.Clip(r.Method, maxLoggedInput)), slog.String("path", logtext.Clip(r.URL.Path, maxLoggedInput)),
		slog.Int("status", rec.status), slog.Int64("bytes", rec.bytes), slog.Duration("duration", took),
		slog.String("kind", string(o.kind)), slog.String("registry", o.registry))
	if o.source != "" {
		attrs = append(attrs, slog.String("cache", string(o.source)))
	}
	if o.err != nil {
		attrs = append(attrs, slog.String("error_code", o.err.code), slog.String("error", logtext.Clip(o.err.message, maxLoggedError)))
	}
	if rec.err != nil {
		attrs = append(attrs, slog.String("client_error", logtext.Clip(rec.err.Error(), maxLoggedError)))
	}
	if o.abort {
		attrs = append(attrs, slog.Bool("aborted", true))
	}
	h.log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
}

// The access line echoes client input (the method, the path, and error
// messages quoting a name or reference) clipped to these many bytes: a
// request line may be a megabyte long, a log line should not be.
const (
	maxLoggedInput = 256
	maxLoggedError = 512
)

func (h *handler) serve(w *recorder, r *http.Request) outcome {
	ns := r.URL.Query().Get("ns")
	rt, err := parsePath(r.URL.Path, h.prefixes(ns))
	o := outcome{kind: rt.kind}
	if err == nil && r.Method != http.MethodGet && r.Method != http.MethodHead {
		err = errUnsupported
	}
	if err == nil && rt.kind == kindUnsupport {
		err = errUnsupported
	}
	if err == nil && rt.kind != kindBase {
		// ns= (containerd), else a path prefix (CRI-O), else the default.
		o.registry, err = h.p.Registry(cmp.Or(ns, rt.registry))
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
		case kindReferrers:
			o.source, err = h.referrers(w, r, o.registry, rt)
		}
	}
	if o.kind == "" {
		o.kind = kindUnsupport
	}
	if err != nil {
		e, written := writeError(w, rt.kind, err)
		o.abort = !written
		if w.err == nil {
			// (When the client stopped taking the body, the source's
			// error is that: its reader's context ended with the
			// connection. The access line says client_error instead.)
			o.err = &e
		}
	}
	if w.err != nil {
		o.abort = true
	}
	return o
}

// prefixes tells parsePath which registries a path may start with: none
// when the client named one with ns= (the path is then the repository,
// whatever it starts with), else the mirrored ones.
func (h *handler) prefixes(ns string) func(string) bool {
	if ns != "" {
		return nil
	}
	return func(registry string) bool {
		_, err := h.p.Registry(registry)
		return registry != "" && err == nil
	}
}

func (h *handler) manifest(w http.ResponseWriter, r *http.Request, registry string, rt route) (proxy.Source, error) {
	m, err := h.p.Manifest(r.Context(), registry, rt.name, rt.ref)
	if err != nil {
		return "", err
	}
	// Keys already in canonical form, assigned to the map: Header.Set
	// canonicalizes each key again, a measurable part of a cached answer.
	hdr := w.Header()
	hdr["Content-Type"] = []string{m.MediaType}
	hdr["Docker-Content-Digest"] = []string{m.Digest.String()}
	hdr["Etag"] = []string{`"` + m.Digest.String() + `"`}
	hdr[CacheHeader] = sourceHeader(m.Source)
	serveBytes(w, r, m.Body)
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
	specs := wantedRanges(w, r)
	b, err := h.p.Blob(r.Context(), registry, rt.name, d, toTheEnd(specs))
	if err != nil {
		return "", err
	}
	defer b.Content.Close()
	hdr.Set(CacheHeader, string(b.Source))
	// ServeContent answers Range and If-None-Match, and sends a cached file
	// with sendfile. A download in progress that fails is cut short of its
	// Content-Length: the error returned here makes ServeHTTP cut the
	// connection, so the client sees the failure; so does the log.
	if f, ok := b.Content.(*os.File); ok {
		// A cached file, passed as itself so the copy can use sendfile.
		serveContent(w, r, specs, b.Size, b.ModTime, f)
		return b.Source, nil
	}
	content := &readErr{ReadSeeker: b.Content}
	serveContent(w, r, specs, b.Size, b.ModTime, content)
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
			w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, next.Encode()))
		}
	}
	if page == nil {
		page = []string{}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(CacheHeader, string(src))
	body, err := json.Marshal(map[string]any{"name": rt.requested(), "tags": page})
	if err != nil {
		return "", err
	}
	serveContent(w, r, wantedRanges(w, r), int64(len(body)), time.Time{}, bytes.NewReader(body))
	return src, nil
}

// Header values every answer or every cached answer carries, shared
// between responses: net/http only reads them, and a later Add appends to a
// full slice, which copies it.
var (
	apiVersion   = []string{"registry/2.0"}
	sourceValues = map[proxy.Source][]string{proxy.Hit: {string(proxy.Hit)}, proxy.Miss: {string(proxy.Miss)}, proxy.Stale: {string(proxy.Stale)}}
)

func sourceHeader(s proxy.Source) []string {
	if v, ok := sourceValues[s]; ok {
		return v
	}
	return []string{string(s)}
}
