package integration

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/require"
)

// BenchmarkTagRevalidation is part 5 of BenchmarkWholeProcess on its own:
// what revalidating a tag (tagTTL 0) adds to the answer, against an
// upstream 20 ms away, in 7 rounds of 2 s per measurement, 10 s for one
// client (see revalidationRows).
func BenchmarkTagRevalidation(b *testing.B) {
	http.DefaultTransport.(*http.Transport).MaxIdleConnsPerHost = 64
	up := startRegistry(b, distribution(b), "")
	img := upstreamtest.RandomImage(b, 1024, 1)
	ref, err := name.ParseReference(strings.TrimPrefix(up.url, "http://")+"/bench/big:v1", name.Insecure)
	require.NoError(b, err)
	require.NoError(b, remote.Write(ref, img))
	const tagPath = "/v2/bench/big/manifests/v1"
	for b.Loop() {
		for _, r := range revalidationRows(b, up.url, tagPath, 7, 2*time.Second) {
			fmt.Println(r)
		}
	}
}

// revalidationRows measures a tag HEAD of tagPath on upstreamURL (which
// holds it) behind a 20 ms delay three ways: straight to the delayed
// upstream, through a lifeboat with tagTTL 1h (the cached answer) and
// through one with tagTTL 0 (revalidated every time: one upstream HEAD,
// shared by the requests that arrive while it is out). What revalidating
// adds is the revalidated latency minus the cached one, to be compared
// with the round trip (one HEAD straight to upstream, alone). Lifeboat's
// own account of the revalidated answers (the duration in its access log,
// from the request read to the answer handed to the server) is beside it:
// what the clients see on top of that is the hop to lifeboat and the time
// the answer waits for a core, which the machine's other processes share.
// Two more round trips are compared with: lifeboat's own HEADs upstream
// as its debug lines time them (the "upstream call" lines, which include
// its own sending and receiving of them), and a HEAD straight to upstream
// set off as each of those arrives (the shadows below). Under load both
// are longer than the round trip alone: here the upstream shares the
// machine's two cores with the burst, as a remote registry would not.
//
// Three loads, each in rounds of length round (a burst round: as many
// bursts as fit), the three ways taking turns, each first in turn, so that
// a slower spell of a shared machine falls on all of them; the
// percentiles are over every round's samples, and each figure of what
// revalidating adds comes with its 95% bootstrap interval (see
// addedInterval: a floor on its noise):
//   - 1 client, one request after another, in rounds five times as long
//     (a p99 of its ~45 answers a second needs them);
//   - bursts of 32 requests at once, the next burst after the last answer
//     and a pause (32 pods starting at once on a node). Lifeboat's HEAD
//     leaves while the burst's requests are still being sent and read,
//     and here the upstream (the delaying proxy, the registry) shares the
//     two cores with them, as a remote registry would not: so this row is
//     also compared with a HEAD straight to upstream sent with each burst;
//   - 32 clients, each one request after another. These fall into step
//     behind the shared HEAD, so its 32 answers leave together, queue for
//     the machine's cores with the clients' own work and are all waiting
//     again when the next HEAD leaves: a saturation test, whose figure
//     includes that queueing.
func revalidationRows(b *testing.B, upstreamURL, tagPath string, rounds int, round time.Duration) []string {
	// shadows: while the revalidating lifeboat is measured, each HEAD it
	// sends upstream sets off, as it arrives, one HEAD straight to
	// upstream from this process: the round trip any client of this
	// upstream had at that moment, lifeboat's own sending aside.
	var (
		shadowing atomic.Bool
		shadowMu  sync.Mutex
		shadows   []time.Duration
		shadowWG  sync.WaitGroup
		slow      *httptest.Server
	)
	slow = newDelayed(b, upstreamURL, 20*time.Millisecond, func(r *http.Request) {
		if !shadowing.Load() || r.Method != http.MethodHead || !strings.HasPrefix(r.UserAgent(), "lifeboat") {
			return
		}
		shadowWG.Go(func() {
			if took, err := timedRequest(http.MethodHead, slow.URL+tagPath); err == nil {
				shadowMu.Lock()
				shadows = append(shadows, took)
				shadowMu.Unlock()
			}
		})
	})
	// At debug level the revalidating lifeboat logs each HEAD it sends
	// upstream with its duration: the round trip it actually waited for.
	lb := startLifeboat(b, b.TempDir(), "--upstream", "bench.test="+slow.URL, "--default-registry", "bench.test", "--log-level", "debug")
	fetch(b, "GET", lb.URL+tagPath, false)
	cached := startLifeboat(b, b.TempDir(), "--upstream", "bench.test="+slow.URL, "--default-registry", "bench.test", "--tag-ttl", "1h")
	fetch(b, "GET", cached.URL+tagPath, false)
	urls := []string{slow.URL + tagPath, cached.URL + tagPath, lb.URL + tagPath}

	// burstRTT: HEADs straight to upstream, one sent with each burst, as
	// lifeboat sends its own: the round trip while a burst holds the cores
	// (the upstream shares them here). Every way's bursts send one, so
	// that each carries the same load; those of the revalidated bursts are
	// kept.
	var burstRTT []time.Duration
	const direct, cachedAnswer, revalidated = 0, 1, 2
	type load struct {
		name string
		run  func(way int) []time.Duration
	}
	loads := []load{ // the first sets the round trip
		{"1 client", func(way int) []time.Duration { return requestLoops(b, 1, 5*round, "HEAD", urls[way]) }},
		{"bursts of 32", func(way int) []time.Duration {
			lat, along := bursts(b, 32, round, 30*time.Millisecond, urls[way], urls[direct])
			if way == revalidated {
				burstRTT = append(burstRTT, along...)
			}
			return lat
		}},
		{"32 clients", func(way int) []time.Duration { return requestLoops(b, 32, round, "HEAD", urls[way]) }},
	}
	var rows []string
	var rtt []time.Duration // the round trip: the first load's HEADs straight to upstream
	for li, l := range loads {
		samples := make([][]time.Duration, len(urls))
		var own []time.Duration   // the revalidated answers' durations in lifeboat's access log
		var heads []time.Duration // its HEADs' round trips, from its debug lines
		shadows = nil
		for k := range rounds {
			for j := range urls {
				way := (k + j) % len(urls) // each way first in turn
				if way == revalidated {
					lb.logs.take()
					shadowing.Store(true)
				}
				samples[way] = append(samples[way], l.run(way)...)
				if way == revalidated {
					shadowing.Store(false)
					shadowWG.Wait()
					time.Sleep(100 * time.Millisecond) // the last access lines on their way through the pipe
					logs := lb.logs.take()
					own = append(own, loggedDurations(logs, "request")...)
					heads = append(heads, loggedDurations(logs, "upstream call")...) // none from a lifeboat older than these lines
				}
			}
		}
		require.NotEmpty(b, own, "no access line for a tag HEAD")
		var p50, p99 [3]time.Duration
		for i, sm := range samples {
			p50[i], p99[i] = percentile(sm, 50), percentile(sm, 99)
		}
		if li == 0 {
			rtt = samples[direct]
		}
		require.NotEmpty(b, rtt)
		r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
		// Each "+ p99" is a difference of p99s, not the p99 of a difference.
		added := func(roundTrip []time.Duration) string {
			var out []string
			for _, p := range []int{50, 99} {
				lo, hi := addedInterval(samples[revalidated], samples[cachedAnswer], roundTrip, p)
				added := percentile(samples[revalidated], p) - percentile(samples[cachedAnswer], p) - percentile(roundTrip, p)
				out = append(out, fmt.Sprintf("p%d %8s [%s, %s]", p, r(added), r(lo), r(hi)))
			}
			return strings.Join(out, " ")
		}
		// against is a row for one more round trip.
		against := func(what string, roundTrip []time.Duration) string {
			rt50, rt99 := percentile(roundTrip, 50), percentile(roundTrip, 99)
			return fmt.Sprintf("%s: %s (%d) p50 %8s p99 %8s; revalidated - within tagTTL = that round trip + %s; "+
				"by lifeboat's own clock that round trip + p50 %8s p99 %8s",
				l.name, what, len(roundTrip), r(rt50), r(rt99), added(roundTrip),
				r(percentile(own, 50)-rt50), r(percentile(own, 99)-rt99))
		}
		if len(burstRTT) > 0 {
			rows = append(rows, against("a HEAD straight to upstream sent with each burst", burstRTT))
			burstRTT = nil
		}
		if len(heads) > 0 { // none from a lifeboat older than its debug lines
			rows = append(rows, against(fmt.Sprintf("lifeboat's own HEADs upstream, %.1f answers each", float64(len(own))/float64(len(heads))), heads))
		}
		if len(shadows) > 0 {
			rows = append(rows, against("a HEAD straight to upstream as each of lifeboat's arrived", shadows))
		}
		rtt50, rtt99 := percentile(rtt, 50), percentile(rtt, 99)
		rows = append(rows, fmt.Sprintf("%s (%d/%d/%d samples): revalidated p50 %8s p99 %8s; within tagTTL p50 %8s p99 %8s; "+
			"straight to upstream p50 %8s p99 %8s; revalidated - within tagTTL = p50 %8s p99 %8s = the round trip + %s; "+
			"by lifeboat's own clock the round trip + p50 %8s p99 %8s",
			l.name, len(samples[direct]), len(samples[cachedAnswer]), len(samples[revalidated]),
			r(p50[revalidated]), r(p99[revalidated]), r(p50[cachedAnswer]), r(p99[cachedAnswer]), r(p50[direct]), r(p99[direct]),
			r(p50[revalidated]-p50[cachedAnswer]), r(p99[revalidated]-p99[cachedAnswer]), added(rtt),
			r(percentile(own, 50)-rtt50), r(percentile(own, 99)-rtt99)))
	}
	return rows
}

