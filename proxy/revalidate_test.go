package proxy

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// revalidationWaiters is how many requests share the tag's HEAD in flight.
func revalidationWaiters(rv *revalidations, key string) int {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if r := rv.m[key]; r != nil {
		return r.waiters
	}
	return 0
}

// TestRequestsJoinTheRevalidationInFlight: requests for a tag that arrive
// while its HEAD is in flight are answered by that HEAD, not by one sent
// after it (which cost them up to two upstream round trips); the
// confirmation is recorded once that HEAD has answered them.
func TestRequestsJoinTheRevalidationInFlight(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newBubbleEnv(t)
		img := upstreamtest.RandomImage(t, 1024, 1)
		e.up.Push(t, "app:v1", img)
		pullAll(t, e.p, img, "v1")
		key := cache.TagKey{Registry: testRegistry, Repo: "app", Tag: "v1"}
		before, err := e.p.store.GetTag(key)
		require.NoError(t, err)
		heads := e.up.Requests("HEAD manifests")
		time.Sleep(time.Minute) // the revalidation's confirmation is a minute later

		release := e.up.Hold("HEAD manifests")
		defer release()
		const clients = 8
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				m, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
				if assert.NoError(t, err) {
					assert.Equal(t, Hit, m.Source)
				}
			})
		}
		synctest.Wait()
		require.True(t, revalidationWaiters(&e.p.revalidations, key.String()) == clients && e.up.InFlight("HEAD manifests") == 1,
			"every request waits on the one HEAD in flight")
		release()
		wg.Wait()
		assert.Equal(t, heads+1, e.up.Requests("HEAD manifests"), "one HEAD for every request that arrived while it was in flight")
		synctest.Wait()
		after, err := e.p.store.GetTag(key)
		require.NoError(t, err)
		assert.Equal(t, before.Confirmed.Add(time.Minute), after.Confirmed, "the confirmation is recorded after the answers")
	})
}
