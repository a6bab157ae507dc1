package proxy

import (
	"net/http"
	"strings"
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

// outageTimeouts keep test outages short; the defaults are longer. They are
// for tests in a synctest bubble (newBubbleEnv), where time passes only
// when every goroutine waits: an answer takes no time however busy the
// machine, and a budget that runs out does so exactly. Outside a bubble,
// an answer that a busy machine delays past 500 ms would be served stale
// (or counted under the wrong reason) by mistake.
var outageTimeouts = upstream.Timeouts{
	Dial: time.Second, TLSHandshake: time.Second, ResponseHeader: 3 * time.Second,
	Revalidate: 500 * time.Millisecond, Request: 3 * time.Second, BodyStall: time.Second,
}

// answeringTimeouts are for an upstream that answers, however slowly:
// budgets no busy machine overruns, so a test that expects the answer (a
// revalidated hit, a 401 passed on, a 503 counted as 5xx) gets it. They
// guard only against a hang.
var answeringTimeouts = upstream.Timeouts{Revalidate: 10 * time.Second, Request: 10 * time.Second, BodyStall: 10 * time.Second}

// reopenAt reopens the env's store with its upstream reached at url: the
// cache is keyed by registry name, so what was cached stays cached.
func (e *env) reopenAt(t *testing.T, url string, breaker upstream.BreakerConfig) {
	t.Helper()
	e.reopenWith(t, url, breaker, outageTimeouts)
}

// reopenWith is reopenAt with timeouts of the test's choosing.
func (e *env) reopenWith(t *testing.T, url string, breaker upstream.BreakerConfig, timeouts upstream.Timeouts) {
	t.Helper()
	require.NoError(t, e.store.Close())
	store, err := cache.Open(e.dir, cache.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	e.store = store
	e.reg = prometheus.NewPedanticRegistry()
	e.p = newTestProxy(t, store, upstream.Config{Name: testRegistry, URL: url, Timeouts: timeouts, Breaker: breaker},
		e.upstreamOptions(), e.reg)
}

// upstreamGauge reads one of the upstream package's gauges for the test
// registry.
func upstreamGauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if m.GetLabel()[0].GetValue() == testRegistry {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no %s series for the test registry", name)
	return 0
}

// TestEveryOutageServesCachedContent: for each failure mode, with an image
// cached, its tag, its manifest by digest and its blobs are served, and
// content that is not cached fails with an unavailable error within its
// budget. In a bubble: the time each answer took is the bubble's, exact.
func TestEveryOutageServesCachedContent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		mode     upstreamtest.Mode // switched on the running upstream
		url      string            // or: upstream reached elsewhere ("tls": a server nobody trusts)
		token    bool
		tagStale bool          // the cached tag is answered stale (else: revalidated hit)
		tagWait  time.Duration // how long the cached tag's answer took
		reason   string        // the stale answer is counted under this reason
	}{
		{name: "refused", url: "http://127.0.0.1:1", tagStale: true, reason: upstream.ReasonRefused},
		{name: "dns", url: "http://lifeboat-upstream.invalid:5000", tagStale: true, reason: upstream.ReasonDNS},
		{name: "tls", url: "tls", tagStale: true, reason: upstream.ReasonTLS},
		{name: "hang", mode: upstreamtest.Hang, tagStale: true, tagWait: outageTimeouts.Revalidate, reason: upstream.ReasonTimeout},
		{name: "stall-body", mode: upstreamtest.StallBody},
		{name: "500", mode: upstreamtest.Status500, tagStale: true, reason: upstream.Reason5xx},
		{name: "502", mode: upstreamtest.Status502, tagStale: true, reason: upstream.Reason5xx},
		{name: "503", mode: upstreamtest.Status503, tagStale: true, reason: upstream.Reason5xx},
		{name: "504", mode: upstreamtest.Status504, tagStale: true, reason: upstream.Reason5xx},
		{name: "429", mode: upstreamtest.Status429, tagStale: true, reason: upstream.Reason429},
		{name: "token-down", mode: upstreamtest.TokenDown, token: true, tagStale: true, reason: upstream.ReasonAuthUnavailable},
		{name: "token-hang", mode: upstreamtest.TokenHang, token: true, tagStale: true, tagWait: outageTimeouts.Revalidate, reason: upstream.ReasonTimeout},
		// 100 ms before each answer: the ping and the HEAD fit the budget.
		{name: "slow", mode: upstreamtest.Slow, tagWait: 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				e := newBubbleEnv(t)
				img := upstreamtest.RandomImage(t, 256<<10, 2)
				e.up.Push(t, "app:v1", img)
				uncached := upstreamtest.RandomImage(t, 256<<10, 1)
				e.up.Push(t, "app:v2", uncached)
				if tc.token {
					e.up.RequireToken("", "")
				}
				pullAll(t, e.p, img, "v1")

				url := e.up.URL
				switch tc.url {
				case "":
				case "tls":
					url = e.net.Server(t, http.NotFoundHandler(), true).URL
				default:
					url = tc.url
				}
				e.reopenAt(t, url, upstream.BreakerConfig{})
				e.up.SetMode(tc.mode)

				start := time.Now()
				m, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
				require.NoError(t, err)
				assert.Equal(t, tc.tagWait, time.Since(start), "the cached tag's answer took")
				if tc.tagStale {
					assert.Equal(t, Stale, m.Source)
					assert.Equal(t, 1.0, testutil.ToFloat64(e.p.metrics.stale.WithLabelValues(testRegistry, tc.reason)),
						"the stale answer is counted under %s", tc.reason)
				} else {
					assert.Equal(t, Hit, m.Source)
				}
				src := pullAll(t, e.p, img, "v1")
				assert.Contains(t, []Source{Hit, Stale}, src)

				// Misses: each fails within its budget (or, slow, finishes).
				start = time.Now()
				ud, _ := uncached.Digest()
				_, merr := e.p.Manifest(t.Context(), testRegistry, "app", ud.String())
				manifestMiss := time.Since(start)
				layers, _ := uncached.Layers()
				ld, _ := layers[0].Digest()
				start = time.Now()
				b, berr := e.p.Blob(t.Context(), testRegistry, "app", digest.Digest(ld.String()), true)
				if berr == nil {
					// Headers came, then the body stalled or crawls: the
					// stream must end in an error or the right bytes.
					body, rerr := readAllErr(b)
					if rerr == nil {
						assert.Equal(t, digest.Digest(ld.String()), digest.FromBytes(body))
					}
				}
				blobMiss := time.Since(start)
				t.Logf("%s: cached tag answered in %s; uncached manifest failed or finished in %s, blob in %s (bubble time)", tc.name, tc.tagWait, manifestMiss, blobMiss)
				if tc.mode != upstreamtest.Slow && tc.mode != upstreamtest.StallBody {
					var ue *upstream.Error
					require.ErrorAs(t, merr, &ue, "uncached manifest")
					assert.True(t, ue.Unavailable(), "uncached manifest: %v", merr)
					require.ErrorAs(t, berr, &ue, "uncached blob")
					assert.True(t, ue.Unavailable(), "uncached blob: %v", berr)
				}
				if tc.mode == upstreamtest.StallBody {
					assert.Equal(t, outageTimeouts.Request, manifestMiss, "a manifest whose body stalls fails at the request budget")
					assert.Equal(t, outageTimeouts.BodyStall, blobMiss, "a blob whose body stalls is abandoned at the stall limit")
				}
				assert.LessOrEqual(t, manifestMiss, outageTimeouts.Request, "a manifest miss fails within the request budget, never hangs")
				assert.LessOrEqual(t, blobMiss, outageTimeouts.Request+outageTimeouts.BodyStall, "a blob miss fails within its budgets, never hangs")
			})
		})
	}
}

