package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newTunedEnv is newEnv with the proxy reaching upstream at url (the env's
// upstream, or a fault-injecting front of it), with timeouts and options
// of the test's choosing.
func newTunedEnv(t *testing.T, up *upstreamtest.Upstream, url string, timeouts upstream.Timeouts, tune func(*Options)) *env {
	t.Helper()
	return newTunedEnvOn(t, nil, up, url, timeouts, tune)
}

// newTunedEnvOn is newTunedEnv with the proxy reaching upstream over n
// (nil: loopback), for a test in a synctest bubble.
func newTunedEnvOn(t *testing.T, n *upstreamtest.Network, up *upstreamtest.Upstream, url string, timeouts upstream.Timeouts, tune func(*Options)) *env {
	t.Helper()
	e := &env{up: up, dir: t.TempDir(), reg: prometheus.NewPedanticRegistry(), net: n}
	store, err := cache.Open(e.dir, cache.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	e.store = store
	c, err := upstream.New(upstream.Config{Name: testRegistry, URL: url, Timeouts: timeouts}, e.upstreamOptions())
	require.NoError(t, err)
	opts := Options{Upstreams: []Upstream{{Client: c}}, Registerer: e.reg}
	if tune != nil {
		tune(&opts)
	}
	e.p, err = New(store, opts)
	require.NoError(t, err)
	t.Cleanup(e.p.Close)
	return e
}

// pushBlobs uploads n blobs of size random bytes to repo, one monolithic
// POST each (much faster than pushing an image of n layers).
func pushBlobs(t *testing.T, up *upstreamtest.Upstream, repo string, n, size int) []digest.Digest {
	t.Helper()
	out := make([]digest.Digest, n)
	client := up.Client()
	for i := range out {
		b := make([]byte, size)
		_, _ = rand.Read(b)
		out[i] = digest.FromBytes(b)
		resp, err := client.Post(fmt.Sprintf("%s/v2/%s/blobs/uploads/?digest=%s", up.URL, repo, out[i]), "application/octet-stream", bytes.NewReader(b))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusCreated, resp.StatusCode)
	}
	return out
}

func fillResults(p *Proxy, result string) float64 {
	return testutil.ToFloat64(p.metrics.fills.WithLabelValues(testRegistry, result))
}

// TestAbandonedDownloadsDoNotStarveAWaitingClient is the attack: 200 cold
// blob requests whose clients leave after 0.3s, then one normal cold blob
// (in a bubble: the durations are the bubble's, exact, however busy the
// machine).
// Before, the 184 downloads queued behind the 16 slots kept their places
// with nobody waiting, and the normal blob waited for all of them (13.6s
// here with 256 KiB blobs at 256 KiB/s, 59s in the review with larger
// ones; up to FillTimeout, an hour, with hanging ones). Now queued
// downloads give up with their last client, and a running download with
// no client yields its slot: the normal blob is fetched within its budget
// and upstream saw no more than one GET per slot plus its own.
func TestAbandonedDownloadsDoNotStarveAWaitingClient(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		n := upstreamtest.NewNetwork()
		up := upstreamtest.StartOn(t, n)
		e := newTunedEnvOn(t, n, up, up.URL, upstream.Timeouts{Request: 5 * time.Second, BodyStall: 5 * time.Second}, nil)
		crowd := pushBlobs(t, up, "crowd", 200, 256<<10)
		normal := pushBlobs(t, up, "app", 1, 1<<10)[0]
		up.SetMode(upstreamtest.Slow) // ~1s per crowd blob: they hold their slots

		var wg sync.WaitGroup
		for _, d := range crowd {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
				defer cancel()
				b, err := e.p.Blob(ctx, testRegistry, "crowd", d, true)
				if err != nil {
					return // left while its download waited for a slot
				}
				_, _ = io.Copy(io.Discard, b.Content)
				b.Content.Close()
			})
		}
		wg.Wait()
		require.Eventually(t, func() bool { return testutil.ToFloat64(e.p.metrics.fillsQueued) == 0 },
			10*time.Second, 5*time.Millisecond, "no download waits for a slot once its clients left")

		start := time.Now()
		b, err := e.p.Blob(t.Context(), testRegistry, "app", normal, true)
		require.NoError(t, err, "the normal pull got a slot within its budget")
		body, err := io.ReadAll(b.Content)
		b.Content.Close()
		require.NoError(t, err)
		assert.Equal(t, normal, digest.FromBytes(body))
		waited := time.Since(start)

		// Each crowd download gave up while queued, yielded its slot once its
		// clients were gone, or finished (it was running and blocked nobody).
		ended := func() (abandoned, yielded, ok float64) {
			return fillResults(e.p, "abandoned"), fillResults(e.p, "yielded"), fillResults(e.p, "ok") - 1
		}
		require.Eventually(t, func() bool { a, y, ok := ended(); return a+y+ok == float64(len(crowd)) },
			20*time.Second, 10*time.Millisecond, "every crowd download ended")
		abandoned, yielded, ok := ended()
		t.Logf("normal cold blob served in %s; crowd downloads: %.0f abandoned in the queue, %.0f yielded, %.0f finished; %d upstream GETs",
			waited, abandoned, yielded, ok, up.Requests("GET blobs"))
		assert.Less(t, waited, time.Second, "the normal blob waited behind no crowd download (one takes about a second)")
		assert.Positive(t, abandoned)
		assert.LessOrEqual(t, up.Requests("GET blobs"), len(crowd)-int(abandoned)+1, "a download that gave up in the queue never reached upstream")
	})
}

