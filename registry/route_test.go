package registry

import (
	"net/textproto"
	"regexp"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testMirrored is the set of mirrored registries the route tests parse
// against: parsePath only asks whether a name is in it.
func testMirrored(registry string) bool {
	switch registry {
	case "docker.io", "registry.k8s.io", "localhost:5001", "registry.internal":
		return true
	}
	return false
}

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
		{path: "/v2/library/alpine/referrers/" + dgst, want: route{kind: kindReferrers, name: "library/alpine", ref: dgst}},
		{path: "/v2/library/alpine/referrers/latest", wantErr: errDigestInvalid},

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
			got, err := parsePath(tc.path, testMirrored)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestParsePathPrefix: the registry a path's first component names (CRI-O's
// mirror locations), the rule for names that only look like one, and the
// host:port encoding. See splitPrefix.
func TestParsePathPrefix(t *testing.T) {
	t.Parallel()
	const dgst = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	for _, tc := range []struct {
		what     string
		path     string
		mirrored func(string) bool // nil: the request has ns=
		want     route
		wantErr  error
	}{
		{what: "a mirrored registry", path: "/v2/docker.io/library/alpine/manifests/3.20", mirrored: testMirrored,
			want: route{kind: kindManifest, registry: "docker.io", prefix: "docker.io", name: "library/alpine", ref: "3.20"}},
		{what: "one component after the prefix", path: "/v2/registry.k8s.io/pause/blobs/" + dgst, mirrored: testMirrored,
			want: route{kind: kindBlob, registry: "registry.k8s.io", prefix: "registry.k8s.io", name: "pause", ref: dgst}},
		{what: "docker.io short name, expanded upstream as ever", path: "/v2/docker.io/alpine/tags/list", mirrored: testMirrored,
			want: route{kind: kindTags, registry: "docker.io", prefix: "docker.io", name: "alpine"}},
		{what: "host:port written host_port", path: "/v2/localhost_5001/app/manifests/v1", mirrored: testMirrored,
			want: route{kind: kindManifest, registry: "localhost:5001", prefix: "localhost_5001", name: "app", ref: "v1"}},
		{what: "host:port verbatim (not a reference, but a raw path may say it)", path: "/v2/localhost:5001/team/app/manifests/v1", mirrored: testMirrored,
			want: route{kind: kindManifest, registry: "localhost:5001", prefix: "localhost:5001", name: "team/app", ref: "v1"}},
		{what: "only one prefix comes off", path: "/v2/registry.internal/docker.io/library/alpine/manifests/v1", mirrored: testMirrored,
			want: route{kind: kindManifest, registry: "registry.internal", prefix: "registry.internal", name: "docker.io/library/alpine", ref: "v1"}},
		{what: "the same prefix twice", path: "/v2/docker.io/docker.io/app/manifests/v1", mirrored: testMirrored,
			want: route{kind: kindManifest, registry: "docker.io", prefix: "docker.io", name: "docker.io/app", ref: "v1"}},
		{what: "uploads under a prefix are still refused", path: "/v2/docker.io/library/alpine/blobs/uploads/", mirrored: testMirrored,
			want: route{kind: kindUnsupport, registry: "docker.io", prefix: "docker.io", name: "library/alpine"}},

		// What only looks like a prefix is part of the repository, at
		// ns= or the default registry, exactly as before.
		{what: "ns= given: the path is the repository", path: "/v2/docker.io/library/alpine/manifests/v1",
			want: route{kind: kindManifest, name: "docker.io/library/alpine", ref: "v1"}},
		{what: "a registry name alone is a repository name", path: "/v2/docker.io/manifests/v1", mirrored: testMirrored,
			want: route{kind: kindManifest, name: "docker.io", ref: "v1"}},
		{what: "an unknown registry is never opened", path: "/v2/evil.example.com/library/alpine/manifests/v1", mirrored: testMirrored,
			want: route{kind: kindManifest, name: "evil.example.com/library/alpine", ref: "v1"}},
		{what: "an unknown port", path: "/v2/localhost_5002/app/manifests/v1", mirrored: testMirrored,
			want: route{kind: kindManifest, name: "localhost_5002/app", ref: "v1"}},
		{what: "not a port after the underscore", path: "/v2/localhost_abc/app/manifests/v1", mirrored: testMirrored,
			want: route{kind: kindManifest, name: "localhost_abc/app", ref: "v1"}},
		{what: "registry names are case-sensitive", path: "/v2/Docker.io/library/alpine/manifests/v1", mirrored: testMirrored,
			wantErr: errNameInvalid},
		{what: "an unknown host:port is not a repository either", path: "/v2/localhost:5002/app/manifests/v1", mirrored: testMirrored,
			wantErr: errNameInvalid},
		{what: "host:port with ns= is not a repository", path: "/v2/localhost:5001/app/manifests/v1",
			wantErr: errNameInvalid},
		{what: "the rest is checked like any name", path: "/v2/docker.io/../etc/manifests/v1", mirrored: testMirrored,
			wantErr: errNameInvalid},
		{what: "an empty rest", path: "/v2/docker.io//manifests/v1", mirrored: testMirrored,
			wantErr: errNameInvalid},
		{what: "a bad tag under a prefix", path: "/v2/docker.io/alpine/manifests/.x", mirrored: testMirrored,
			wantErr: errTagInvalid},
	} {
		t.Run(tc.what, func(t *testing.T) {
			got, err := parsePath(tc.path, tc.mirrored)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, strings.TrimPrefix(tc.path, "/v2/")[:len(got.requested())], got.requested(), "requested is the name as the path spells it")
		})
	}
}

func BenchmarkParsePath(b *testing.B) {
	for b.Loop() {
		_, _ = parsePath("/v2/library/alpine/blobs/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", testMirrored)
	}
}

