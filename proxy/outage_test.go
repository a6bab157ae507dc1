package proxy

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
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

// outageTimeouts keep test outages short; the defaults are longer. Use
// them only where upstream never answers, so the budget running out is the
// outcome under test: an answer that a busy machine delays past 500 ms
// would be served stale (or counted under the wrong reason) by mistake.
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
		upstream.Options{Metrics: upstream.NewMetrics(e.reg)}, e.reg)
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
// content that is not cached fails quickly with an unavailable error.
func TestEveryOutageServesCachedContent(t *testing.T) {
	t.Parallel()
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler()) // a certificate nobody trusts
	t.Cleanup(tlsSrv.Close)

	for _, tc := range []struct {
		name     string
		mode     upstreamtest.Mode // switched on the running upstream
		url      string            // or: upstream reached elsewhere
		token    bool
		tagStale bool // the cached tag is answered stale (else: revalidated hit)
		silent   bool // upstream never answers: the budget running out is the outcome
		reasons  []string
	}{
		{name: "refused", url: "http://127.0.0.1:1", tagStale: true, reasons: []string{upstream.ReasonRefused}},
		{name: "dns", url: "http://lifeboat-upstream.invalid:5000", tagStale: true, silent: true, reasons: []string{upstream.ReasonDNS, upstream.ReasonTimeout}},
		// A handshake slower than the budget (a loaded machine) is a timeout.
		{name: "tls", url: tlsSrv.URL, tagStale: true, reasons: []string{upstream.ReasonTLS, upstream.ReasonTimeout}},
		{name: "hang", mode: upstreamtest.Hang, tagStale: true, silent: true, reasons: []string{upstream.ReasonTimeout}},
		{name: "stall-body", mode: upstreamtest.StallBody, tagStale: false},
		{name: "500", mode: upstreamtest.Status500, tagStale: true, reasons: []string{upstream.Reason5xx}},
		{name: "502", mode: upstreamtest.Status502, tagStale: true, reasons: []string{upstream.Reason5xx}},
		{name: "503", mode: upstreamtest.Status503, tagStale: true, reasons: []string{upstream.Reason5xx}},
		{name: "504", mode: upstreamtest.Status504, tagStale: true, reasons: []string{upstream.Reason5xx}},
		{name: "429", mode: upstreamtest.Status429, tagStale: true, reasons: []string{upstream.Reason429}},
		{name: "token-down", mode: upstreamtest.TokenDown, token: true, tagStale: true, reasons: []string{upstream.ReasonAuthUnavailable}},
		{name: "token-hang", mode: upstreamtest.TokenHang, token: true, tagStale: true, silent: true, reasons: []string{upstream.ReasonAuthUnavailable, upstream.ReasonTimeout}},
		{name: "slow", mode: upstreamtest.Slow, tagStale: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			img := upstreamtest.RandomImage(t, 256<<10, 2)
			e.up.Push(t, "app:v1", img)
			uncached := upstreamtest.RandomImage(t, 256<<10, 1)
			e.up.Push(t, "app:v2", uncached)
			if tc.token {
				e.up.RequireToken("", "")
			}
			pullAll(t, e.p, img, "v1")

			url := e.up.URL
			if tc.url != "" {
				url = tc.url
			}
			timeouts := outageTimeouts
			if !tc.silent {
				// An upstream that answers, however slowly: a budget no
				// busy machine misses, so the answer is the revalidated hit
				// or the stale answer counted under the failure's reason
				// (a 503 that overran 500 ms was counted as a timeout).
				timeouts.Revalidate = answeringTimeouts.Revalidate
			}
			e.reopenWith(t, url, upstream.BreakerConfig{}, timeouts)
			e.up.SetMode(tc.mode)

			start := time.Now()
			m, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
			require.NoError(t, err)
			firstTag := time.Since(start)
			if tc.tagStale {
				assert.Equal(t, Stale, m.Source)
				got := 0.0
				for _, r := range tc.reasons {
					got += testutil.ToFloat64(e.p.metrics.stale.WithLabelValues(testRegistry, r))
				}
				assert.Equal(t, 1.0, got, "the stale answer is counted under one of %v", tc.reasons)
			} else {
				assert.Equal(t, Hit, m.Source)
			}
			src := pullAll(t, e.p, img, "v1")
			assert.Contains(t, []Source{Hit, Stale}, src)

			start = time.Now()
			ud, _ := uncached.Digest()
			_, merr := e.p.Manifest(t.Context(), testRegistry, "app", ud.String())
			layers, _ := uncached.Layers()
			ld, _ := layers[0].Digest()
			b, berr := e.p.Blob(t.Context(), testRegistry, "app", digest.Digest(ld.String()), true)
			if berr == nil {
				// Headers came, then the body stalled or crawls: the
				// stream must end in an error or the right bytes.
				body, rerr := readAllErr(b)
				if rerr == nil {
					assert.Equal(t, digest.Digest(ld.String()), digest.FromBytes(body))
				}
			}
			miss := time.Since(start)
			t.Logf("%s: cached tag answered in %s; uncached manifest+blob failed or finished in %s", tc.name, firstTag.Round(time.Millisecond), miss.Round(time.Millisecond))
			if tc.mode != upstreamtest.Slow && tc.mode != upstreamtest.StallBody {
				var ue *upstream.Error
				require.ErrorAs(t, merr, &ue, "uncached manifest")
				assert.True(t, ue.Unavailable(), "uncached manifest: %v", merr)
				require.ErrorAs(t, berr, &ue, "uncached blob")
				assert.True(t, ue.Unavailable(), "uncached blob: %v", berr)
			}
			assert.Less(t, miss, 30*time.Second, "misses fail fast, never hang")
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

func TestCircuitBreakerAnswersFromCacheWithoutWaiting(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := upstreamtest.RandomImage(t, 1024, 1)
	e.up.Push(t, "app:v1", img)
	pullAll(t, e.p, img, "v1")
	e.reopenAt(t, e.up.URL, upstream.BreakerConfig{Failures: 2, Backoff: 300 * time.Millisecond})
	e.up.SetMode(upstreamtest.Hang)

	for range 2 { // two timeouts open the circuit
		m, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
		require.NoError(t, err)
		assert.Equal(t, Stale, m.Source)
	}
	require.True(t, e.p.mirrors[testRegistry].Client.CircuitOpen())
	assert.Equal(t, 1.0, upstreamGauge(t, e.reg, "lifeboat_upstream_circuit_open"))

	heads := e.up.Requests("HEAD manifests")
	start := time.Now()
	m, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
	require.NoError(t, err)
	assert.Equal(t, Stale, m.Source)
	assert.Equal(t, heads, e.up.Requests("HEAD manifests"), "an open circuit does not ask upstream")
	t.Logf("cached tag with the circuit open: %s", time.Since(start))
	_, err = e.p.Manifest(t.Context(), testRegistry, "app", "v404")
	var ue *upstream.Error
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, upstream.ReasonCircuitOpen, ue.Reason, "a miss fails at once")
	assert.Equal(t, 1.0, testutil.ToFloat64(e.p.metrics.stale.WithLabelValues(testRegistry, upstream.ReasonCircuitOpen)))

	// Upstream comes back: after the backoff one probe closes the circuit.
	e.up.SetMode(upstreamtest.OK)
	require.Eventually(t, func() bool {
		m, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
		return err == nil && m.Source == Hit
	}, 10*time.Second, 50*time.Millisecond)
	assert.False(t, e.p.mirrors[testRegistry].Client.CircuitOpen())
	assert.Equal(t, 0.0, upstreamGauge(t, e.reg, "lifeboat_upstream_circuit_open"))
}

func TestConcurrentRevalidationsShareOneHEAD(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := upstreamtest.RandomImage(t, 1024, 1)
	e.up.Push(t, "app:v1", img)
	pullAll(t, e.p, img, "v1")
	heads := e.up.Requests("HEAD manifests")

	const clients = 32
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			m, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
			assert.NoError(t, err)
			if err == nil {
				assert.Equal(t, Hit, m.Source)
			}
		})
	}
	wg.Wait()
	got := e.up.Requests("HEAD manifests") - heads
	t.Logf("%d concurrent tag requests cost %d upstream HEADs", clients, got)
	assert.GreaterOrEqual(t, got, 1)
	assert.LessOrEqual(t, got, clients/2, "concurrent revalidations are shared")
}

func TestStaleLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := upstreamtest.RandomImage(t, 1024, 1)
	e.up.Push(t, "app:v1", img)
	pullAll(t, e.p, img, "v1")

	e.up.SetMode(upstreamtest.Status503)
	e.p.mirrors[testRegistry].MaxStaleness = time.Nanosecond
	_, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
	require.Error(t, err, "a tag older than the maximum staleness is not served stale")

	e.p.mirrors[testRegistry].MaxStaleness = 0
	e.up.SetMode(upstreamtest.OK)
	e.up.Delete(t, "app:v1")
	_, err = e.p.Manifest(t.Context(), testRegistry, "app", "v1")
	require.Error(t, err, "a tag upstream deleted is not served stale by default")
	e.p.mirrors[testRegistry].ServeStaleOnNotFound = true
	m, err := e.p.Manifest(t.Context(), testRegistry, "app", "v1")
	require.NoError(t, err)
	assert.Equal(t, Stale, m.Source)
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

// odd answers a HEAD of manifests with 405 and a GET with an HTML page.
func oddUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestOddUpstreamAnswersServeStale(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := upstreamtest.RandomImage(t, 512, 1)
	e.up.Push(t, "app:v405", img)
	e.up.Push(t, "app:html", img)
	pullAll(t, e.p, img, "v405")
	pullAll(t, e.p, img, "html")
	// The odd upstream answers at once: budgets no busy machine overruns,
	// so the miss below fails for the answer (bad response), not the time.
	e.reopenWith(t, oddUpstream(t).URL, upstream.BreakerConfig{Failures: 100}, answeringTimeouts)

	for _, tag := range []string{"v405", "html"} {
		m, err := e.p.Manifest(t.Context(), testRegistry, "app", tag)
		require.NoError(t, err, tag)
		assert.Equal(t, Stale, m.Source, "%s: an unusable answer is no reason to fail a cached tag", tag)
	}
	_, err := e.p.Manifest(t.Context(), testRegistry, "app", "not-cached")
	var ue *upstream.Error
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, upstream.ReasonBadResponse, ue.Reason)

	// A "registry" whose /v2/ is 404 is not telling us a tag is gone.
	e.reopenWith(t, httptest.NewServer(http.NotFoundHandler()).URL, upstream.BreakerConfig{Failures: 100}, answeringTimeouts)
	m, err := e.p.Manifest(t.Context(), testRegistry, "app", "v405")
	require.NoError(t, err)
	assert.Equal(t, Stale, m.Source)
}