func readAllErr(b *Blob) ([]byte, error) {
	defer b.Content.Close()
	var sb strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := b.Content.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			if err.Error() == "EOF" {
				return []byte(sb.String()), nil
			}
			return []byte(sb.String()), err
		}
	}
}

// TestCircuitBreakerAnswersFromCacheWithoutWaiting: two revalidations that
// each ran out their 500 ms budget open the circuit; while it is open a
// cached tag is answered stale at once and a miss fails at once, without
// asking upstream; the first request after exactly the backoff probes
// upstream, which closes the circuit.
func TestCircuitBreakerAnswersFromCacheWithoutWaiting(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const backoff = 300 * time.Millisecond
		e := newBubbleEnv(t)
		img := upstreamtest.RandomImage(t, 1024, 1)
		e.up.Push(t, "app:v1", img)
		pullAll(t, e.p, img, "v1")
		e.reopenAt(t, e.up.URL, upstream.BreakerConfig{Failures: 2, Backoff: backoff})
		e.up.SetMode(upstreamtest.Hang)

		for range 2 { // two timeouts open the circuit
			start := time.Now()
			m, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
			require.NoError(t, err)
			assert.Equal(t, Stale, m.Source)
			assert.Equal(t, outageTimeouts.Revalidate, time.Since(start), "served stale when the budget ran out")
		}
		synctest.Wait() // the second revalidation has recorded its failure
		opened := time.Now()
		require.True(t, e.p.mirrors[testRegistry].Client.CircuitOpen())
		assert.Equal(t, 1.0, upstreamGauge(t, e.reg, "lifeboat_upstream_circuit_open"))

		heads := e.up.Requests("HEAD manifests")
		m, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
		require.NoError(t, err)
		assert.Equal(t, Stale, m.Source)
		assert.Equal(t, opened, time.Now(), "with the circuit open a cached tag is answered without waiting")
		assert.Equal(t, heads, e.up.Requests("HEAD manifests"), "an open circuit does not ask upstream")
		_, err = e.p.Manifest(t.Context(), testRegistry, "app", "v404")
		var ue *upstream.Error
		require.ErrorAs(t, err, &ue)
		assert.Equal(t, upstream.ReasonCircuitOpen, ue.Reason, "a miss fails at once")
		assert.Equal(t, opened, time.Now(), "a miss fails without waiting")
		assert.Equal(t, 1.0, testutil.ToFloat64(e.p.metrics.stale.WithLabelValues(testRegistry, upstream.ReasonCircuitOpen)))

		// Upstream comes back: just before the backoff ends nobody asks
		// it; at the backoff, one probe closes the circuit.
		e.up.SetMode(upstreamtest.OK)
		time.Sleep(backoff - time.Nanosecond)
		m, err = e.p.Manifest(t.Context(), testRegistry, "app", "v1")
		require.NoError(t, err)
		assert.Equal(t, Stale, m.Source, "the circuit stays open for the whole backoff")
		assert.Equal(t, heads, e.up.Requests("HEAD manifests"))
		time.Sleep(time.Nanosecond)
		m, err = e.p.Manifest(t.Context(), testRegistry, "app", "v1")
		require.NoError(t, err)
		assert.Equal(t, Hit, m.Source, "the probe after the backoff revalidated the tag")
		assert.Equal(t, heads+1, e.up.Requests("HEAD manifests"))
		assert.False(t, e.p.mirrors[testRegistry].Client.CircuitOpen())
		assert.Equal(t, 0.0, upstreamGauge(t, e.reg, "lifeboat_upstream_circuit_open"))
	})
}