// TestIdleDownloadYieldsItsSlot: with one slot, a download whose client
// left gives its slot to a download somebody waits for; nothing of it is
// kept and the next request for it fetches it again.
func TestIdleDownloadYieldsItsSlot(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		n := upstreamtest.NewNetwork()
		up := upstreamtest.StartOn(t, n)
		e := newTunedEnvOn(t, n, up, up.URL, upstream.Timeouts{Request: 5 * time.Second}, func(o *Options) { o.Upstreams[0].MaxConcurrentFills = 1 })
		idle := pushBlobs(t, up, "app", 1, 1<<20)[0]
		wanted := pushBlobs(t, up, "app", 1, 16<<10)[0]
		up.SetMode(upstreamtest.Slow) // 1 MiB takes ~4s

		ctx, cancel := context.WithCancel(t.Context())
		b, err := e.p.Blob(ctx, testRegistry, "app", idle, true)
		require.NoError(t, err)
		_, err = io.ReadFull(b.Content, make([]byte, 16<<10))
		require.NoError(t, err)
		cancel()
		b.Content.Close() // its only client left: the download runs on, idle

		b, err = e.p.Blob(t.Context(), testRegistry, "app", wanted, true)
		require.NoError(t, err, "the idle download yielded its slot")
		body, err := io.ReadAll(b.Content)
		b.Content.Close()
		require.NoError(t, err)
		assert.Equal(t, wanted, digest.FromBytes(body))
		assert.Equal(t, 1.0, fillResults(e.p, "yielded"))
		_, err = e.store.Stat(idle)
		assert.ErrorIs(t, err, cache.ErrNotFound, "nothing of the yielded download is kept")

		up.SetMode(upstreamtest.OK)
		b, err = e.p.Blob(t.Context(), testRegistry, "app", idle, true)
		require.NoError(t, err)
		body, err = io.ReadAll(b.Content)
		b.Content.Close()
		require.NoError(t, err)
		assert.Equal(t, idle, digest.FromBytes(body), "the next request fetches it again")
		assert.Equal(t, Miss, b.Source)
	})
}

