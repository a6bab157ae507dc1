//go:build loadtest

package integration

// The load test: `make loadtest` (not in CI). It runs the hostile-client
// attacks of the security review against the built binary, each for
// LIFEBOAT_LOADTEST_DURATION (default 1m), while a normal client pulls
// cached content, and fails when a ceiling is crossed. It reports RSS,
// open files, goroutines and the normal client's p99 for each attack.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Ceilings: the chart's memory limit is 256 MiB; a normal pull of cached
// content must stay well under a second even while attacked.
const (
	maxRSSMiB     = 200
	maxNormalP99  = time.Second
	maxOpenFiles  = 4096 + 64 + 16 + 256 // the listeners' limits plus the store and upstream connections
	maxGoroutines = 20000
)

func loadDuration(t *testing.T) time.Duration {
	if v := os.Getenv("LIFEBOAT_LOADTEST_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "LIFEBOAT_LOADTEST_DURATION")
		return d
	}
	return time.Minute
}

// loadEnv is a lifeboat with one cached image and a normal client.
type loadEnv struct {
	lb       *lifeboat
	up       *upstreamtest.Upstream
	manifest string // a cached manifest's path: what the normal client pulls
	blob     string // a cached 8 MiB blob's path: what slow readers ask for
}

func newLoadEnv(t *testing.T, args ...string) *loadEnv {
	up := upstreamtest.Start(t)
	img := upstreamtest.RandomImage(t, 8<<20, 1)
	up.Push(t, "app:v1", img)
	lb := startLifeboat(t, t.TempDir(), append([]string{"--upstream", upstreamName + "=" + up.URL, "--default-registry", upstreamName}, args...)...)
	d, err := img.Digest()
	require.NoError(t, err)
	layers, err := img.Layers()
	require.NoError(t, err)
	ld, err := layers[0].Digest()
	require.NoError(t, err)
	e := &loadEnv{lb: lb, up: up, manifest: "/v2/app/manifests/" + d.String(), blob: "/v2/app/blobs/" + ld.String()}
	for _, p := range []string{e.manifest, e.blob} {
		resp, err := http.Get(lb.URL + p)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, p)
	}
	return e
}

// normalClient pulls the cached manifest in a loop until ctx ends and
// returns its p99 latency and how many requests failed.
func (e *loadEnv) normalClient(ctx context.Context) (p99 time.Duration, failed int) {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	var lat []time.Duration
	for ctx.Err() == nil {
		start := time.Now()
		resp, err := client.Get(e.lb.URL + e.manifest)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if err != nil || resp.StatusCode != http.StatusOK {
			failed++
		}
		lat = append(lat, time.Since(start))
		time.Sleep(10 * time.Millisecond)
	}
	slices.Sort(lat)
	if len(lat) == 0 {
		return 0, failed
	}
	return lat[len(lat)*99/100], failed
}

// figures is what the process looks like after an attack.
type figures struct {
	rssMiB     float64
	openFiles  int
	goroutines int
}

// sample reads the process's open files and goroutines now (the metrics
// listener may refuse while attacked: then goroutines stay 0).
func (e *loadEnv) sample() figures {
	pid := e.lb.cmd.Process.Pid
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	f := figures{rssMiB: peakRSS(pid), openFiles: len(fds)}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(e.lb.MetricsURL + "/metrics")
	if err != nil {
		return f
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			f.goroutines, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return f
}

// sampler keeps the highest figures seen every second until ctx ends.
func (e *loadEnv) sampler(ctx context.Context) figures {
	var peak figures
	for {
		f := e.sample()
		peak = figures{max(peak.rssMiB, f.rssMiB), max(peak.openFiles, f.openFiles), max(peak.goroutines, f.goroutines)}
		select {
		case <-ctx.Done():
			return peak
		case <-time.After(time.Second):
		}
	}
}

// attack runs attacker until the duration ends, with the normal client
// beside it, then checks the ceilings.
func (e *loadEnv) attack(t *testing.T, name string, attacker func(ctx context.Context)) {
	ctx, cancel := context.WithTimeout(t.Context(), loadDuration(t))
	defer cancel()
	var wg sync.WaitGroup
	var f figures
	wg.Go(func() { attacker(ctx) })
	wg.Go(func() { f = e.sampler(ctx) })
	p99, failed := e.normalClient(ctx)
	wg.Wait()
	t.Logf("%s: peak RSS %.0f MiB, open files %d, goroutines %d, normal client p99 %s (%d failed)",
		name, f.rssMiB, f.openFiles, f.goroutines, p99, failed)
	assert.Less(t, f.rssMiB, float64(maxRSSMiB), "peak RSS")
	assert.Less(t, f.openFiles, maxOpenFiles, "open files")
	assert.Less(t, f.goroutines, maxGoroutines, "goroutines")
	assert.Less(t, p99, maxNormalP99, "the normal client's p99")
	assert.Zero(t, failed, "the normal client's failed pulls")
}

// workers runs n copies of f until ctx ends.
func workers(ctx context.Context, n int, f func(ctx context.Context, i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			for ctx.Err() == nil {
				f(ctx, i)
			}
		})
	}
	wg.Wait()
}

