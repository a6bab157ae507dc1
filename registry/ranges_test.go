package registry

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseRangeHeader(t *testing.T) {
	t.Parallel()
	const size = 100
	for _, tc := range []struct {
		header  string
		want    []byteRange
		wantErr error
	}{
		{header: "bytes=0-9", want: []byteRange{{0, 10}}},
		{header: "bytes=90-", want: []byteRange{{90, 10}}},
		{header: "bytes=90-1000", want: []byteRange{{90, 10}}},
		{header: "bytes=-10", want: []byteRange{{90, 10}}},
		{header: "bytes=-1000", want: []byteRange{{0, 100}}},
		{header: "Bytes = 0-0, ,2-2 ,", want: []byteRange{{0, 1}, {2, 1}}},
		{header: "bytes=0-0,100-200", want: []byteRange{{0, 1}}},
		{header: "bytes=0-1,-0", want: []byteRange{{0, 2}}},
		{header: "bytes=-0", want: nil},   // a zero suffix is unsatisfiable
		{header: "bytes=100-", want: nil}, // starts at the end
		{header: "bytes=0-" + strings.Repeat("9", 30), wantErr: errRangeInvalid},
		{header: "bytes=5-3", wantErr: errRangeInvalid},
		{header: "bytes=+5-6", wantErr: errRangeInvalid},
		{header: "bytes=--5", wantErr: errRangeInvalid},
		{header: "bytes=-", wantErr: errRangeInvalid},
		{header: "bytes=5", wantErr: errRangeInvalid},
		{header: "bytes=", wantErr: errRangeInvalid},
		{header: "bytes=,,", wantErr: errRangeInvalid},
		{header: "items=0-1", wantErr: errRangeNotBytes},
		{header: "0-1", wantErr: errRangeNotBytes},
		{header: "bytes=" + strings.Repeat("0-0,", maxRanges), want: repeatRange(byteRange{0, 1}, maxRanges)},
		{header: "bytes=" + strings.Repeat("0-0,", maxRanges+1), wantErr: errRangeTooMany},
		{header: "bytes=" + strings.Repeat("0-0,", maxRanges+1) + "x", wantErr: errRangeTooMany},
	} {
		t.Run(tc.header[:min(len(tc.header), 40)], func(t *testing.T) {
			specs, err := parseRangeHeader(tc.header)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, resolve(specs, size))
		})
	}
}

func repeatRange(r byteRange, n int) []byteRange {
	out := make([]byteRange, n)
	for i := range out {
		out[i] = r
	}
	return out
}

// TestRangeAnswers checks what a client gets for a Range on a cached blob,
// a download in progress and a manifest.
func TestRangeAnswers(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	img, path, blob := s.pushImage(t, 4096)
	size := len(blob)
	etag := `"` + strings.TrimPrefix(path, "/v2/app/blobs/") + `"`
	blobURL := s.srv.URL + path

	for _, tc := range []struct {
		name   string
		header http.Header
		status int
		want   []byte // the body, for a 200 or a one-range 206
		parts  int    // multipart 206: how many parts
	}{
		{name: "one range", header: http.Header{"Range": {"bytes=10-19"}}, status: 206, want: blob[10:20]},
		{name: "suffix", header: http.Header{"Range": {"bytes=-5"}}, status: 206, want: blob[size-5:]},
		{name: "zero suffix", header: http.Header{"Range": {"bytes=-0"}}, status: 416},
		{name: "past the end", header: http.Header{"Range": {"bytes=" + strconv.Itoa(size) + "-"}}, status: 416},
		{name: "one satisfiable of two", header: http.Header{"Range": {"bytes=-0,0-1"}}, status: 206, want: blob[0:2]},
		{name: "maxRanges ranges", header: http.Header{"Range": {"bytes=" + strings.Repeat("0-0,", maxRanges)}}, status: 206, parts: maxRanges},
		{name: "too many ranges: ignored", header: http.Header{"Range": {"bytes=" + strings.Repeat("0-0,", maxRanges+1)}}, status: 200, want: blob},
		{name: "invalid: ignored", header: http.Header{"Range": {"bytes=5-3"}}, status: 200, want: blob},
		{name: "other unit: ignored", header: http.Header{"Range": {"items=0-1"}}, status: 200, want: blob},
		{name: "If-Range matches", header: http.Header{"Range": {"bytes=0-1"}, "If-Range": {etag}}, status: 206, want: blob[0:2]},
		{name: "If-Range differs", header: http.Header{"Range": {"bytes=0-1"}, "If-Range": {`"other"`}}, status: 200, want: blob},
		{name: "If-None-Match before Range", header: http.Header{"Range": {"bytes=-0"}, "If-None-Match": {etag}}, status: 304},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, "GET", blobURL, tc.header)
			require.Equal(t, tc.status, resp.StatusCode, "%.200s", body)
			switch {
			case tc.status == 416:
				assert.Equal(t, "bytes */"+strconv.Itoa(size), resp.Header.Get("Content-Range"))
			case tc.parts > 0:
				assert.Len(t, multipartBodies(t, resp, body), tc.parts)
			case tc.want != nil:
				assert.Equal(t, tc.want, body)
			}
		})
	}

	raw, _ := img.RawManifest()
	resp, body := do(t, "GET", s.srv.URL+"/v2/app/manifests/v1", http.Header{"Range": {"bytes=" + strings.Repeat("0-0,", 1000)}})
	assert.Equal(t, http.StatusOK, resp.StatusCode, "a manifest is bounded the same way")
	assert.Equal(t, raw, body)
}

