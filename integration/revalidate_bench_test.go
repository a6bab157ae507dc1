package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/require"
)

// BenchmarkTagRevalidation is part 5 of BenchmarkWholeProcess on its own:
// what a revalidated tag HEAD (tagTTL 0) costs against an upstream 20 ms
// away, at 1 and 32 clients, 5 s each: its latency minus that of a HEAD
// straight to the upstream (the round trip), and minus that of the same
// cached answer without revalidation (tagTTL 1h) — what revalidating adds
// to the answer, to be compared with the round trip.
func BenchmarkTagRevalidation(b *testing.B) {
	http.DefaultTransport.(*http.Transport).MaxIdleConnsPerHost = 64
	up := startRegistry(b, distribution(b), "")
	img := upstreamtest.RandomImage(b, 1024, 1)
	ref, err := name.ParseReference(strings.TrimPrefix(up.url, "http://")+"/bench/big:v1", name.Insecure)
	require.NoError(b, err)
	require.NoError(b, remote.Write(ref, img))
	const tagPath = "/v2/bench/big/manifests/v1"
	for b.Loop() {
		for _, r := range revalidationRows(b, up.url, tagPath, 5*time.Second) {
			fmt.Println(r)
		}
	}
}

// revalidationRows measures, at 1 and 32 clients for d each, a tag HEAD
// of tagPath on upstreamURL (which holds it) behind a 20 ms delay: straight
// to the delayed upstream (the round trip), through a lifeboat with tagTTL
// 1h (the cached answer) and through one that revalidates every time; one
// row per client count, with what revalidating added.
func revalidationRows(b *testing.B, upstreamURL, tagPath string, d time.Duration) []string {
	slow := newDelayed(b, upstreamURL, 20*time.Millisecond)
	lb := startLifeboat(b, b.TempDir(), "--upstream", "bench.test="+slow.URL, "--default-registry", "bench.test")
	fetch(b, "GET", lb.URL+tagPath, false)
	cached := startLifeboat(b, b.TempDir(), "--upstream", "bench.test="+slow.URL, "--default-registry", "bench.test", "--tag-ttl", "1h")
	fetch(b, "GET", cached.URL+tagPath, false)
	var rows []string
	for _, clients := range []int{1, 32} {
		_, d50, d99 := rate(b, clients, d, "HEAD", slow.URL+tagPath)
		_, c50, c99 := rate(b, clients, d, "HEAD", cached.URL+tagPath)
		_, p50, p99 := rate(b, clients, d, "HEAD", lb.URL+tagPath)
		r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
		rows = append(rows, fmt.Sprintf("%2d client(s): revalidated p50 %8s p99 %8s; within tagTTL p50 %8s p99 %8s; straight to upstream p50 %8s p99 %8s; "+
			"revalidating added p50 %8s p99 %8s = the round trip + p50 %8s p99 %8s",
			clients, r(p50), r(p99), r(c50), r(c99), r(d50), r(d99), r(p50-c50), r(p99-c99), r(p50-c50-d50), r(p99-c99-d99)))
	}
	return rows
}
