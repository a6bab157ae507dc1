package registry

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	sbomType = "application/vnd.example.sbom.v1"
	sigType  = "application/vnd.example.signature.v1"
)

// pushWithReferrers pushes app:v1 and two artifacts (an SBOM and a
// signature) whose subject it is, and returns the image's digest.
func pushWithReferrers(t *testing.T, s *stack) v1.Hash {
	t.Helper()
	img := upstreamtest.RandomImage(t, 1024, 1)
	s.up.Push(t, "app:v1", img)
	d, err := img.Digest()
	require.NoError(t, err)
	mt, err := img.MediaType()
	require.NoError(t, err)
	raw, err := img.RawManifest()
	require.NoError(t, err)
	subject := v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw))}
	for i, at := range []types.MediaType{sbomType, sigType} {
		art := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), at)
		art = mutate.Annotations(art, map[string]string{"n": string(rune('a' + i))}).(v1.Image)
		s.up.Push(t, "app:art"+string(rune('a'+i)), mutate.Subject(art, subject).(v1.Image))
	}
	return d
}

// referrersVia lists d's referrers in app with remote.Referrers at host.
func referrersVia(t *testing.T, host string, d v1.Hash, opts ...remote.Option) []v1.Descriptor {
	t.Helper()
	ref, err := name.NewDigest(host+"/app@"+d.String(), name.Insecure)
	require.NoError(t, err)
	idx, err := remote.Referrers(ref, append(opts, remote.WithContext(t.Context()))...)
	require.NoError(t, err)
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	return im.Manifests
}

func artifactTypes(ds []v1.Descriptor) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.ArtifactType)
	}
	return out
}

// TestReferrers: the referrers API through lifeboat, with an upstream that
// serves it and with one that does not (the referrers tag schema), by raw
// HTTP and with go-containerregistry's remote.Referrers (what cosign and
// notation use): the same answers as upstream's, filtered by artifactType,
// and still there with upstream down.
func TestReferrers(t *testing.T) {
	t.Parallel()
	for _, api := range []bool{true, false} {
		t.Run(map[bool]string{true: "upstream API", false: "fallback tag"}[api], func(t *testing.T) {
			t.Parallel()
			s := newStack(t)
			s.up.SetReferrersAPI(api)
			d := pushWithReferrers(t, s)
			lifeboat := strings.TrimPrefix(s.srv.URL, "http://")
			direct := referrersVia(t, s.up.Host, d)
			require.Len(t, direct, 2, "upstream holds two referrers")

			path := s.srv.URL + "/v2/app/referrers/" + d.String()
			unknown := "sha256:" + strings.Repeat("0", 64)
			for _, tc := range []struct {
				name, path, filter string
				status, manifests  int
			}{
				{"all", path, "", 200, 2},
				{"filtered", path + "?artifactType=" + sbomType, "artifactType", 200, 1},
				{"filter matching nothing", path + "?artifactType=application/none", "artifactType", 200, 0},
				{"nothing refers to it", s.srv.URL + "/v2/app/referrers/" + unknown, "", 200, 0},
				{"not a digest", s.srv.URL + "/v2/app/referrers/v1", "", 400, -1},
			} {
				resp, body := do(t, "GET", tc.path, nil)
				require.Equal(t, tc.status, resp.StatusCode, "%s: %s", tc.name, body)
				if tc.manifests < 0 {
					continue
				}
				assert.Equal(t, "application/vnd.oci.image.index.v1+json", resp.Header.Get("Content-Type"), tc.name)
				assert.Equal(t, tc.filter, resp.Header.Get("OCI-Filters-Applied"), tc.name)
				var idx v1.IndexManifest
				require.NoError(t, json.Unmarshal(body, &idx), tc.name)
				assert.Len(t, idx.Manifests, tc.manifests, tc.name)
			}

			through := referrersVia(t, lifeboat, d)
			assert.ElementsMatch(t, direct, through, "the same descriptors as upstream's")
			assert.ElementsMatch(t, []string{sbomType, sigType}, artifactTypes(through))
			filtered := referrersVia(t, lifeboat, d, remote.WithFilter("artifactType", sigType))
			assert.Equal(t, []string{sigType}, artifactTypes(filtered))

			s.up.Stop()
			assert.ElementsMatch(t, direct, referrersVia(t, lifeboat, d), "served stale with upstream down")
			resp, _ := do(t, "GET", path, nil)
			assert.Equal(t, "stale", resp.Header.Get(CacheHeader))
			resp, _ = do(t, "GET", s.srv.URL+"/v2/app/referrers/"+unknown, nil)
			assert.Equal(t, http.StatusOK, resp.StatusCode, "an empty list is an answer too, cached under the API")
			resp, _ = do(t, "GET", s.srv.URL+"/v2/app/referrers/sha256:"+strings.Repeat("1", 64), nil)
			assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "nothing cached to answer with")
		})
	}
}
