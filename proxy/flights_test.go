package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"
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
			synctest.Test(t, func(t *testing.T) {
				e := newBubbleEnv(t)
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
				synctest.Wait()
				require.True(t, flightWaiters(e.p) == clients && e.up.InFlight("GET manifests") == 1, "all clients wait on one upstream GET")
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
		})
	}
}

// flightWaiters counts the callers waiting on manifest fetches in progress.
func flightWaiters(p *Proxy) int { return waiters(&p.manifests) }

// waiters counts the callers waiting on the calls in progress of fl.
func waiters[T any](fl *flights[T]) int {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	n := 0
	for _, f := range fl.m {
		n += f.waiters
	}
	return n
}

// TestSharedFetchOutlivesItsFirstClient: the client that started a
// manifest fetch leaves; the fetch goes on, and the next request is a hit.
func TestSharedFetchOutlivesItsFirstClient(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newBubbleEnv(t)
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
		synctest.Wait()
		require.Equal(t, 1, e.up.InFlight("GET manifests"))
		cancel()
		require.Error(t, <-done, "the client that left gets an error")
		release()
		synctest.Wait()
		_, err = e.store.GetManifest(digest.Digest(d.String()))
		require.NoError(t, err, "the fetch finished and stored the manifest without its client")
	})
}

// putManifest PUTs body as repo:ref on the upstream (much faster than a
// push, which uploads the blobs again).
func putManifest(t *testing.T, up *upstreamtest.Upstream, repo, ref, mediaType string, body []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, up.URL+"/v2/"+repo+"/manifests/"+ref, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", mediaType)
	resp, err := up.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
}

// burst makes n concurrent calls while upstream holds requests of key;
// once every goroutine of the bubble waits, ready must say the calls are
// all where they should be; then upstream answers and every call ends. In
// a synctest bubble: however long a busy machine takes to start 500
// calls, no budget runs out meanwhile (their clock stands still).
func burst(t *testing.T, up *upstreamtest.Upstream, key string, n int, ready func() bool, why string, call func(i int)) {
	t.Helper()
	release := up.Hold(key)
	defer release()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { call(i) })
	}
	synctest.Wait()
	require.True(t, ready(), why)
	release()
	wg.Wait()
}

// TestBlobHeadsAreBoundedAndCoalesced: 500 concurrent HEADs of distinct
// uncached blobs used to open 500 upstream requests at once (only blob
// GETs took a slot). Now at most MaxConcurrentRequests (32) are in flight,
// the rest wait their turn within their budget, and every one is
// answered. 50 concurrent HEADs of one blob cost one upstream HEAD.
func TestBlobHeadsAreBoundedAndCoalesced(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		n := upstreamtest.NewNetwork()
		up := upstreamtest.StartOn(t, n)
		e := newTunedEnvOn(t, n, up, up.URL, upstream.Timeouts{Request: 30 * time.Second}, nil)
		const blobs, clients, size = 500, 50, 64
		ds := pushBlobs(t, up, "app", blobs+1, size)
		sizes := make([]int64, blobs)
		errs := make([]error, blobs)
		check := func(n int) {
			for i := range n {
				require.NoError(t, errs[i], "every HEAD is answered")
				assert.Equal(t, int64(size), sizes[i])
			}
		}

		burst(t, up, "HEAD blobs", blobs, func() bool { return up.InFlight("HEAD blobs") == DefaultMaxConcurrentRequests },
			"the first HEADs take every request slot",
			func(i int) { sizes[i], _, errs[i] = e.p.BlobHead(t.Context(), testRegistry, "app", ds[i]) })
		check(blobs)
		assert.Equal(t, blobs, up.Requests("HEAD blobs"))
		assert.LessOrEqual(t, up.Peak("HEAD blobs"), DefaultMaxConcurrentRequests, "never more upstream HEADs at once than the bound")
		t.Logf("%d concurrent blob HEADs: at most %d upstream at once", blobs, up.Peak("HEAD blobs"))

		burst(t, up, "HEAD blobs", clients, func() bool { return waiters(&e.p.blobHeads) == clients && up.InFlight("HEAD blobs") == 1 },
			"all clients wait on one upstream HEAD",
			func(i int) { sizes[i], _, errs[i] = e.p.BlobHead(t.Context(), testRegistry, "app", ds[blobs]) })
		check(clients)
		assert.Equal(t, blobs+1, up.Requests("HEAD blobs"), "one upstream HEAD for %d clients", clients)
	})
}