func multipartBodies(t *testing.T, resp *http.Response, body []byte) [][]byte {
	t.Helper()
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	require.NoError(t, err)
	require.Equal(t, "multipart/byteranges", mt)
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	var parts [][]byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return parts
		}
		require.NoError(t, err)
		b, err := io.ReadAll(p)
		require.NoError(t, err)
		parts = append(parts, b)
	}
}

// manyRanges is the multi-range attack: 80,000 distinct one-byte ranges
// (of a blob of more than 80,000 bytes), which cost http.ServeContent
// 1.85 s of CPU per request.
func manyRanges() string {
	var b strings.Builder
	b.WriteString("bytes=")
	for i := range 80_000 {
		fmt.Fprintf(&b, "%d-%d,", i, i)
	}
	return strings.TrimSuffix(b.String(), ",")
}

// TestManyRangesAreIgnored: such a request is answered 200 with the whole
// blob (RFC 9110 §14.2 lets a server ignore a Range header), which costs a
// sendfile, not a multipart body of 80,000 parts.
func TestManyRangesAreIgnored(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	_, path, blob := s.pushImage(t, 128<<10)
	url := s.srv.URL + path
	for _, source := range []string{"miss", "hit"} {
		resp, body := do(t, "GET", url, http.Header{"Range": {manyRanges()}})
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, blob, body)
		assert.Equal(t, source, resp.Header.Get(CacheHeader))
	}
}

// BenchmarkManyRanges measures one request of the multi-range attack
// against a cached blob, from an HTTP client.
func BenchmarkManyRanges(b *testing.B) {
	s := newStack(b)
	_, path, _ := s.pushImage(b, 128<<10)
	url := s.srv.URL + path
	header := http.Header{"Range": {manyRanges()}}
	do(b, "GET", url, nil) // cached from now on
	for b.Loop() {
		do(b, "GET", url, header)
	}
}

