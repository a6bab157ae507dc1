package proxy

import (
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/credentials"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	privateRegistry = "private.test"
	publicRegistry  = "public.test"
)

// privateEnv is a private upstream (a token service that wants alice's
// password) and a public one beside it, both with credentials in lifeboat's
// docker config, behind one proxy.
type privateEnv struct {
	private, public *upstreamtest.Upstream
	img             v1.Image
	store           *cache.Store
	p               *Proxy
	reg             *prometheus.Registry
}

func newPrivateEnv(t *testing.T, policy PrivateContent, outage PrivateOutage) *privateEnv {
	t.Helper()
	e := &privateEnv{private: upstreamtest.Start(t), public: upstreamtest.Start(t), img: upstreamtest.RandomImage(t, 1024, 2)}
	e.private.Push(t, "team/app:v1", e.img)
	e.private.RequireToken("alice", "s3cret")
	e.public.Push(t, "team/app:v1", e.img)
	k, err := credentials.New(credentials.Options{DockerConfig: writeDockerConfig(t, `{"auths":{
		"`+privateRegistry+`":{"username":"alice","password":"s3cret"},
		"`+publicRegistry+`":{"username":"alice","password":"s3cret"}}}`)})
	require.NoError(t, err)
	store, err := cache.Open(t.TempDir(), cache.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	e.store, e.reg = store, prometheus.NewPedanticRegistry()
	var ups []Upstream
	for _, u := range []struct {
		name string
		up   *upstreamtest.Upstream
	}{{privateRegistry, e.private}, {publicRegistry, e.public}} {
		c, err := upstream.New(upstream.Config{
			Name: u.name, URL: u.up.URL,
			Timeouts: answeringTimeouts, // no hang here: an outage is a 503
			Breaker:  upstream.BreakerConfig{Failures: 1000},
		}, upstream.Options{Keychain: k})
		require.NoError(t, err)
		ups = append(ups, Upstream{Client: c, PrivateContent: policy, PrivateDuringOutage: outage})
	}
	e.p, err = New(store, Options{Upstreams: ups, Registerer: e.reg})
	require.NoError(t, err)
	t.Cleanup(e.p.Close)
	return e
}

func (e *privateEnv) answers(registry, answer string) float64 {
	return testutil.ToFloat64(e.p.private.answers.WithLabelValues(registry, answer))
}

// cachedByLifeboat waits until lifeboat's own copy of the tag is stored.
func (e *privateEnv) cachedByLifeboat(t *testing.T) {
	t.Helper()
	want, err := e.img.Digest()
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		tag, err := e.store.GetTag(cache.TagKey{Registry: privateRegistry, Repo: "team/app", Tag: "v1"})
		return err == nil && tag.Digest.String() == want.String()
	}, 10*time.Second, 10*time.Millisecond, "lifeboat refreshes its own copy in the background")
}

// TestVerifySendsPrivateManifestsToTheRegistry: under verify, a private
// repository's tag, manifest and tag list are answered ErrPrivateVerify
// while upstream is up, and lifeboat keeps its own copy; its blobs are
// served; a public repository is served as ever.
func TestVerifySendsPrivateManifestsToTheRegistry(t *testing.T) {
	t.Parallel()
	e := newPrivateEnv(t, PrivateVerify, OutageServe)
	ctx := t.Context()

	_, err := e.p.Manifest(ctx, privateRegistry, "team/app", "v1")
	require.ErrorIs(t, err, ErrPrivateVerify)
	rec, err := e.store.GetRepoAccess(privateRegistry, "team/app")
	require.NoError(t, err)
	assert.True(t, rec.Private, "upstream refused an anonymous client")
	e.cachedByLifeboat(t)

	heads := e.private.Requests("HEAD manifests")
	_, err = e.p.Manifest(ctx, privateRegistry, "team/app", "v1")
	require.ErrorIs(t, err, ErrPrivateVerify, "known private: still the registry's to answer")
	assert.Equal(t, heads+1, e.private.Requests("HEAD manifests"), "one HEAD, with lifeboat's credentials, says upstream is up")
	d, err := e.img.Digest()
	require.NoError(t, err)
	_, err = e.p.Manifest(ctx, privateRegistry, "team/app", d.String())
	require.ErrorIs(t, err, ErrPrivateVerify, "by digest too")
	_, _, err = e.p.Tags(ctx, privateRegistry, "team/app")
	require.ErrorIs(t, err, ErrPrivateVerify, "and the tag list")
	_, err = e.p.Referrers(ctx, privateRegistry, "team/app", digest.Digest(d.String()))
	require.ErrorIs(t, err, ErrPrivateVerify, "and the referrers of a private manifest")
	assert.InDelta(t, 5, e.answers(privateRegistry, "verify"), 0)

	layers, err := e.img.Layers()
	require.NoError(t, err)
	ld, err := layers[0].Digest()
	require.NoError(t, err)
	b, err := e.p.Blob(ctx, privateRegistry, "team/app", digest.Digest(ld.String()), true)
	require.NoError(t, err, "blobs by digest are served")
	b.Content.Close()

	m, err := e.p.Manifest(ForCache(ctx), privateRegistry, "team/app", "v1")
	require.NoError(t, err, "lifeboat's own fetches (prefetch) are not a client's")
	assert.Equal(t, d.String(), m.Digest.String())

	m, err = e.p.Manifest(ctx, publicRegistry, "team/app", "v1")
	require.NoError(t, err, "a public repository is served")
	assert.Equal(t, Miss, m.Source)
	rec, err = e.store.GetRepoAccess(publicRegistry, "team/app")
	require.NoError(t, err)
	assert.False(t, rec.Private)

	imgs, err := e.store.Images()
	require.NoError(t, err)
	require.Len(t, imgs, 1, "one image, tagged in both registries")
	assert.True(t, imgs[0].Private, "ls shows it private")
}