func BenchmarkParsePathPrefix(b *testing.B) {
	for b.Loop() {
		_, _ = parsePath("/v2/docker.io/library/alpine/blobs/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", testMirrored)
	}
}

// FuzzParsePath: the route parser never panics, and what it accepts names
// a repository of the distribution grammar and a well-formed reference; a
// registry it takes from the path is a mirrored one, spelled by the path's
// first component, and never taken when the request had ns=.
func FuzzParsePath(f *testing.F) {
	const dgst = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	for _, p := range []string{
		"/v2/", "/v2/library/alpine/manifests/3.20", "/v2/a/b/blobs/" + dgst, "/v2/a/tags/list",
		"/v2/a/blobs/uploads/x", "/v2/a/referrers/" + dgst, "/v2/_catalog", "/v2/../etc/manifests/latest",
		"/v2/docker.io/library/alpine/manifests/3.20", "/v2/localhost_5001/app/blobs/" + dgst,
		"/v2/localhost:5001/app/tags/list", "/v2/registry.internal/docker.io/a/manifests/v1", "/v2/docker.io/manifests/v1",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		withNS, nsErr := parsePath(p, nil)
		if nsErr == nil {
			require.Empty(t, withNS.registry, "with ns=, no registry comes from the path")
			require.Empty(t, withNS.prefix)
		}
		rt, err := parsePath(p, testMirrored)
		if err != nil {
			require.Equal(t, route{}, rt)
			return
		}
		if rt.registry != "" {
			require.True(t, testMirrored(rt.registry), "%q is mirrored", rt.registry)
			require.True(t, rt.prefix == rt.registry || rt.prefix == strings.Replace(rt.registry, ":", "_", 1), "%q spells %q", rt.prefix, rt.registry)
			require.True(t, strings.HasPrefix(p, "/v2/"+rt.prefix+"/"+rt.name+"/"), "%q", p)
		} else {
			require.Empty(t, rt.prefix)
			require.Equal(t, withNS, rt, "without a mirrored prefix, the path parses as it does with ns=")
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
		require.True(t, grammarName.MatchString(rt.name), "%q", rt.name)
		named, err := reference.WithName(rt.name)
		require.NoError(t, err, "the distribution grammar accepts the name")
		require.NotContains(t, strings.Split(rt.name, "/"), "..")
		switch rt.kind {
		case kindBlob, kindReferrers:
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

// The distribution grammar as regular expressions (github.com/distribution/
// reference's, anchored, without a registry host): the oracle the hand-
// written validators are held to.
var (
	grammarName = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)
	grammarTag  = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)
)

// FuzzNameGrammar: the hand-written name, tag and digest checks accept
// exactly what the grammar of github.com/distribution/reference (its
// regular expressions, the 255-byte bound on a whole repository name) and
// go-digest accept.
func FuzzNameGrammar(f *testing.F) {
	for _, s := range []string{
		"library/alpine", "a", "a/b/c", "a.b", "a_b", "a__b", "a___b", "a--b", "a-.b", "a._b", "A", "a/",
		"/a", "a//b", "..", "a/../b", "-a", "a-", "sha256:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("A", 64),
		"sha512:" + strings.Repeat("0", 128), "v1.2.3", "_x", ".x", "x" + strings.Repeat("y", 127), strings.Repeat("a", 256),
		"a/" + strings.Repeat("a", 254),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// reference.WithName bounds only the path after what it takes for
		// a domain ("a/" + 254 bytes passes); a repository path here has
		// no domain, and the whole of it is bounded, as distribution
		// bounds a repository name.
		_, werr := reference.WithName(s)
		want := len(s) <= reference.RepositoryNameTotalLengthMax && grammarName.MatchString(s)
		if want {
			require.NoError(t, werr, "reference.WithName accepts %q", s)
		}
		require.Equal(t, want, validRepositoryPath(s), "name %q", s)
		require.Equal(t, want, validateName(s) == nil, "name %q", s)

		named, _ := reference.WithName("a")
		_, terr := reference.WithTag(named, s)
		require.Equal(t, terr == nil && grammarTag.MatchString(s), validTag(s), "tag %q", s)

		_, derr := digest.Parse(s)
		require.Equal(t, derr == nil, parseDigest(s) == nil, "digest %q", s)
	})
}

func TestNameGrammar(t *testing.T) {
	for name, ok := range map[string]bool{
		"library/alpine": true, "a": true, "a.b/c_d/e__f/g---h": true, strings.Repeat("a", 255): true,
		strings.Repeat("a", 256): false, "a/" + strings.Repeat("a", 254): false, "a___b": false, "a._b": false, "a-.b": false, "a/": false, "/a": false,
		"a//b": false, "a/../b": false, "A": false, "a:b": false, "-a": false, "a-": false, "": false,
	} {
		assert.Equal(t, ok, validRepositoryPath(name), "%q", name)
	}
	for tag, ok := range map[string]bool{
		"latest": true, "_x": true, "V1.2-rc_3": true, "x" + strings.Repeat("y", 127): true,
		"x" + strings.Repeat("y", 128): false, ".x": false, "-x": false, "": false, "a:b": false, "a/b": false,
	} {
		assert.Equal(t, ok, validTag(tag), "%q", tag)
	}
}

// The header keys assigned straight to the map are in canonical form (or
// a client's Header.Get would not find them).
func TestAssignedHeaderKeysAreCanonical(t *testing.T) {
	for _, k := range []string{"Docker-Distribution-Api-Version", "Content-Type", "Docker-Content-Digest", "Etag", CacheHeader, "Accept-Ranges", "Content-Length"} {
		assert.Equal(t, textproto.CanonicalMIMEHeaderKey(k), k)
	}
}
