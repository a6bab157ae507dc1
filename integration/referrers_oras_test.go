package integration

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	orasremote "oras.land/oras-go/v2/registry/remote"
)

// TestReferrersThroughLifeboatWithORAS: oras-go's Repository.Referrers is
// the referrers client of notation (notation-go discovers signatures with
// it) and of the oras CLI: it asks the referrers API and, on a 404, falls
// back to the referrers tag schema by itself. For an upstream with the API
// (go-containerregistry's registry) and one without (distribution's), it
// gets the same descriptors through lifeboat as from the registry,
// unfiltered and filtered by artifact type, and again once the registry
// is gone.
func TestReferrersThroughLifeboatWithORAS(t *testing.T) {
	t.Parallel()
	const (
		sbom = "application/vnd.example.sbom.v1"
		sig  = "application/vnd.cncf.notary.signature"
	)
	withAPI := upstreamtest.Start(t)
	withoutAPI := startRegistry(t, distribution(t), "")
	for _, tc := range []struct {
		name string
		url  string
		stop func()
	}{
		{"upstream with the referrers API", withAPI.URL, withAPI.Stop},
		{"upstream without it (referrers tag schema)", withoutAPI.url, func() { _ = withoutAPI.cmd.Process.Kill(); _ = withoutAPI.cmd.Wait() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := strings.TrimPrefix(tc.url, "http://")
			subject := pushWithArtifacts(t, host+"/signed/app:v1", sbom, sig)
			lb := startLifeboat(t, t.TempDir(), "--upstream", "up.test="+tc.url, "--default-registry", "up.test")
			list := func(host, artifactType string) []ocispec.Descriptor {
				t.Helper()
				repo, err := orasremote.NewRepository(host + "/signed/app")
				require.NoError(t, err)
				repo.PlainHTTP = true
				var got []ocispec.Descriptor
				require.NoError(t, repo.Referrers(t.Context(), subject, artifactType, func(refs []ocispec.Descriptor) error {
					got = append(got, refs...)
					return nil
				}))
				return got
			}
			direct := list(host, "")
			require.Len(t, direct, 2, "the registry lists both artifacts")
			assert.ElementsMatch(t, direct, list(lb.Host, ""), "the same list through lifeboat")
			signatures := list(lb.Host, sig)
			require.Len(t, signatures, 1)
			assert.Equal(t, sig, signatures[0].ArtifactType)
			assert.ElementsMatch(t, list(host, sig), signatures)

			tc.stop()
			assert.ElementsMatch(t, direct, list(lb.Host, ""), "the same list with the registry gone")
			assert.ElementsMatch(t, signatures, list(lb.Host, sig), "filtered too")
		})
	}
}

// pushWithArtifacts pushes a random image to ref and, for each artifact
// type, an artifact manifest whose subject is that image; it returns the
// image's descriptor.
func pushWithArtifacts(t *testing.T, ref string, artifactTypes ...string) ocispec.Descriptor {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	require.NoError(t, err)
	img := upstreamtest.RandomImage(t, 4096, 1)
	require.NoError(t, remote.Write(r, img, remote.WithContext(t.Context())))
	d, err := img.Digest()
	require.NoError(t, err)
	mt, err := img.MediaType()
	require.NoError(t, err)
	raw, err := img.RawManifest()
	require.NoError(t, err)
	for _, at := range artifactTypes {
		art := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.MediaType(at))
		art = mutate.Subject(art, v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw))}).(v1.Image)
		ad, err := art.Digest()
		require.NoError(t, err)
		require.NoError(t, remote.Write(r.Context().Digest(ad.String()), art, remote.WithContext(t.Context())))
	}
	return ocispec.Descriptor{MediaType: string(mt), Digest: digest.Digest(d.String()), Size: int64(len(raw))}
}
