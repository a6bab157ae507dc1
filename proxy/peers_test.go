package proxy

import (
	"testing"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Under verify, a private repository's tags and manifests are not given to
// other nodes (their clients could not show credentials for it); a public
// one's are.
func TestPrivateRepositoriesAreNotSharedWithPeers(t *testing.T) {
	t.Parallel()
	e := newPrivateEnv(t, PrivateVerify, OutageServe)
	_, err := e.p.Manifest(t.Context(), privateRegistry, "team/app", "v1")
	require.ErrorIs(t, err, ErrPrivateVerify)
	e.cachedByLifeboat(t)
	assert.False(t, ForPeers(e.p).SharedWithPeers(privateRegistry, "team/app"))
	_, _, err = ForPeers(e.p).CachedTag(privateRegistry, "team/app", "v1")
	assert.ErrorIs(t, err, cache.ErrNotFound, "the tag is cached, and not a peer's")

	_, err = e.p.Manifest(t.Context(), publicRegistry, "team/app", "v1")
	require.NoError(t, err)
	assert.True(t, ForPeers(e.p).SharedWithPeers(publicRegistry, "team/app"))
	m, _, err := ForPeers(e.p).CachedTag(publicRegistry, "team/app", "v1")
	require.NoError(t, err)
	assert.NotEmpty(t, m.Body)
	assert.False(t, ForPeers(e.p).SharedWithPeers(publicRegistry, "never/seen"), "not known to be public: not shared under verify")

	shared := newPrivateEnv(t, PrivateShared, OutageServe)
	assert.True(t, ForPeers(shared.p).SharedWithPeers(privateRegistry, "team/app"), "privateContent shared: shared with peers too")
}
