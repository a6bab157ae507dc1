package registry

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxRanges bounds the byte ranges one request may ask for. A Range header
// of 80,000 one-byte ranges cost http.ServeContent 1.85 s of CPU to parse
// and answer as multipart; no registry client asks for more than one.
const maxRanges = 16

var (
	errRangeInvalid  = errors.New("invalid Range header")
	errRangeTooMany  = errors.New("too many ranges")
	errRangeNotBytes = errors.New("range unit is not bytes")
)

// rangeSpec is one range-spec of a Range header (RFC 9110 §14.1.1):
// first-last, first- (last < 0), or a suffix of the last suffix bytes.
type rangeSpec struct {
	first, last int64
	suffix      int64 // -1 unless a suffix-range
}

// byteRange is a satisfiable range of a representation of known size:
// 0 <= start, 0 < length, start+length <= size.
type byteRange struct{ start, length int64 }

// toTheEnd reports whether a request reads the blob to its end: no Range,
// or one open-ended range (bytes=N-, what containerd 2.1+ sends for each
// chunk of a parallel layer fetch). Such a reader can follow a download in
// progress, since the last byte is held back until the digest matched: it
// can never receive a whole wrong blob. A range that ends earlier waits for
// the verified blob.
func toTheEnd(specs []rangeSpec) bool {
	return specs == nil || (len(specs) == 1 && specs[0].suffix < 0 && specs[0].last < 0)
}

// parseRangeHeader parses a Range header into at most maxRanges specs,
// scanning no further than the (maxRanges+1)th. It needs no size, so that
// whether a request wants the whole content is known before the proxy is
// asked (a part of a download in progress is never served).
func parseRangeHeader(h string) ([]rangeSpec, error) {
	unit, set, ok := strings.Cut(h, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return nil, errRangeNotBytes
	}
	var specs []rangeSpec
	for set != "" {
		var elem string
		elem, set, _ = strings.Cut(set, ",")
		elem = strings.Trim(elem, " \t")
		if elem == "" {
			continue // the list syntax allows empty elements
		}
		if len(specs) == maxRanges {
			return nil, errRangeTooMany
		}
		s, err := parseRangeSpec(elem)
		if err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	if len(specs) == 0 {
		return nil, errRangeInvalid
	}
	return specs, nil
}

func parseRangeSpec(elem string) (rangeSpec, error) {
	first, last, ok := strings.Cut(elem, "-")
	if !ok {
		return rangeSpec{}, errRangeInvalid
	}
	first, last = strings.Trim(first, " \t"), strings.Trim(last, " \t")
	if first == "" {
		n, ok := digits(last)
		if !ok {
			return rangeSpec{}, errRangeInvalid
		}
		return rangeSpec{suffix: n}, nil
	}
	s := rangeSpec{last: -1, suffix: -1}
	if s.first, ok = digits(first); !ok {
		return rangeSpec{}, errRangeInvalid
	}
	if last != "" {
		if s.last, ok = digits(last); !ok || s.last < s.first {
			return rangeSpec{}, errRangeInvalid
		}
	}
	return s, nil
}

// digits parses a non-empty run of ASCII digits (no sign, no space) that
// fits an int64.
func digits(s string) (int64, bool) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// resolve returns the satisfiable ranges of specs for a representation of
// size bytes, clipped to it. A suffix of zero bytes and a range starting at
// or past the end are unsatisfiable and left out (RFC 9110 §14.1.1-2).
func resolve(specs []rangeSpec, size int64) []byteRange {
	var out []byteRange
	for _, s := range specs {
		var r byteRange
		switch {
		case s.suffix >= 0:
			n := min(s.suffix, size)
			r = byteRange{start: size - n, length: n}
		case s.first >= size:
			continue
		case s.last < 0:
			r = byteRange{start: s.first, length: size - s.first}
		default:
			r = byteRange{start: s.first, length: min(s.last, size-1) - s.first + 1}
		}
		if r.length > 0 {
			out = append(out, r)
		}
	}
	return out
}

// formatRanges writes ranges back as a Range header, which http.ServeContent
// then parses again (cheaply: there are at most maxRanges).
func formatRanges(ranges []byteRange) string {
	var b strings.Builder
	b.WriteString("bytes=")
	for i, r := range ranges {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(r.start, 10))
		b.WriteByte('-')
		b.WriteString(strconv.FormatInt(r.start+r.length-1, 10))
	}
	return b.String()
}

// wantedRanges returns the Range a GET is answered with, as specs, or nil
// for the whole content. RFC 9110 §14.2 lets a server ignore a Range header
// (and answer 200 with everything), so lifeboat ignores one that is
// invalid, names another unit, or asks for more than maxRanges ranges, and
// one whose If-Range does not name the ETag set on w (a blob's or
// manifest's digest never changes; a date is not worth comparing).
func wantedRanges(w http.ResponseWriter, r *http.Request) []rangeSpec {
	h := r.Header.Get("Range")
	if h == "" || r.Method != http.MethodGet {
		return nil
	}
	if ir := r.Header.Get("If-Range"); ir != "" && ir != w.Header().Get("Etag") {
		return nil
	}
	specs, err := parseRangeHeader(h)
	if err != nil {
		return nil
	}
	return specs
}

// serveContent serves content (size bytes) with http.ServeContent, which
// answers conditional requests, HEAD and ranges, and sends a file with
// sendfile. ServeContent only ever sees a Range header lifeboat wrote: the
// satisfiable ranges of specs, or one that cannot overlap (so that it
// answers 416 with Content-Range: bytes */size, after its own precedence of
// conditional requests), or none.
func serveContent(w http.ResponseWriter, r *http.Request, specs []rangeSpec, size int64, modTime time.Time, content io.ReadSeeker) {
	if specs != nil || r.Header.Get("Range") != "" {
		r = r.Clone(r.Context())
		r.Header.Del("Range")
		if specs != nil {
			rh := "bytes=" + strconv.FormatInt(size, 10) + "-"
			if ranges := resolve(specs, size); len(ranges) > 0 {
				rh = formatRanges(ranges)
			}
			r.Header.Set("Range", rh)
		}
	}
	http.ServeContent(w, r, "", modTime, content)
}

// serveBytes answers with body, held in memory: what serveContent does,
// without its machinery for the common request that has no Range and no
// condition (every manifest hit containerd sends). The headers are those
// http.ServeContent would send.
func serveBytes(w http.ResponseWriter, r *http.Request, body []byte) {
	if conditional(r.Header) {
		serveContent(w, r, wantedRanges(w, r), int64(len(body)), time.Time{}, bytes.NewReader(body))
		return
	}
	wh := w.Header()
	wh["Accept-Ranges"] = acceptBytes
	wh["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

var acceptBytes = []string{"bytes"}

// conditional: the request has a Range or a condition for ServeContent to
// answer. The server stores request header keys in canonical form, so the
// map is read directly (Header.Get canonicalizes each key again).
func conditional(h http.Header) bool {
	for _, k := range [...]string{"Range", "If-None-Match", "If-Match", "If-Modified-Since", "If-Unmodified-Since"} {
		if v := h[k]; len(v) > 0 && v[0] != "" {
			return true
		}
	}
	return false
}
