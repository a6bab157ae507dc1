package upstream

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTokenExchangeIsSingleFlight: 16 concurrent cold requests for one
// repository cost one ping and one token request, and all of them succeed
// with the shared token.
func TestTokenExchangeIsSingleFlight(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	up.RequireToken("", "")
	img := upstreamtest.RandomImage(t, 1024, 1)
	up.Push(t, "app:v1", img)
	cfgDigest, err := img.ConfigName()
	require.NoError(t, err)
	c, err := New(Config{Name: "upstream.test", URL: up.URL}, Options{})
	require.NoError(t, err)

	tokens, heads := up.Requests("GET token"), up.Requests("HEAD blobs") // the push's own
	release := up.Hold("GET token")
	const clients = 16
	sizes := make([]int64, clients)
	errs := make([]error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() { sizes[i], errs[i] = c.HeadBlob(t.Context(), "app", cfgDigest.String()) })
	}
	require.Eventually(t, func() bool { return c.auth.waiting.Load() == clients && up.InFlight("GET token") == 1 },
		waitFor, tick, "every client waits on the one token request")
	release()
	wg.Wait()
	for i := range clients {
		require.NoError(t, errs[i])
		assert.Positive(t, sizes[i])
	}
	assert.Equal(t, 1, up.Requests("GET token")-tokens, "one token exchange for 16 cold requests")
	assert.Equal(t, clients, up.Requests("HEAD blobs")-heads)
}

// TestUserAgent: every request, the ping included, says it is lifeboat.
func TestUserAgent(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var agents []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		agents = append(agents, r.Header.Get("User-Agent"))
		mu.Unlock()
		if r.URL.Path != "/v2/" {
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{Name: "upstream.test", URL: srv.URL}, Options{UserAgent: "lifeboat/1.2.3"})
	require.NoError(t, err)
	_, err = c.HeadManifest(t.Context(), "app", "v1")
	var ue *Error
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, ReasonNotFound, ue.Reason)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"lifeboat/1.2.3", "lifeboat/1.2.3"}, agents, "the ping and the HEAD")
}

// TestTransportsStayBounded: 5,000 repositories pulled within one TTL, and
// then over hours, never make the transport map grow past maxTransports,
// and the expired entries are swept at most once per sweepEvery: what keeps
// put from scanning a full map on every call.
func TestTransportsStayBounded(t *testing.T) {
	t.Parallel()
	var tr transports
	tr.m = map[string]cachedTransport{}
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	now := start
	sweeps := 0
	for i := range 5000 {
		repo := fmt.Sprintf("team/app-%d", i)
		before := tr.lastSweep
		tr.put(repo, cachedTransport{rt: http.DefaultTransport}, now)
		if !tr.lastSweep.Equal(before) {
			sweeps++
		}
		require.LessOrEqual(t, len(tr.m), maxTransports, "after %d repositories", i+1)
		_, ok := tr.get(repo, now, 0)
		require.True(t, ok, "the newest transport is kept")
		if i >= 2500 {
			now = now.Add(time.Second) // the second half arrives over 2,500 s
		}
	}
	elapsed := now.Sub(start)
	assert.Positive(t, sweeps, "expired transports were swept")
	assert.LessOrEqual(t, sweeps, int(elapsed/sweepEvery)+1, "at most one sweep a minute")
	_, ok := tr.get("team/app-0", now, 0)
	assert.False(t, ok, "the oldest went")
}

const (
	waitFor = 10 * time.Second
	tick    = 5 * time.Millisecond
)

func TestNewRefusesURLsItCannotHonour(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"ftp://r.test", "http://", "https://r.test/v2", "https://r.test/mirror/", "https://r.test/?a=b", "https://u:p@r.test"} {
		_, err := New(Config{Name: "r.test", URL: u}, Options{})
		assert.Error(t, err, u)
	}
	for _, u := range []string{"https://r.test", "https://r.test/", "http://127.0.0.1:5001"} {
		_, err := New(Config{Name: "r.test", URL: u}, Options{})
		assert.NoError(t, err, u)
	}
}