// Attack 1: method names as metric labels.
func TestLoadLongMethodNames(t *testing.T) {
	e := newLoadEnv(t)
	var n atomic.Int64
	e.attack(t, "long method names", func(ctx context.Context) {
		workers(ctx, 8, func(ctx context.Context, i int) {
			c, err := net.Dial("tcp", e.lb.Host)
			if err != nil {
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			method := fmt.Sprintf("M%d%s", n.Add(1), strings.Repeat("X", 50<<10))
			fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", method, e.manifest)
			_, _ = io.Copy(io.Discard, c)
		})
	})
	resp, err := http.Get(e.lb.MetricsURL + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("sent %d requests with 50 KiB method names; /metrics is %d bytes", n.Load(), len(body))
	assert.Less(t, len(body), 1<<20, "/metrics stays small")
}

// Attack 2: cold blob requests whose clients leave after 0.3 s, against a
// slow upstream; a normal cold blob must still be answered in time.
func TestLoadAbandonedDownloads(t *testing.T) {
	e := newLoadEnv(t)
	var digests []string
	for i := range 420 {
		img := upstreamtest.RandomImage(t, 4<<20, 1)
		e.up.Push(t, fmt.Sprintf("cold:%d", i), img)
		layers, _ := img.Layers()
		d, _ := layers[0].Digest()
		digests = append(digests, d.String())
	}
	e.up.SetMode(upstreamtest.Slow)
	var next atomic.Int64
	var coldWorst atomic.Int64
	e.attack(t, "abandoned downloads", func(ctx context.Context) {
		var wg sync.WaitGroup
		wg.Go(func() {
			workers(ctx, 50, func(ctx context.Context, _ int) {
				d := digests[int(next.Add(1))%400] // the last 20 are the normal client's
				rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
				req, _ := http.NewRequestWithContext(rctx, http.MethodGet, e.lb.URL+"/v2/cold/blobs/"+d, nil)
				if resp, err := http.DefaultClient.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
		// A normal client asks for a cold blob now and then: it must get an
		// answer (the first bytes of the blob, or 503 so containerd goes to
		// the registry) within the request budget, not wait for abandoned
		// downloads to give up their slots.
		for i := 400; ctx.Err() == nil && i < len(digests); i++ {
			start := time.Now()
			if resp, err := (&http.Client{Timeout: 2 * time.Minute}).Get(e.lb.URL + "/v2/cold/blobs/" + digests[i]); err == nil {
				_, _ = resp.Body.Read(make([]byte, 1))
				resp.Body.Close()
			}
			coldWorst.Store(max(coldWorst.Load(), int64(time.Since(start))))
			time.Sleep(time.Second)
		}
		wg.Wait()
	})
	t.Logf("a normal cold blob GET during the attack: worst time to first byte or error %s", time.Duration(coldWorst.Load()))
	assert.Less(t, time.Duration(coldWorst.Load()), 15*time.Second, "a normal miss is answered within the request budget")
}

// Attack 7: slow readers of a large cached blob, and idle connections to
// the metrics listener.
func TestLoadSlowReadersAndIdleConnections(t *testing.T) {
	e := newLoadEnv(t)
	metricsHost := strings.TrimPrefix(e.lb.MetricsURL, "http://")
	e.attack(t, "slow readers and idle connections", func(ctx context.Context) {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for i := 0; i < 600 && ctx.Err() == nil; i++ {
			if c, err := net.Dial("tcp", e.lb.Host); err == nil {
				_ = c.(*net.TCPConn).SetReadBuffer(4096)
				fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", e.blob) // and never read
				conns = append(conns, c)
			}
		}
		for i := 0; i < 8000 && ctx.Err() == nil; i++ {
			if c, err := net.Dial("tcp", metricsHost); err == nil {
				conns = append(conns, c)
			}
		}
		<-ctx.Done()
	})
}

// Attack 8: many concurrent distinct blob HEADs and manifest misses; the
// upstream connections must stay bounded.
func TestLoadUpstreamFanOut(t *testing.T) {
	e := newLoadEnv(t)
	e.up.SetMode(upstreamtest.Slow)
	var n atomic.Int64
	e.attack(t, "upstream fan-out", func(ctx context.Context) {
		workers(ctx, 500, func(ctx context.Context, i int) {
			k := n.Add(1)
			path := fmt.Sprintf("/v2/app/blobs/sha256:%064x", k)
			if i%2 == 1 {
				path = fmt.Sprintf("/v2/app/manifests/sha256:%064x", k)
			}
			rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(rctx, http.MethodHead, e.lb.URL+path, nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	})
	peak := max(e.up.Peak("HEAD blobs"), e.up.Peak("HEAD manifests"), e.up.Peak("GET manifests"))
	t.Logf("upstream: peak concurrent requests of one kind %d", peak)
	assert.LessOrEqual(t, peak, 64, "upstream concurrency is bounded")
}