// TestConcurrentRevalidationsShareOneHEAD: 32 requests for a cached tag
// arrive together while upstream takes 100 ms to answer: they cost one HEAD,
// and each is answered after that one round trip.
func TestConcurrentRevalidationsShareOneHEAD(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newBubbleEnv(t)
		img := upstreamtest.RandomImage(t, 1024, 1)
		e.up.Push(t, "app:v1", img)
		pullAll(t, e.p, img, "v1")
		heads := e.up.Requests("HEAD manifests")
		e.up.SetMode(upstreamtest.Slow) // 100 ms before each answer

		const clients = 32
		start := time.Now()
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				m, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
				if assert.NoError(t, err) {
					assert.Equal(t, Hit, m.Source)
					assert.Equal(t, 100*time.Millisecond, time.Since(start), "answered after one upstream round trip")
				}
			})
		}
		wg.Wait()
		assert.Equal(t, heads+1, e.up.Requests("HEAD manifests"), "%d concurrent revalidations share one HEAD", clients)
	})
}

// TestStaleLimits: a tag is served stale up to MaxStaleness after upstream
// last confirmed it, and not a nanosecond longer; a tag upstream deleted
// is not served stale unless configured.
func TestStaleLimits(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const maxStaleness = 24 * time.Hour
		e := newBubbleEnv(t)
		img := upstreamtest.RandomImage(t, 1024, 1)
		e.up.Push(t, "app:v1", img)
		pullAll(t, e.p, img, "v1") // confirmed now

		e.up.SetMode(upstreamtest.Status503)
		e.p.mirrors[testRegistry].MaxStaleness = maxStaleness
		time.Sleep(maxStaleness)
		m, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
		require.NoError(t, err, "a tag confirmed exactly the maximum staleness ago is served stale")
		assert.Equal(t, Stale, m.Source)
		time.Sleep(time.Nanosecond)
		_, err = e.p.Manifest(t.Context(), testRegistry, "app", "v1")
		require.Error(t, err, "a tag older than the maximum staleness is not served stale")

		e.p.mirrors[testRegistry].MaxStaleness = 0
		e.up.SetMode(upstreamtest.OK)
		e.up.Delete(t, "app:v1")
		_, err = e.p.Manifest(t.Context(), testRegistry, "app", "v1")
		require.Error(t, err, "a tag upstream deleted is not served stale by default")
		e.p.mirrors[testRegistry].ServeStaleOnNotFound = true
		m, err = e.p.Manifest(t.Context(), testRegistry, "app", "v1")
		require.NoError(t, err)
		assert.Equal(t, Stale, m.Source)
	})
}

