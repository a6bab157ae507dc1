package registry

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/lifeboat-dev/lifeboat/proxy"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type stack struct {
	up  *upstreamtest.Upstream
	srv *httptest.Server
	reg *prometheus.Registry
	p   *proxy.Proxy // behind srv: a test can fill the cache without the edge's limits
}

// newStack runs lifeboat (store, proxy, handler) in front of a real upstream
// mirrored as "upstream.test", the default registry.
func newStack(t testing.TB) *stack {
	t.Helper()
	return newStackWith(t, stackOptions{})
}

// stackOptions adjust newStack: the handler's Options (its Registerer is
// the stack's) and the upstream's blob stall limit (zero: upstream's default).
type stackOptions struct {
	registry  Options
	bodyStall time.Duration
	// aliases are further mirrored registry names, served by the same
	// upstream.
	aliases []string
	tagTTL  time.Duration // the upstream's TagTTL
}

func newStackWith(t testing.TB, so stackOptions) *stack {
	t.Helper()
	up := upstreamtest.Start(t)
	store, err := cache.Open(t.TempDir(), cache.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	reg := prometheus.NewPedanticRegistry()
	var ups []proxy.Upstream
	// No test here hangs the upstream: budgets no busy machine overruns
	// (a revalidation past 500 ms was served stale).
	timeouts := upstream.Timeouts{Revalidate: 10 * time.Second, Request: 10 * time.Second, BodyStall: so.bodyStall}
	cfgs := []upstream.Config{
		{Name: "upstream.test", URL: up.URL, Timeouts: timeouts},
		{Name: "other.test", URL: "http://127.0.0.1:1"},
	}
	for _, alias := range so.aliases {
		cfgs = append(cfgs, upstream.Config{Name: alias, URL: up.URL, Timeouts: timeouts})
	}
	for _, cfg := range cfgs {
		c, err := upstream.New(cfg, upstream.Options{})
		require.NoError(t, err)
		ups = append(ups, proxy.Upstream{Client: c, TagTTL: so.tagTTL})
	}
	p, err := proxy.New(store, proxy.Options{Upstreams: ups, DefaultRegistry: "upstream.test", Registerer: reg})
	require.NoError(t, err)
	t.Cleanup(p.Close)
	so.registry.Registerer = reg
	srv := httptest.NewServer(New(p, so.registry))
	t.Cleanup(srv.Close)
	return &stack{up: up, srv: srv, reg: reg, p: p}
}

func (s *stack) ref(t *testing.T, repoRef string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(strings.TrimPrefix(s.srv.URL, "http://")+"/"+repoRef, name.Insecure)
	require.NoError(t, err)
	return ref
}

// pushImage pushes a random image of one layer of size bytes as app:v1
// and returns it, its layer's blob path and the layer's bytes.
func (s *stack) pushImage(t testing.TB, size int64) (img v1.Image, blobPath string, blob []byte) {
	t.Helper()
	img = upstreamtest.RandomImage(t, size, 1)
	s.up.Push(t, "app:v1", img)
	layers, err := img.Layers()
	require.NoError(t, err)
	ld, err := layers[0].Digest()
	require.NoError(t, err)
	rc, err := layers[0].Compressed()
	require.NoError(t, err)
	defer rc.Close()
	blob, err = io.ReadAll(rc)
	require.NoError(t, err)
	return img, "/v2/app/blobs/" + ld.String(), blob
}

type ociError struct {
	Errors []struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"errors"`
}

func do(t testing.TB, method, url string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, body
}

func TestPullThroughWithARealClient(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	img := upstreamtest.RandomImage(t, 8<<10, 3)
	s.up.Push(t, "team/app:v1", img)
	idx := upstreamtest.MultiArchIndex(t, 2048, v1.Platform{OS: "linux", Architecture: "amd64"}, v1.Platform{OS: "linux", Architecture: "arm64"})
	s.up.Push(t, "team/multi:v1", idx)

	for range 2 { // a miss, then a hit
		got, err := remote.Image(s.ref(t, "team/app:v1"), remote.WithContext(t.Context()))
		require.NoError(t, err)
		require.NoError(t, validate.Image(got), "every blob verifies against its digest")
		wantD, _ := img.Digest()
		gotD, _ := got.Digest()
		assert.Equal(t, wantD, gotD)

		gotIdx, err := remote.Index(s.ref(t, "team/multi:v1"), remote.WithContext(t.Context()))
		require.NoError(t, err)
		require.NoError(t, validate.Index(gotIdx), "index, children and their blobs verify")
		mt, err := gotIdx.MediaType()
		require.NoError(t, err)
		assert.Equal(t, "application/vnd.oci.image.index.v1+json", string(mt), "media types are kept")
	}

	s.up.Stop()
	got, err := remote.Image(s.ref(t, "team/app:v1"), remote.WithContext(t.Context()))
	require.NoError(t, err, "a cached tag pulls with upstream down")
	require.NoError(t, validate.Image(got))

	problems, err := testutil.GatherAndLint(s.reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
	assert.Positive(t, s.servedBytes(t, "cache"), "stale and hit bytes are counted as served from cache")
}

// servedBytes reads lifeboat_registry_served_bytes_total{source}.
func (s *stack) servedBytes(t *testing.T, source string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "lifeboat_registry_served_bytes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == source {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestHTTPAnswers(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	img := upstreamtest.RandomImage(t, 4096, 1)
	s.up.Push(t, "app:v1", img)
	md, _ := img.Digest()
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	missing := "sha256:" + strings.Repeat("0", 64)
	u := s.srv.URL

	for _, tc := range []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"base", "GET", "/v2/", 200, ""},
		{"manifest by tag", "GET", "/v2/app/manifests/v1", 200, ""},
		{"manifest HEAD", "HEAD", "/v2/app/manifests/" + md.String(), 200, ""},
		{"blob", "GET", "/v2/app/blobs/" + ld.String(), 200, ""},
		{"blob HEAD", "HEAD", "/v2/app/blobs/" + ld.String(), 200, ""},
		{"explicit ns", "GET", "/v2/app/manifests/v1?ns=upstream.test", 200, ""},
		{"unknown ns", "GET", "/v2/app/manifests/v1?ns=evil.example.com", 403, "DENIED"},
		{"unknown tag", "GET", "/v2/app/manifests/v2", 404, "MANIFEST_UNKNOWN"},
		{"unknown blob", "GET", "/v2/app/blobs/" + missing, 404, "BLOB_UNKNOWN"},
		{"unknown repo", "GET", "/v2/nope/manifests/v1", 404, "MANIFEST_UNKNOWN"},
		{"upstream down, not cached", "GET", "/v2/app/manifests/v1?ns=other.test", 503, "UNAVAILABLE"},
		{"traversal", "GET", "/v2/a/..%2f..%2fetc/manifests/v1", 400, "NAME_INVALID"},
		{"upper case", "GET", "/v2/App/manifests/v1", 400, "NAME_INVALID"},
		{"bad digest", "GET", "/v2/app/blobs/sha256:1234", 400, "DIGEST_INVALID"},
		{"bad algorithm", "GET", "/v2/app/manifests/md5:d41d8cd98f00b204e9800998ecf8427e", 400, "DIGEST_INVALID"},
		{"push", "PUT", "/v2/app/manifests/v1", 405, "UNSUPPORTED"},
		{"upload", "POST", "/v2/app/blobs/uploads/", 405, "UNSUPPORTED"},
		{"delete", "DELETE", "/v2/app/blobs/" + ld.String(), 405, "UNSUPPORTED"},
		{"catalog", "GET", "/v2/_catalog", 405, "UNSUPPORTED"},
		{"not the API", "GET", "/v1/app", 404, "NAME_UNKNOWN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, tc.method, u+tc.path, nil)
			assert.Equal(t, tc.status, resp.StatusCode, "%s", body)
			assert.Equal(t, "registry/2.0", resp.Header.Get("Docker-Distribution-API-Version"))
			if tc.code == "" {
				return
			}
			var e ociError
			require.NoError(t, json.Unmarshal(body, &e), "%s", body)
			require.Len(t, e.Errors, 1)
			assert.Equal(t, tc.code, e.Errors[0].Code)
			assert.NotEmpty(t, e.Errors[0].Message)
		})
	}
}

func TestManifestAndBlobHeaders(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	img := upstreamtest.RandomImage(t, 4096, 1)
	s.up.Push(t, "app:v1", img)
	raw, _ := img.RawManifest()
	md, _ := img.Digest()
	mt, _ := img.MediaType()
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	blob, err := layers[0].Compressed()
	require.NoError(t, err)
	want, err := io.ReadAll(blob)
	require.NoError(t, err)

	resp, body := do(t, "GET", s.srv.URL+"/v2/app/manifests/v1", nil)
	require.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, raw, body)
	assert.Equal(t, string(mt), resp.Header.Get("Content-Type"))
	assert.Equal(t, md.String(), resp.Header.Get("Docker-Content-Digest"))
	assert.Equal(t, `"`+md.String()+`"`, resp.Header.Get("Etag"))
	assert.Equal(t, "miss", resp.Header.Get(CacheHeader))

	resp, body = do(t, "HEAD", s.srv.URL+"/v2/app/manifests/v1", nil)
	require.Equal(t, 200, resp.StatusCode)
	assert.Empty(t, body)
	assert.Equal(t, int64(len(raw)), resp.ContentLength)
	assert.Equal(t, "hit", resp.Header.Get(CacheHeader))

	resp, _ = do(t, "GET", s.srv.URL+"/v2/app/manifests/v1", http.Header{"If-None-Match": {`"` + md.String() + `"`}})
	assert.Equal(t, http.StatusNotModified, resp.StatusCode)

	resp, body = do(t, "GET", s.srv.URL+"/v2/app/blobs/"+ld.String(), nil)
	require.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, want, body)
	assert.Equal(t, ld.String(), resp.Header.Get("Docker-Content-Digest"))
	assert.Equal(t, int64(len(want)), resp.ContentLength)

	resp, body = do(t, "GET", s.srv.URL+"/v2/app/blobs/"+ld.String(), http.Header{"Range": {"bytes=10-19"}})
	require.Equal(t, http.StatusPartialContent, resp.StatusCode)
	assert.Equal(t, want[10:20], body)
	assert.Equal(t, "hit", resp.Header.Get(CacheHeader))

	resp, _ = do(t, "HEAD", s.srv.URL+"/v2/app/blobs/"+ld.String(), nil)
	assert.Equal(t, int64(len(want)), resp.ContentLength)
}

func TestRangeOfAnUncachedBlob(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	_, path, want := s.pushImage(t, 1<<20)

	resp, body := do(t, "GET", s.srv.URL+path, http.Header{"Range": {"bytes=1000-1999"}})
	require.Equal(t, http.StatusPartialContent, resp.StatusCode)
	assert.Equal(t, want[1000:2000], body)
	assert.Equal(t, "miss", resp.Header.Get(CacheHeader))
}

func TestTagsList(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	img := upstreamtest.RandomImage(t, 256, 1)
	for _, tag := range []string{"c", "a", "b", "d"} {
		s.up.Push(t, "app:"+tag, img)
	}
	list := func(query string) (*http.Response, []string) {
		resp, body := do(t, "GET", s.srv.URL+"/v2/app/tags/list"+query, nil)
		require.Equal(t, 200, resp.StatusCode, "%s", body)
		var l struct {
			Name string   `json:"name"`
			Tags []string `json:"tags"`
		}
		require.NoError(t, json.Unmarshal(body, &l))
		assert.Equal(t, "app", l.Name)
		return resp, l.Tags
	}
	_, tags := list("")
	assert.Equal(t, []string{"a", "b", "c", "d"}, tags)
	resp, tags := list("?n=2")
	assert.Equal(t, []string{"a", "b"}, tags)
	assert.Equal(t, `</v2/app/tags/list?last=b&n=2>; rel="next"`, resp.Header.Get("Link"))
	resp, tags = list("?n=2&last=b")
	assert.Equal(t, []string{"c", "d"}, tags)
	assert.Empty(t, resp.Header.Get("Link"))

	s.up.Stop()
	resp, tags = list("?last=a")
	assert.Equal(t, []string{"b", "c", "d"}, tags, "the remembered list answers during an outage")
	assert.Equal(t, "stale", resp.Header.Get(CacheHeader))

	resp, body := do(t, "GET", s.srv.URL+"/v2/app/tags/list?n=-1", nil)
	assert.Equal(t, 400, resp.StatusCode)
	assert.Contains(t, string(body), "PAGINATION_NUMBER_INVALID")
}

func TestCorruptUpstreamIsRefused(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	img := upstreamtest.RandomImage(t, 4096, 1)
	s.up.Push(t, "app:v1", img)
	s.up.SetMode(upstreamtest.CorruptBodies)

	resp, body := do(t, "GET", s.srv.URL+"/v2/app/manifests/v1", nil)
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
	assert.Contains(t, string(body), "DIGEST_INVALID")

	s.up.SetMode(upstreamtest.OK)
	got, err := remote.Image(s.ref(t, "app:v1"), remote.WithContext(t.Context()))
	require.NoError(t, err)
	require.NoError(t, validate.Image(got), "nothing corrupt was stored")
}

func TestRangeOfACorruptDownloadIsNeverServed(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	img := upstreamtest.RandomImage(t, 1<<20, 1)
	s.up.Push(t, "app:v1", img)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	s.up.SetMode(upstreamtest.CorruptBodies)

	resp, body := do(t, "GET", s.srv.URL+"/v2/app/blobs/"+ld.String(), http.Header{"Range": {"bytes=0-99"}})
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode, "a range is served only from a verified blob")
	assert.Contains(t, string(body), "DIGEST_INVALID")
}
