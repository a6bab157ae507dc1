package proxy

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	ociIndex          = "application/vnd.oci.image.index.v1+json"
	ociManifest       = "application/vnd.oci.image.manifest.v1+json"
	dockerV2Manifest  = "application/vnd.docker.distribution.manifest.v2+json"
	registryA         = "a.test"
	registryB         = "b.test"
	contentTypeHeader = "Content-Type"
)

// lyingContentType fronts a registry and answers every manifest with
// Content-Type contentType, whatever the bytes are.
func lyingContentType(t *testing.T, target, contentType string) string {
	t.Helper()
	u, err := url.Parse(target)
	require.NoError(t, err)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		if strings.Contains(resp.Request.URL.Path, "/manifests/") {
			resp.Header.Set(contentTypeHeader, contentType)
		}
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return srv.URL
}

// newTwoRegistryProxy builds a proxy over a fresh store mirroring two
// registries, reached at urlA and urlB.
func newTwoRegistryProxy(t *testing.T, urlA, urlB string) (*Proxy, *cache.Store) {
	t.Helper()
	store, err := cache.Open(t.TempDir(), cache.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	var ups []Upstream
	for name, u := range map[string]string{registryA: urlA, registryB: urlB} {
		c, err := upstream.New(upstream.Config{Name: name, URL: u, Timeouts: upstream.Timeouts{Request: 5 * time.Second, Revalidate: time.Second}}, upstream.Options{})
		require.NoError(t, err)
		ups = append(ups, Upstream{Client: c})
	}
	p, err := New(store, Options{Upstreams: ups, DefaultRegistry: registryA})
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p, store
}

// TestContentTypeCannotPoisonAnotherRegistry: registry A answers an index
// with an image manifest's Content-Type. The index is served as an index,
// from A and from B, which serves the same digest honestly.
func TestContentTypeCannotPoisonAnotherRegistry(t *testing.T) {
	t.Parallel()
	idx := upstreamtest.MultiArchIndex(t, 256, v1.Platform{OS: "linux", Architecture: "amd64"}, v1.Platform{OS: "linux", Architecture: "arm64"})
	d, err := idx.Digest()
	require.NoError(t, err)
	upA, upB := upstreamtest.Start(t), upstreamtest.Start(t)
	upA.Push(t, "app:v1", idx)
	upB.Push(t, "app:v1", idx)
	p, store := newTwoRegistryProxy(t, lyingContentType(t, upA.URL, ociManifest), upB.URL)

	for _, ref := range []string{"v1", d.String()} {
		m, err := p.Manifest(t.Context(), registryA, "app", ref)
		require.NoError(t, err, ref)
		assert.Equal(t, ociIndex, m.MediaType, "%s from the lying registry: the bytes say index", ref)
	}
	stored, err := store.GetManifest(digest.Digest(d.String()))
	require.NoError(t, err)
	assert.Equal(t, ociIndex, stored.MediaType)

	m, err := p.Manifest(t.Context(), registryB, "app", d.String())
	require.NoError(t, err)
	assert.Equal(t, Hit, m.Source)
	assert.Equal(t, ociIndex, m.MediaType, "the other registry's pull is not poisoned")
	m, err = p.Manifest(t.Context(), registryB, "app", "v1")
	require.NoError(t, err)
	assert.Equal(t, ociIndex, m.MediaType)
	child, err := idx.IndexManifest()
	require.NoError(t, err)
	cm, err := p.Manifest(t.Context(), registryB, "app", child.Manifests[0].Digest.String())
	require.NoError(t, err, "the index's children resolve through the other registry")
	assert.Equal(t, ociManifest, cm.MediaType)
}

// fixedManifest is a registry that answers every manifest request with
// body and Content-Type contentType.
func fixedManifest(t *testing.T, body []byte, contentType string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			w.WriteHeader(http.StatusOK) // GET /v2/
			return
		}
		w.Header().Set(contentTypeHeader, contentType)
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(body).String())
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestContentTypeOnlyFillsWhatTheBytesLeaveOpen: an index that declares no
// media type (OCI allows that) is an OCI index whatever Content-Type came
// with it, unless the Content-Type is an index type its descriptors agree
// with; and the type first recorded stands for every registry.
func TestContentTypeOnlyFillsWhatTheBytesLeaveOpen(t *testing.T) {
	t.Parallel()
	child := digest.FromString("a child manifest")
	body := []byte(`{"schemaVersion":2,"manifests":[{"mediaType":"` + dockerV2Manifest + `","digest":"` + child.String() + `","size":1}]}`)
	d := digest.FromBytes(body)
	for _, tc := range []struct {
		name, header, want string
	}{
		{"image manifest type", dockerV2Manifest, ociIndex},
		{"generic", "application/json", ociIndex},
		{"none", "", ociIndex},
		{"docker list with docker children", "application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, _ := newTwoRegistryProxy(t, fixedManifest(t, body, tc.header), fixedManifest(t, body, ociIndex))
			m, err := p.Manifest(t.Context(), registryA, "app", "v1")
			require.NoError(t, err)
			assert.Equal(t, d, m.Digest)
			assert.Equal(t, tc.want, m.MediaType)

			m, err = p.Manifest(t.Context(), registryB, "app", "v1")
			require.NoError(t, err, "the same digest by tag from the other registry")
			assert.Equal(t, tc.want, m.MediaType, "the first verified type stands")
		})
	}
}

// TestManifestBytesOfTheWrongShapeAreRefused: bytes that declare an index
// but are shaped like an image manifest are invalid, whatever the header.
func TestManifestBytesOfTheWrongShapeAreRefused(t *testing.T) {
	t.Parallel()
	cfg := digest.FromString("config")
	body := []byte(`{"schemaVersion":2,"mediaType":"` + ociIndex + `","config":{"digest":"` + cfg.String() + `"},"layers":[]}`)
	p, store := newTwoRegistryProxy(t, fixedManifest(t, body, ociIndex), fixedManifest(t, body, ociIndex))
	_, err := p.Manifest(t.Context(), registryA, "app", "v1")
	var ue *upstream.Error
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, upstream.ReasonBadResponse, ue.Reason)
	_, err = store.GetManifest(digest.FromBytes(body))
	assert.ErrorIs(t, err, cache.ErrNotFound, "nothing is stored")
}
