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
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReferrersThroughLifeboat: distribution's registry (which has no
// referrers API: clients keep the referrers tag schema's tag) holds an
// image with two attached artifacts, an SBOM and a signature. Through the
// built lifeboat, go-containerregistry's remote.Referrers (what cosign
// and notation use) gets the same list as from the registry, filtered
// too, and still gets it once the registry is gone.
func TestReferrersThroughLifeboat(t *testing.T) {
	t.Parallel()
	up := startRegistry(t, distribution(t), "")
	host := strings.TrimPrefix(up.url, "http://")
	img := upstreamtest.RandomImage(t, 4096, 1)
	ref, err := name.ParseReference(host+"/signed/app:v1", name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Write(ref, img, remote.WithContext(t.Context())))
	d, err := img.Digest()
	require.NoError(t, err)
	mt, err := img.MediaType()
	require.NoError(t, err)
	raw, err := img.RawManifest()
	require.NoError(t, err)
	subject := v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw))}
	for _, at := range []types.MediaType{"application/vnd.example.sbom.v1", "application/vnd.dev.cosign.artifact.sig.v1+json"} {
		art := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), at)
		art = mutate.Subject(art, subject).(v1.Image)
		ad, err := art.Digest()
		require.NoError(t, err)
		require.NoError(t, remote.Write(ref.Context().Digest(ad.String()), art, remote.WithContext(t.Context())))
	}

	lb := startLifeboat(t, t.TempDir(), "--upstream", "dist.test="+up.url, "--default-registry", "dist.test")
	list := func(host string, opts ...remote.Option) []v1.Descriptor {
		t.Helper()
		dref, err := name.NewDigest(host+"/signed/app@"+d.String(), name.Insecure)
		require.NoError(t, err)
		idx, err := remote.Referrers(dref, append(opts, remote.WithContext(t.Context()))...)
		require.NoError(t, err)
		im, err := idx.IndexManifest()
		require.NoError(t, err)
		return im.Manifests
	}
	direct := list(host)
	require.Len(t, direct, 2, "the registry lists both artifacts (through its fallback tag)")
	assert.ElementsMatch(t, direct, list(lb.Host), "the same list through lifeboat")
	sigs := list(lb.Host, remote.WithFilter("artifactType", "application/vnd.dev.cosign.artifact.sig.v1+json"))
	require.Len(t, sigs, 1)

	require.NoError(t, up.cmd.Process.Kill())
	_ = up.cmd.Wait()
	assert.ElementsMatch(t, direct, list(lb.Host), "the same list with the registry gone")
}