// TestPrivateDuringOutage: under verify, in an outage the cached copy is
// served (serve) or refused (deny); either way counted.
func TestPrivateDuringOutage(t *testing.T) {
	t.Parallel()
	for _, outage := range []PrivateOutage{OutageServe, OutageDeny} {
		t.Run(string(outage), func(t *testing.T) {
			t.Parallel()
			e := newPrivateEnv(t, PrivateVerify, outage)
			_, err := e.p.Manifest(t.Context(), privateRegistry, "team/app", "v1")
			require.ErrorIs(t, err, ErrPrivateVerify)
			e.cachedByLifeboat(t)
			d, err := e.img.Digest()
			require.NoError(t, err)

			e.private.SetMode(upstreamtest.Status503)
			m, err := e.p.Manifest(t.Context(), privateRegistry, "team/app", "v1")
			m2, err2 := e.p.Manifest(t.Context(), privateRegistry, "team/app", d.String())
			if outage == OutageDeny {
				require.ErrorIs(t, err, ErrPrivateOutage)
				require.ErrorIs(t, err2, ErrPrivateOutage)
				assert.InDelta(t, 2, e.answers(privateRegistry, "outage-denied"), 0)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, Stale, m.Source)
			assert.Equal(t, d.String(), m.Digest.String())
			require.NoError(t, err2)
			assert.Equal(t, Hit, m2.Source)
			assert.InDelta(t, 2, e.answers(privateRegistry, "outage-served"), 0)

			_, err = e.p.Manifest(t.Context(), privateRegistry, "team/app", "never-cached")
			var ue *upstream.Error
			require.ErrorAs(t, err, &ue, "nothing cached: the outage as it is")
			assert.True(t, ue.Unavailable())
		})
	}
}

// TestSharedServesPrivateAndRecordsIt: shared serves a private repository
// to any client, and records it private for ls.
func TestSharedServesPrivateAndRecordsIt(t *testing.T) {
	t.Parallel()
	e := newPrivateEnv(t, PrivateShared, OutageServe)
	m, err := e.p.Manifest(t.Context(), privateRegistry, "team/app", "v1")
	require.NoError(t, err)
	assert.Equal(t, Miss, m.Source)
	require.Eventually(t, func() bool {
		rec, err := e.store.GetRepoAccess(privateRegistry, "team/app")
		return err == nil && rec.Private
	}, 10*time.Second, 10*time.Millisecond, "checked in the background")
	checks := testutil.ToFloat64(e.p.private.checks.WithLabelValues(privateRegistry, "private"))
	_, err = e.p.Manifest(t.Context(), privateRegistry, "team/app", "v1")
	require.NoError(t, err)
	assert.InDelta(t, checks, testutil.ToFloat64(e.p.private.checks.WithLabelValues(privateRegistry, "private")), 0, "checked once an hour, not per request")
}

// TestVerifyChecksATagListsRepositoryFirst: the tag list of a private
// repository nobody asked a manifest of is not given out under verify: the
// repository is checked first.
func TestVerifyChecksATagListsRepositoryFirst(t *testing.T) {
	t.Parallel()
	e := newPrivateEnv(t, PrivateVerify, OutageServe)
	_, _, err := e.p.Tags(t.Context(), privateRegistry, "team/app")
	require.ErrorIs(t, err, ErrPrivateVerify)
	rec, err := e.store.GetRepoAccess(privateRegistry, "team/app")
	require.NoError(t, err)
	assert.True(t, rec.Private, "checked and recorded")

	tags, _, err := e.p.Tags(t.Context(), publicRegistry, "team/app")
	require.NoError(t, err, "a public repository's list is given out")
	assert.Equal(t, []string{"v1"}, tags)
}