func TestRateLimitRemainingIsRecorded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := upstreamtest.RandomImage(t, 512, 1)
	e.up.Push(t, "app:v1", img)
	e.up.SetRateLimitRemaining("42;w=21600")
	_, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
	require.NoError(t, err)
	assert.Equal(t, 42.0, upstreamGauge(t, e.reg, "lifeboat_upstream_ratelimit_remaining"))
}

// oddUpstream answers a HEAD of manifests with 405 and a GET with an HTML
// page, on the env's network.
func oddUpstream(t *testing.T, e *env) string {
	t.Helper()
	return e.net.Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/manifests/v405"):
			w.WriteHeader(http.StatusMethodNotAllowed)
		case r.Method == http.MethodHead:
			w.WriteHeader(http.StatusOK) // no digest: the tag must be fetched
		default:
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html>captive portal</html>"))
		}
	}), false).URL
}

// TestOddUpstreamAnswersServeStale: answers no registry gives (405 to a
// HEAD, an HTML page, a /v2/ that is 404) are no reason to fail a cached
// tag: it is served stale at once, and a miss fails as a bad response.
func TestOddUpstreamAnswersServeStale(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newBubbleEnv(t)
		img := upstreamtest.RandomImage(t, 512, 1)
		e.up.Push(t, "app:v405", img)
		e.up.Push(t, "app:html", img)
		pullAll(t, e.p, img, "v405")
		pullAll(t, e.p, img, "html")
		e.reopenAt(t, oddUpstream(t, e), upstream.BreakerConfig{Failures: 100})

		start := time.Now()
		for _, tag := range []string{"v405", "html"} {
			m, err := e.p.Manifest(t.Context(), testRegistry, "app", tag)
			require.NoError(t, err, tag)
			assert.Equal(t, Stale, m.Source, "%s: an unusable answer is no reason to fail a cached tag", tag)
		}
		_, err := e.p.Manifest(t.Context(), testRegistry, "app", "not-cached")
		var ue *upstream.Error
		require.ErrorAs(t, err, &ue)
		assert.Equal(t, upstream.ReasonBadResponse, ue.Reason)
		assert.Equal(t, time.Duration(0), time.Since(start), "answered at once, not when a budget ran out")

		// A "registry" whose /v2/ is 404 is not telling us a tag is gone.
		e.reopenAt(t, e.net.Server(t, http.NotFoundHandler(), false).URL, upstream.BreakerConfig{Failures: 100})
		m, err := e.p.Manifest(t.Context(), testRegistry, "app", "v405")
		require.NoError(t, err)
		assert.Equal(t, Stale, m.Source)
		assert.Equal(t, time.Duration(0), time.Since(start))
	})
}
