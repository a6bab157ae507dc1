package registry

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// addressing is one way a client names the registry: containerd's ns=,
// CRI-O's path prefix (plain, or host:port written host_port), or nothing
// (the default registry).
type addressing struct {
	name   string
	prefix string // put before the repository in the path
	ns     string // sent as ?ns=
}

var addressings = []addressing{
	{name: "default registry"},
	{name: "ns", ns: "upstream.test"},
	{name: "path prefix", prefix: "upstream.test/"},
	{name: "host_port path prefix", prefix: "localhost_5001/"},
	{name: "ns of a host:port registry", ns: "localhost:5001"},
}

// nsTransport adds ns= to every request, as containerd does.
type nsTransport struct{ ns string }

func (t nsTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.ns != "" {
		r = r.Clone(r.Context())
		q := r.URL.Query()
		q.Set("ns", t.ns)
		r.URL.RawQuery = q.Encode()
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestEveryAddressingPassesTheSameChecks is a conformance-style run of the
// pull API through each way of naming the registry: a real client pulls an
// image and an index (a miss, then a hit), then raw requests check
// manifests, blobs, ranges, tag paging and errors.
func TestEveryAddressingPassesTheSameChecks(t *testing.T) {
	t.Parallel()
	for _, a := range addressings {
		t.Run(a.name, func(t *testing.T) {
			t.Parallel()
			s := newStackWith(t, stackOptions{aliases: []string{"localhost:5001"}})
			img := upstreamtest.RandomImage(t, 8<<10, 2)
			s.up.Push(t, "team/app:v1", img)
			s.up.Push(t, "team/app:v2", img)
			idx := upstreamtest.MultiArchIndex(t, 2048, v1.Platform{OS: "linux", Architecture: "amd64"}, v1.Platform{OS: "linux", Architecture: "arm64"})
			s.up.Push(t, "team/multi:v1", idx)
			checkPulls(t, s, a, img)
			checkRawAnswers(t, s, a, img)
		})
	}
}

func checkPulls(t *testing.T, s *stack, a addressing, img v1.Image) {
	t.Helper()
	opts := []remote.Option{remote.WithContext(t.Context()), remote.WithTransport(nsTransport{a.ns})}
	for range 2 { // a miss, then a hit
		got, err := remote.Image(s.ref(t, a.prefix+"team/app:v1"), opts...)
		require.NoError(t, err)
		require.NoError(t, validate.Image(got), "every blob verifies against its digest")
		want, _ := img.Digest()
		gotD, _ := got.Digest()
		assert.Equal(t, want, gotD)
		gotIdx, err := remote.Index(s.ref(t, a.prefix+"team/multi:v1"), opts...)
		require.NoError(t, err)
		require.NoError(t, validate.Index(gotIdx))
	}
	tags, err := remote.List(s.ref(t, a.prefix+"team/app:v1").Context(), opts...)
	require.NoError(t, err)
	assert.Equal(t, []string{"v1", "v2"}, tags)
}

func checkRawAnswers(t *testing.T, s *stack, a addressing, img v1.Image) {
	t.Helper()
	md, _ := img.Digest()
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	missing := "sha256:" + strings.Repeat("0", 64)
	repo := "/v2/" + a.prefix + "team/app"
	query := ""
	if a.ns != "" {
		query = "?ns=" + a.ns
	}
	for _, tc := range []struct {
		name, method, path string
		header             http.Header
		status             int
		code               string
	}{
		{"manifest by tag", "GET", "/manifests/v1", nil, 200, ""},
		{"manifest HEAD by digest", "HEAD", "/manifests/" + md.String(), nil, 200, ""},
		{"blob", "GET", "/blobs/" + ld.String(), nil, 200, ""},
		{"blob HEAD", "HEAD", "/blobs/" + ld.String(), nil, 200, ""},
		{"blob range", "GET", "/blobs/" + ld.String(), http.Header{"Range": {"bytes=0-9"}}, 206, ""},
		{"unknown tag", "GET", "/manifests/nope", nil, 404, "MANIFEST_UNKNOWN"},
		{"unknown blob", "GET", "/blobs/" + missing, nil, 404, "BLOB_UNKNOWN"},
		{"push", "PUT", "/manifests/v1", nil, 405, "UNSUPPORTED"},
		{"upload", "POST", "/blobs/uploads/", nil, 405, "UNSUPPORTED"},
	} {
		resp, body := do(t, tc.method, s.srv.URL+repo+tc.path+query, tc.header)
		assert.Equal(t, tc.status, resp.StatusCode, "%s: %s", tc.name, body)
		if tc.code != "" {
			var e ociError
			require.NoError(t, json.Unmarshal(body, &e), "%s: %s", tc.name, body)
			require.Len(t, e.Errors, 1)
			assert.Equal(t, tc.code, e.Errors[0].Code, tc.name)
		} else if tc.path != "/blobs/uploads/" {
			assert.NotEmpty(t, resp.Header.Get("Docker-Content-Digest"), tc.name)
		}
	}

	// Tag paging: the next link repeats the path as the client wrote it,
	// prefix and ns= included, and the list names the repository so too.
	sep := "?"
	if query != "" {
		sep = query + "&"
	}
	resp, body := do(t, "GET", s.srv.URL+repo+"/tags/list"+sep+"n=1", nil)
	require.Equal(t, 200, resp.StatusCode, "%s", body)
	var l struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	require.NoError(t, json.Unmarshal(body, &l))
	assert.Equal(t, a.prefix+"team/app", l.Name)
	assert.Equal(t, []string{"v1"}, l.Tags)
	link := resp.Header.Get("Link")
	require.True(t, strings.HasPrefix(link, "<"+repo+"/tags/list?"), link)
	next := strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
	nextURL, err := url.Parse(next)
	require.NoError(t, err)
	assert.Equal(t, a.ns, nextURL.Query().Get("ns"))
	resp, body = do(t, "GET", s.srv.URL+next, nil)
	require.Equal(t, 200, resp.StatusCode, "%s", body)
	require.NoError(t, json.Unmarshal(body, &l))
	assert.Equal(t, []string{"v2"}, l.Tags)
}

// TestPrefixAmbiguity: a repository whose first component spells a
// mirrored registry. Without ns=, that registry serves the rest; the
// repository itself is reached through its own registry's prefix or ns=.
// An unmirrored first component never opens a registry.
func TestPrefixAmbiguity(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	img := upstreamtest.RandomImage(t, 1024, 1)
	// upstream.test holds a repository named like the mirrored other.test
	// registry (whose upstream refuses connections).
	s.up.Push(t, "other.test/app:v1", img)
	s.up.Push(t, "elsewhere.test/app:v1", img)
	for _, tc := range []struct {
		path   string
		status int
		code   string
	}{
		{"/v2/other.test/app/manifests/v1", 503, "UNAVAILABLE"}, // other.test itself, which is down
		{"/v2/other.test/app/manifests/v1?ns=upstream.test", 200, ""},
		{"/v2/upstream.test/other.test/app/manifests/v1", 200, ""},
		{"/v2/elsewhere.test/app/manifests/v1", 200, ""}, // not mirrored: the default registry's repository
		{"/v2/elsewhere.test/app/manifests/v1?ns=elsewhere.test", 403, "DENIED"},
		{"/v2/localhost:1/app/manifests/v1", 400, "NAME_INVALID"},
	} {
		resp, body := do(t, "GET", s.srv.URL+tc.path, nil)
		assert.Equal(t, tc.status, resp.StatusCode, "%s: %s", tc.path, body)
		if tc.code != "" {
			assert.Contains(t, string(body), tc.code, tc.path)
		}
	}
	// A short reference through the prefix: go-containerregistry's own
	// parse of a host/registry/repo reference.
	ref, err := name.ParseReference(strings.TrimPrefix(s.srv.URL, "http://")+"/upstream.test/other.test/app:v1", name.Insecure)
	require.NoError(t, err)
	_, err = remote.Image(ref, remote.WithContext(t.Context()))
	require.NoError(t, err)
}
