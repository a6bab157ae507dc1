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
	slow := newDelayed(b, up.url, 20*time.Millisecond)
	lb := startLifeboat(b, b.TempDir(), "--upstream", "bench.test="+slow.URL, "--default-registry", "bench.test")
	fetch(b, "GET", lb.URL+tagPath, false)
	cached := startLifeboat(b, b.TempDir(), "--upstream", "bench.test="+slow.URL, "--default-registry", "bench.test", "--tag-ttl", "1h")
	fetch(b, "GET", cached.URL+tagPath, false)
	for b.Loop() {
		for _, clients := range []int{1, 32} {
			_, d50, d99 := rate(b, clients, 5*time.Second, "HEAD", slow.URL+tagPath)
			_, c50, c99 := rate(b, clients, 5*time.Second, "HEAD", cached.URL+tagPath)
			_, p50, p99 := rate(b, clients, 5*time.Second, "HEAD", lb.URL+tagPath)
			r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
			fmt.Printf("%2d client(s): revalidated p50 %8s p99 %8s; within tagTTL p50 %8s p99 %8s; straight to upstream p50 %8s p99 %8s\n"+
				"              revalidating added p50 %8s p99 %8s = the round trip + p50 %8s p99 %8s\n",
				clients, r(p50), r(p99), r(c50), r(c99), r(d50), r(d99), r(p50-c50), r(p99-c99), r(p50-c50-d50), r(p99-c99-d99))
		}
	}
}
