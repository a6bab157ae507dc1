package integration

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
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
	subject := pushWithArtifacts(t, host+"/signed/app:v1", "application/vnd.example.sbom.v1", "application/vnd.dev.cosign.artifact.sig.v1+json")
	d := subject.Digest

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
