package proxy

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConcurrentManifestMissesShareOneGET: 16 concurrent requests for an
// uncached manifest, by tag and by digest, cost upstream one GET each; every
// client gets the verified bytes.
func TestConcurrentManifestMissesShareOneGET(t *testing.T) {
	t.Parallel()
	for _, byDigest := range []bool{false, true} {
		name := map[bool]string{false: "by tag", true: "by digest"}[byDigest]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			img := upstreamtest.RandomImage(t, 1024, 1)
			e.up.Push(t, "app:v1", img)
			raw, err := img.RawManifest()
			require.NoError(t, err)
			d, err := img.Digest()
			require.NoError(t, err)
			ref := "v1"
			if byDigest {
				ref = d.String()
			}
			gets := e.up.Requests("GET manifests")
			release := e.up.Hold("GET manifests")

			const clients = 16
			answers := make([]*Manifest, clients)
			errs := make([]error, clients)
			var wg sync.WaitGroup
			for i := range clients {
				wg.Go(func() { answers[i], errs[i] = e.p.Manifest(t.Context(), testRegistry, "app", ref) })
			}
			require.Eventually(t, func() bool { return flightWaiters(e.p) == clients && e.up.InFlight("GET manifests") == 1 },
				10*time.Second, 5*time.Millisecond, "all clients wait on one upstream GET")
			release()
			wg.Wait()
			for i := range clients {
				require.NoError(t, errs[i])
				assert.Equal(t, raw, answers[i].Body)
				assert.Equal(t, Miss, answers[i].Source)
			}
			assert.Equal(t, 1, e.up.Requests("GET manifests")-gets, "one upstream GET for %d clients", clients)

			m, err := e.p.Manifest(t.Context(), testRegistry, "app", d.String())
			require.NoError(t, err)
			assert.Equal(t, Hit, m.Source, "the shared fetch was stored")
		})
	}
}

// flightWaiters counts the callers waiting on manifest fetches in progress.
func flightWaiters(p *Proxy) int {
	p.manifests.mu.Lock()
	defer p.manifests.mu.Unlock()
	n := 0
	for _, f := range p.manifests.m {
		n += f.waiters
	}
	return n
}

// TestSharedFetchOutlivesItsFirstClient: the client that started a
// manifest fetch leaves; the fetch goes on, and the next request is a hit.
func TestSharedFetchOutlivesItsFirstClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := upstreamtest.RandomImage(t, 1024, 1)
	e.up.Push(t, "app:v1", img)
	d, err := img.Digest()
	require.NoError(t, err)
	release := e.up.Hold("GET manifests")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() {
		_, err := e.p.Manifest(ctx, testRegistry, "app", d.String())
		done <- err
	}()
	require.Eventually(t, func() bool { return e.up.InFlight("GET manifests") == 1 }, 10*time.Second, 5*time.Millisecond)
	cancel()
	require.Error(t, <-done, "the client that left gets an error")
	release()
	require.Eventually(t, func() bool {
		_, err := e.store.GetManifest(digest.Digest(d.String()))
		return err == nil
	}, 10*time.Second, 5*time.Millisecond, "the fetch finished and stored the manifest without its client")
}
