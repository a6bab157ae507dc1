package upstream

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testKeychain answers user:pass, or err, and moves its generation when
// told: what credentials.Keychain does when a docker config is rotated.
type testKeychain struct {
	user, pass atomic.Value
	err        atomic.Value
	gen        atomic.Uint64
	resolves   atomic.Int32
}

func (k *testKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), nil)
}

func (k *testKeychain) ResolveContext(context.Context, authn.Resource) (authn.Authenticator, error) {
	k.resolves.Add(1)
	if err, _ := k.err.Load().(error); err != nil {
		return nil, err
	}
	return authn.FromConfig(authn.AuthConfig{Username: k.user.Load().(string), Password: k.pass.Load().(string)}), nil
}

func (k *testKeychain) Generation() uint64 { return k.gen.Load() }

// TestCredentialChanges: a keychain that cannot answer is auth-unavailable
// (served stale above); a new generation of credentials, or upstream
// refusing the ones in use, makes the next call resolve them again.
func TestCredentialChanges(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	img := upstreamtest.RandomImage(t, 512, 1)
	up.Push(t, "app:v1", img)
	up.RequireToken("alice", "pw")
	k := &testKeychain{}
	k.user.Store("alice")
	k.pass.Store("pw")
	c, err := New(Config{Name: "upstream.test", URL: up.URL}, Options{Keychain: k})
	require.NoError(t, err)
	ctx := t.Context()

	_, err = c.HeadManifest(ctx, "app", "v1")
	require.NoError(t, err)
	_, err = c.HeadManifest(ctx, "app", "v1")
	require.NoError(t, err)
	assert.Equal(t, int32(1), k.resolves.Load(), "one resolution per repository while nothing changes")

	k.gen.Add(1)
	_, err = c.HeadManifest(ctx, "app", "v1")
	require.NoError(t, err)
	assert.Equal(t, int32(2), k.resolves.Load(), "a new generation: resolved again")

	k.err.Store(errors.New("credential plugin fake: no answer within 5s"))
	k.gen.Add(1)
	_, err = c.HeadManifest(ctx, "app", "v1")
	var ue *Error
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, ReasonAuthUnavailable, ue.Reason)
	assert.True(t, ue.Unavailable(), "cached content may be served stale")
}