// FuzzRangeHeader: the parser never panics, keeps at most maxRanges, and
// what it resolves lies within the content; http.ServeContent, given the
// header lifeboat writes, answers with those bytes.
func FuzzRangeHeader(f *testing.F) {
	for _, h := range []string{"bytes=0-9", "bytes=-0", "bytes=5-", "bytes=0-0,2-2,-3", "Bytes= 1-2 ,, 3-", "items=0-1", "bytes=9223372036854775807-"} {
		f.Add(h, int64(100))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		size = max(size, 0) % (64 << 10)
		specs, err := parseRangeHeader(h)
		if err != nil {
			require.Nil(t, specs)
			return
		}
		require.NotEmpty(t, specs)
		require.LessOrEqual(t, len(specs), maxRanges)
		ranges := resolve(specs, size)
		for _, r := range ranges {
			require.True(t, r.start >= 0 && r.length > 0 && r.start+r.length <= size, "%+v outside %d bytes", r, size)
		}

		content := bytes.Repeat([]byte("0123456789abcdef"), int(size/16)+1)[:size]
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("Range", h)
		w := httptest.NewRecorder()
		serveContent(w, req, specs, size, time.Time{}, bytes.NewReader(content))
		switch {
		case len(ranges) == 0 && size == 0:
			// ServeContent ignores a Range on empty content: 200.
			require.Equal(t, http.StatusOK, w.Code)
			require.Empty(t, w.Body.Bytes())
		case len(ranges) == 0:
			require.Equal(t, http.StatusRequestedRangeNotSatisfiable, w.Code)
			require.Equal(t, fmt.Sprintf("bytes */%d", size), w.Header().Get("Content-Range"))
		case w.Code == http.StatusOK:
			// ServeContent serves everything when the ranges add up to
			// more than the content.
			require.Equal(t, content, w.Body.Bytes())
		case len(ranges) == 1:
			require.Equal(t, http.StatusPartialContent, w.Code)
			r := ranges[0]
			require.Equal(t, content[r.start:r.start+r.length], w.Body.Bytes())
			require.Equal(t, fmt.Sprintf("bytes %d-%d/%d", r.start, r.start+r.length-1, size), w.Header().Get("Content-Range"))
		default:
			require.Equal(t, http.StatusPartialContent, w.Code)
			parts := multipartBodies(t, w.Result(), w.Body.Bytes())
			require.Len(t, parts, len(ranges))
			for i, r := range ranges {
				require.Equal(t, content[r.start:r.start+r.length], parts[i])
			}
		}
	})
}

// TestRangesOfADownloadInProgress: what containerd 2.1+'s parallel layer
// fetch (open-ended bytes=N- beside bounded parts) and stargz snapshotters
// (several ranges in one request) send for a blob still downloading. Every
// request joins the one download (never restarted), waits for its bytes
// to be verified, and gets exactly its range; multi-range as a
// multipart/byteranges answer.
func TestRangesOfADownloadInProgress(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	_, path, blob := s.pushImage(t, 1<<20)
	size := len(blob)
	half := size / 2
	release := s.up.Hold("GET blobs")
	defer release()

	type answer struct {
		resp *http.Response
		body []byte
	}
	headers := []string{"bytes=" + strconv.Itoa(half) + "-", "bytes=0-" + strconv.Itoa(half-1), "bytes=0-99,200-299", ""}
	answers := make([]answer, len(headers))
	var wg sync.WaitGroup
	for i, h := range headers {
		wg.Go(func() {
			var hdr http.Header
			if h != "" {
				hdr = http.Header{"Range": {h}}
			}
			answers[i].resp, answers[i].body = do(t, "GET", s.srv.URL+path, hdr)
		})
	}
	require.Eventually(t, func() bool {
		return gauge(t, s.reg, "lifeboat_proxy_fill_clients") == float64(len(headers)) && s.up.InFlight("GET blobs") == 1
	}, 10*time.Second, 5*time.Millisecond, "every request waits on the one download")
	release()
	wg.Wait()

	assert.Equal(t, 1, s.up.Requests("GET blobs"), "one download, never restarted")
	open, first, multi, whole := answers[0], answers[1], answers[2], answers[3]
	require.Equal(t, http.StatusPartialContent, open.resp.StatusCode)
	assert.Equal(t, blob[half:], open.body)
	assert.Equal(t, fmt.Sprintf("bytes %d-%d/%d", half, size-1, size), open.resp.Header.Get("Content-Range"))
	require.Equal(t, http.StatusPartialContent, first.resp.StatusCode)
	assert.Equal(t, blob[:half], first.body)
	require.Equal(t, http.StatusPartialContent, multi.resp.StatusCode)
	assert.Equal(t, [][]byte{blob[0:100], blob[200:300]}, multipartBodies(t, multi.resp, multi.body))
	require.Equal(t, http.StatusOK, whole.resp.StatusCode)
	assert.Equal(t, blob, whole.body)

	resp, body := do(t, "GET", s.srv.URL+path, http.Header{"Range": {"bytes=" + strconv.Itoa(size-10) + "-"}})
	require.Equal(t, http.StatusPartialContent, resp.StatusCode, "open-ended, cached")
	assert.Equal(t, blob[size-10:], body)
	assert.Equal(t, "hit", resp.Header.Get(CacheHeader))
}

// gauge reads an unlabelled gauge from reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}