// TestMissWithoutASlotAnswersBusy: every slot is held by a download its
// client reads; a miss waits exactly its request budget, then is answered
// unavailable (a 503 at the edge) instead of hanging; its queued download
// gives up, and the running one is not disturbed.
func TestMissWithoutASlotAnswersBusy(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const budget = 300 * time.Millisecond
		n := upstreamtest.NewNetwork()
		up := upstreamtest.StartOn(t, n)
		e := newTunedEnvOn(t, n, up, up.URL, upstream.Timeouts{Request: budget}, func(o *Options) { o.Upstreams[0].MaxConcurrentFills = 1 })
		ds := pushBlobs(t, up, "app", 2, 1<<20)
		up.SetMode(upstreamtest.Slow)

		reading, err := e.p.Blob(t.Context(), testRegistry, "app", ds[0], true)
		require.NoError(t, err)
		defer reading.Content.Close()

		start := time.Now()
		_, err = e.p.Blob(t.Context(), testRegistry, "app", ds[1], true)
		require.ErrorIs(t, err, ErrBusy)
		assert.Equal(t, budget, time.Since(start), "answered busy when the request budget ran out")
		var ue *upstream.Error
		require.ErrorAs(t, err, &ue)
		assert.True(t, ue.Unavailable(), "the registry answers 503: containerd goes to the registry itself")
		assert.Equal(t, 1.0, testutil.ToFloat64(e.p.metrics.busy.WithLabelValues(testRegistry, "blob")))
		synctest.Wait()
		assert.Equal(t, 1.0, fillResults(e.p, "abandoned"), "the download nobody waits for any more gave up")

		body, err := io.ReadAll(reading.Content)
		require.NoError(t, err, "the download somebody reads was not disturbed")
		assert.Equal(t, ds[0], digest.FromBytes(body))
		assert.Equal(t, 0.0, fillResults(e.p, "yielded"))
		assert.Equal(t, 1, up.Requests("GET blobs"), "the busy miss never reached upstream")
	})
}

// TestFillSlotsPolicy drives the scheduler alone, in a synctest bubble:
// order of arrival, abandoning, yielding only when someone is queued, and
// one yield per queued download.
func TestFillSlotsPolicy(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := newFillSlots(2, prometheus.NewGauge(prometheus.GaugeOpts{Name: "q"}))
		type download struct {
			f      *fill
			ctx    context.Context
			cancel context.CancelCauseFunc
			got    chan error
		}
		start := func(name string) *download {
			d := &download{f: newFill(digest.FromString(name), testRegistry, "app"), got: make(chan error, 1)}
			d.f.slots = s
			d.f.acquire() // its first client
			d.ctx, d.cancel = context.WithCancelCause(t.Context())
			go func() { d.got <- s.acquire(d.ctx, d.f, d.cancel) }()
			synctest.Wait()
			return d
		}
		granted := func(d *download) bool {
			select {
			case err := <-d.got:
				require.NoError(t, err)
				return true
			default:
				return false
			}
		}

		a, b := start("a"), start("b")
		require.True(t, granted(a))
		require.True(t, granted(b))
		a.f.release() // a's client leaves; nobody is queued: a runs on
		synctest.Wait()
		assert.NoError(t, a.ctx.Err(), "an idle download that blocks nobody finishes")

		c := start("c")
		assert.ErrorIs(t, context.Cause(a.ctx), errYielded, "queued c makes idle a yield")
		assert.NoError(t, b.ctx.Err(), "b has a client: it keeps its slot")
		assert.False(t, granted(c), "c waits until a has let go")
		d := start("d")
		assert.False(t, a.f.acquire(), "a yielding takes no new client")
		s.release(a.f)
		synctest.Wait()
		assert.True(t, granted(c), "the slot goes to the first queued")
		assert.False(t, granted(d))

		d.f.release() // d's only client leaves while d is queued
		synctest.Wait()
		assert.ErrorIs(t, <-d.got, errAbandoned)
		assert.False(t, d.f.acquire(), "an abandoned download takes no new client")

		e := start("e")
		assert.False(t, granted(e))
		s.release(b.f)
		synctest.Wait()
		assert.True(t, granted(e))
		assert.Empty(t, s.queue)
	})
}
