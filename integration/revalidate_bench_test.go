package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/require"
)

// BenchmarkTagRevalidation is part 5 of BenchmarkWholeProcess on its own:
// what revalidating a tag (tagTTL 0) adds to the answer, against an
// upstream 20 ms away, in 7 rounds of 2 s per measurement (see
// revalidationRows).
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
//
// Three loads, each in rounds of length round (a burst round: as many
// bursts as fit), the three ways taking turns, each first in turn, so that
// a slower spell of a shared machine falls on all of them; the
// percentiles are over every round's samples:
//   - 1 client, one request after another;
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
	slow := newDelayed(b, upstreamURL, 20*time.Millisecond)
	lb := startLifeboat(b, b.TempDir(), "--upstream", "bench.test="+slow.URL, "--default-registry", "bench.test")
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
		{"1 client", func(way int) []time.Duration { return requestLoops(b, 1, round, "HEAD", urls[way]) }},
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
	var rtt50, rtt99 time.Duration
	for li, l := range loads {
		samples := make([][]time.Duration, len(urls))
		var own []time.Duration // the revalidated answers' durations in lifeboat's access log
		for k := range rounds {
			for j := range urls {
				way := (k + j) % len(urls) // each way first in turn
				if way == revalidated {
					lb.logs.take()
				}
				samples[way] = append(samples[way], l.run(way)...)
				if way == revalidated {
					time.Sleep(100 * time.Millisecond) // the last access lines on their way through the pipe
					own = append(own, loggedDurations(b, lb.logs.take())...)
				}
			}
		}
		var p50, p99 [3]time.Duration
		for i, s := range samples {
			p50[i], p99[i] = percentile(s, 50), percentile(s, 99)
		}
		if li == 0 {
			rtt50, rtt99 = p50[direct], p99[direct]
		}
		require.NotZero(b, rtt50)
		r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
		// Each "+ p99" is a difference of p99s, not the p99 of a difference.
		if len(burstRTT) > 0 {
			b50, b99 := percentile(burstRTT, 50), percentile(burstRTT, 99)
			rows = append(rows, fmt.Sprintf("%s: a HEAD straight to upstream sent with each burst (%d samples) p50 %8s p99 %8s; "+
				"revalidated - within tagTTL = that round trip + p50 %8s p99 %8s; by lifeboat's own clock that round trip + p50 %8s p99 %8s",
				l.name, len(burstRTT), r(b50), r(b99), r(p50[revalidated]-p50[cachedAnswer]-b50), r(p99[revalidated]-p99[cachedAnswer]-b99),
				r(percentile(own, 50)-b50), r(percentile(own, 99)-b99)))
			burstRTT = nil
		}
		rows = append(rows, fmt.Sprintf("%s (%d/%d/%d samples): revalidated p50 %8s p99 %8s; within tagTTL p50 %8s p99 %8s; "+
			"straight to upstream p50 %8s p99 %8s; revalidated - within tagTTL = p50 %8s p99 %8s = the round trip + p50 %8s p99 %8s; "+
			"by lifeboat's own clock the round trip + p50 %8s p99 %8s",
			l.name, len(samples[direct]), len(samples[cachedAnswer]), len(samples[revalidated]),
			r(p50[revalidated]), r(p99[revalidated]), r(p50[cachedAnswer]), r(p99[cachedAnswer]), r(p50[direct]), r(p99[direct]),
			r(p50[revalidated]-p50[cachedAnswer]), r(p99[revalidated]-p99[cachedAnswer]),
			r(p50[revalidated]-p50[cachedAnswer]-rtt50), r(p99[revalidated]-p99[cachedAnswer]-rtt99),
			r(percentile(own, 50)-rtt50), r(percentile(own, 99)-rtt99)))
	}
	return rows
}

// loggedDurations are the durations of the tag HEADs in a lifeboat's JSON
// access log.
func loggedDurations(b testing.TB, logs string) []time.Duration {
	var out []time.Duration
	for line := range strings.Lines(logs) {
		var l struct {
			Msg      string `json:"msg"`
			Method   string `json:"method"`
			Kind     string `json:"kind"`
			Duration int64  `json:"duration"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "request" && l.Method == http.MethodHead && l.Kind == "manifest" {
			out = append(out, time.Duration(l.Duration))
		}
	}
	require.NotEmpty(b, out, "no access line for a tag HEAD")
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

// percentile is the p-th percentile of samples (which it sorts).
func percentile(samples []time.Duration, p int) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	slices.Sort(samples)
	return samples[len(samples)*p/100]
}
