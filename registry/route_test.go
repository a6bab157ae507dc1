package registry

import (
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParsePath(t *testing.T) {
	t.Parallel()
	const dgst = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	for _, tc := range []struct {
		path    string
		want    route
		wantErr error
	}{
		{path: "/v2/", want: route{kind: kindBase}},
		{path: "/v2", want: route{kind: kindBase}},
		{path: "/v2/library/alpine/manifests/3.20", want: route{kind: kindManifest, name: "library/alpine", ref: "3.20"}},
		{path: "/v2/alpine/manifests/latest", want: route{kind: kindManifest, name: "alpine", ref: "latest"}},
		{path: "/v2/a/b/c/d/manifests/" + dgst, want: route{kind: kindManifest, name: "a/b/c/d", ref: dgst}},
		{path: "/v2/org/manifests/manifests/v1", want: route{kind: kindManifest, name: "org/manifests", ref: "v1"}},
		{path: "/v2/org/blobs/manifests/v1", want: route{kind: kindManifest, name: "org/blobs", ref: "v1"}},
		{path: "/v2/library/alpine/blobs/" + dgst, want: route{kind: kindBlob, name: "library/alpine", ref: dgst}},
		{path: "/v2/library/alpine/tags/list", want: route{kind: kindTags, name: "library/alpine"}},
		{path: "/v2/_catalog", want: route{kind: kindUnsupport}},
		{path: "/v2/library/alpine/blobs/uploads/", want: route{kind: kindUnsupport, name: "library/alpine"}},
		{path: "/v2/library/alpine/blobs/uploads/abc", want: route{kind: kindUnsupport, name: "library/alpine"}},
		{path: "/v2/library/alpine/referrers/" + dgst, want: route{kind: kindReferrers, name: "library/alpine"}},

		{path: "/v2/../etc/manifests/latest", wantErr: errNameInvalid},
		{path: "/v2/a/../b/manifests/latest", wantErr: errNameInvalid},
		{path: "/v2/Library/alpine/manifests/latest", wantErr: errNameInvalid},
		{path: "/v2//alpine/manifests/latest", wantErr: errNameInvalid},
		{path: "/v2/host:5000/alpine/manifests/latest", wantErr: errNameInvalid},
		{path: "/v2/" + strings.Repeat("a", 256) + "/manifests/latest", wantErr: errNameInvalid},
		{path: "/v2/alpine/blobs/sha256:abc", wantErr: errDigestInvalid},
		{path: "/v2/alpine/blobs/latest", wantErr: errDigestInvalid},
		{path: "/v2/alpine/blobs/sha256:../../../../etc/passwd", wantErr: errDigestInvalid},
		{path: "/v2/alpine/manifests/sha256:zz", wantErr: errDigestInvalid},
		{path: "/v2/alpine/manifests/" + strings.Repeat("t", 129), wantErr: errTagInvalid},
		{path: "/v2/alpine/manifests/.hidden", wantErr: errTagInvalid},
		{path: "/v2/alpine/manifests/", wantErr: errTagInvalid},
		{path: "/v2/alpine/unknown/thing", wantErr: errNotFound},
		{path: "/v1/alpine/manifests/latest", wantErr: errNotFound},
		{path: "/", wantErr: errNotFound},
	} {
		t.Run(tc.path[:min(len(tc.path), 60)], func(t *testing.T) {
			got, err := parsePath(tc.path)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func BenchmarkParsePath(b *testing.B) {
	for b.Loop() {
		_, _ = parsePath("/v2/library/alpine/blobs/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
	}
}

// FuzzParsePath: the route parser never panics, and what it accepts names
// a repository of the distribution grammar and a well-formed reference.
func FuzzParsePath(f *testing.F) {
	const dgst = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	for _, p := range []string{
		"/v2/", "/v2/library/alpine/manifests/3.20", "/v2/a/b/blobs/" + dgst, "/v2/a/tags/list",
		"/v2/a/blobs/uploads/x", "/v2/a/referrers/" + dgst, "/v2/_catalog", "/v2/../etc/manifests/latest",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		rt, err := parsePath(p)
		if err != nil {
			require.Equal(t, route{}, rt)
			return
		}
		switch rt.kind {
		case kindBase:
			require.Equal(t, route{kind: kindBase}, rt)
			return
		case kindUnsupport:
			if rt.name == "" {
				require.Equal(t, "/v2/_catalog", p)
				return
			}
		case kindManifest, kindBlob, kindTags, kindReferrers:
		default:
			t.Fatalf("unknown kind %q", rt.kind)
		}
		require.LessOrEqual(t, len(rt.name), reference.RepositoryNameTotalLengthMax)
		require.True(t, repositoryPath.MatchString(rt.name), "%q", rt.name)
		named, err := reference.WithName(rt.name)
		require.NoError(t, err, "the distribution grammar accepts the name")
		require.NotContains(t, strings.Split(rt.name, "/"), "..")
		switch rt.kind {
		case kindBlob:
			_, err := digest.Parse(rt.ref)
			require.NoError(t, err)
		case kindManifest:
			if _, derr := digest.Parse(rt.ref); derr != nil {
				_, err := reference.WithTag(named, rt.ref)
				require.NoError(t, err, "a manifest reference is a digest or a tag")
			}
		}
	})
}