// loggedDurations are the durations of the manifest HEADs in a lifeboat's
// JSON log lines with message msg: "request" (its access lines) or
// "upstream call" (at debug level, the HEADs it sent upstream).
func loggedDurations(logs, msg string) []time.Duration {
	var out []time.Duration
	for line := range strings.Lines(logs) {
		var l struct {
			Msg      string `json:"msg"`
			Method   string `json:"method"`
			Path     string `json:"path"`
			Duration int64  `json:"duration"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == msg && l.Method == http.MethodHead && strings.Contains(l.Path, "/manifests/") {
			out = append(out, time.Duration(l.Duration))
		}
	}
	return out
}

// bursts sends bursts of n HEADs of u at once for d, each burst after the
// last answer of the one before and a pause, and returns every request's
// latency. With alongside set, a HEAD of alongside leaves with each burst;
// its latencies are returned apart.
func bursts(b testing.TB, n int, d, pause time.Duration, u, alongside string) (lat, along []time.Duration) {
	for stop := time.Now().Add(d); time.Now().Before(stop); {
		out := make([]time.Duration, n+1) // 0: failed
		var ready, wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n + 1 {
			if i == n && alongside == "" {
				break
			}
			target := u
			if i == n {
				target = alongside
			}
			ready.Add(1)
			wg.Go(func() {
				ready.Done()
				<-start
				took, err := timedRequest(http.MethodHead, target)
				if err != nil {
					b.Error(err)
					return
				}
				out[i] = took
			})
		}
		ready.Wait()
		close(start)
		wg.Wait()
		for _, took := range out[:n] {
			if took > 0 {
				lat = append(lat, took)
			}
		}
		if out[n] > 0 {
			along = append(along, out[n])
		}
		time.Sleep(pause)
	}
	return lat, along
}

// addedInterval is the 95% bootstrap interval of the p-th percentile of
// revalidated minus those of cached and roundTrip, each set resampled on
// its own as if its samples were independent. They are not (the answers
// of one HEAD share its round trip; a round shares the machine's state),
// so this is the least the figure would move in another run: runs differ
// by more, and the spread over runs is the figure to trust.
func addedInterval(revalidated, cached, roundTrip []time.Duration, p int) (lo, hi time.Duration) {
	rng := rand.New(rand.NewPCG(1, 2)) // the same resamples every time
	const n = 1000
	got := resampledPercentiles(rng, revalidated, p, n)
	for _, other := range [][]time.Duration{cached, roundTrip} {
		for i, d := range resampledPercentiles(rng, other, p, n) {
			got[i] -= d
		}
	}
	slices.Sort(got)
	return got[n*25/1000], got[n*975/1000]
}

// resampledPercentiles is the p-th percentile (as percentile takes it) of
// each of n resamples of samples, with replacement and of its size. A
// resample is counted, not sorted: a set of half a million cached answers
// takes a second, not a minute.
func resampledPercentiles(rng *rand.Rand, samples []time.Duration, p, n int) []time.Duration {
	x := slices.Sorted(slices.Values(samples))
	k := len(x) * p / 100 // the (k+1)-th smallest
	counts := make([]int32, len(x))
	out := make([]time.Duration, n)
	for i := range out {
		clear(counts)
		for range x {
			counts[rng.IntN(len(x))]++
		}
		seen := 0
		for j, c := range counts {
			if seen += int(c); seen > k {
				out[i] = x[j]
				break
			}
		}
	}
	return out
}

// percentile is the p-th percentile of samples (which it sorts).
func percentile(samples []time.Duration, p int) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	slices.Sort(samples)
	return samples[len(samples)*p/100]
}