// TestManifestMissesAreBoundedUnderLoad: 500 concurrent misses of distinct
// tags used to open 500 upstream GETs at once; now at most 32, all
// answered. 50 concurrent misses of one tag cost one GET.
func TestManifestMissesAreBoundedUnderLoad(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		n := upstreamtest.NewNetwork()
		up := upstreamtest.StartOn(t, n)
		e := newTunedEnvOn(t, n, up, up.URL, upstream.Timeouts{Request: 30 * time.Second}, nil)
		img := upstreamtest.RandomImage(t, 256, 1)
		up.Push(t, "app:v0", img)
		raw, err := img.RawManifest()
		require.NoError(t, err)
		mt, err := img.MediaType()
		require.NoError(t, err)
		d, err := img.Digest()
		require.NoError(t, err)
		const tags, clients = 500, 50
		for i := range tags + 1 {
			putManifest(t, up, "app", fmt.Sprint("t", i), string(mt), raw)
		}
		answers := make([]*Manifest, tags)
		errs := make([]error, tags)
		check := func(n int) {
			for i := range n {
				require.NoError(t, errs[i], "every miss is answered")
				assert.Equal(t, d.String(), answers[i].Digest.String())
				assert.Equal(t, Miss, answers[i].Source)
			}
		}
		gets := up.Requests("GET manifests")

		burst(t, up, "GET manifests", tags, func() bool { return up.InFlight("GET manifests") == DefaultMaxConcurrentRequests },
			"the first GETs take every request slot",
			func(i int) { answers[i], errs[i] = e.p.Manifest(t.Context(), testRegistry, "app", fmt.Sprint("t", i)) })
		check(tags)
		assert.Equal(t, tags, up.Requests("GET manifests")-gets)
		assert.LessOrEqual(t, up.Peak("GET manifests"), DefaultMaxConcurrentRequests, "never more upstream GETs at once than the bound")
		t.Logf("%d concurrent manifest misses: at most %d upstream at once", tags, up.Peak("GET manifests"))

		gets = up.Requests("GET manifests")
		burst(t, up, "GET manifests", clients, func() bool { return flightWaiters(e.p) == clients && up.InFlight("GET manifests") == 1 },
			"all clients wait on one upstream GET",
			func(i int) {
				answers[i], errs[i] = e.p.Manifest(t.Context(), testRegistry, "app", fmt.Sprint("t", tags))
			})
		check(clients)
		assert.Equal(t, 1, up.Requests("GET manifests")-gets, "one upstream GET for %d clients of one uncached tag", clients)
	})
}

// TestRequestSlotWaitIsBounded: with the registry's request slots taken
// (here by the test itself), a blob HEAD or a manifest miss waits exactly
// its budget and is answered unavailable (ErrBusy), and a cached tag whose
// revalidation cannot get a slot within its budget is served stale.
func TestRequestSlotWaitIsBounded(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		n := upstreamtest.NewNetwork()
		up := upstreamtest.StartOn(t, n)
		timeouts := upstream.Timeouts{Revalidate: 500 * time.Millisecond, Request: 2 * time.Second}
		e := newTunedEnvOn(t, n, up, up.URL, timeouts, func(o *Options) { o.Upstreams[0].MaxConcurrentRequests = 1 })
		img := upstreamtest.RandomImage(t, 256, 1)
		up.Push(t, "app:v1", img)
		_, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
		require.NoError(t, err)
		d := pushBlobs(t, up, "app", 1, 64)[0]
		up.Push(t, "app:v2", upstreamtest.RandomImage(t, 256, 1))
		requests := func() int {
			return up.Requests("HEAD blobs") + up.Requests("GET manifests") + up.Requests("HEAD manifests")
		}
		before := requests()

		leave, err := e.p.requestSlot(t.Context(), e.p.mirrors[testRegistry], "the test")
		require.NoError(t, err)

		start := time.Now()
		_, _, err = e.p.BlobHead(t.Context(), testRegistry, "app", d)
		require.ErrorIs(t, err, ErrBusy, "a blob HEAD without a slot")
		assert.Equal(t, timeouts.Request, time.Since(start), "after its request budget")
		var ue *upstream.Error
		require.ErrorAs(t, err, &ue)
		assert.True(t, ue.Unavailable(), "answered 503: containerd goes to the registry itself")

		start = time.Now()
		_, err = e.p.Manifest(t.Context(), testRegistry, "app", "v2")
		require.ErrorIs(t, err, ErrBusy, "a manifest miss without a slot")
		assert.Equal(t, timeouts.Request, time.Since(start), "after its request budget")

		start = time.Now()
		m, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
		require.NoError(t, err)
		assert.Equal(t, Stale, m.Source, "a revalidation without a slot serves the cached tag stale")
		assert.Equal(t, timeouts.Revalidate, time.Since(start), "after its revalidation budget")
		assert.Equal(t, 3.0, testutil.ToFloat64(e.p.metrics.busy.WithLabelValues(testRegistry, "request")))
		assert.Equal(t, before, requests(), "nothing reached upstream")

		leave()
		size, _, err := e.p.BlobHead(t.Context(), testRegistry, "app", d)
		require.NoError(t, err, "a free slot serves again")
		assert.Equal(t, int64(64), size)
	})
}
