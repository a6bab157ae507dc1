package integration

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/require"
)

// BenchmarkCluster: four lifeboat processes on loopback roll out one image
// of one LIFEBOAT_BENCH_BLOB_MIB (256) MiB layer, one node after another and
// all at once, with the cluster tier and without (four lone nodes), each
// from empty data directories, a counting proxy in front of the upstream.
// Then, with upstream stopped, an empty fifth node pulls a cached 3-layer
// image by tag from its peers. `make bench` runs it after BenchmarkWholeProcess.
func BenchmarkCluster(b *testing.B) {
	blobMiB := int64(256)
	if v, err := strconv.Atoi(os.Getenv("LIFEBOAT_BENCH_BLOB_MIB")); err == nil && v > 0 {
		blobMiB = int64(v)
	}
	for b.Loop() {
		runCluster(b, blobMiB<<20)
	}
}

func runCluster(b *testing.B, blobSize int64) {
	up := upstreamtest.Start(b)
	img := upstreamtest.RandomImage(b, blobSize, 1)
	up.Push(b, "bench/big:v1", img)
	up.Push(b, "bench/small:v1", upstreamtest.RandomImage(b, 4<<20, 3))
	layers, err := img.Layers()
	require.NoError(b, err)
	ld, err := layers[0].Digest()
	require.NoError(b, err)
	counter := newCounting(b, up.URL)
	token := writeToken(b)
	blobPath := "/v2/bench/big/blobs/" + ld.String()

	report := &strings.Builder{}
	row := func(format string, args ...any) { fmt.Fprintf(report, format+"\n", args...) }
	row("blob %d MiB; machine: %d CPUs; %s", blobSize>>20, nproc(), time.Now().UTC().Format("2006-01-02"))

	// The reference: one node pulling the blob alone.
	lone := startLifeboat(b, b.TempDir(), "--upstream", upstreamName+"="+counter.srv.URL, "--default-registry", upstreamName)
	single := fetch(b, "GET", lone.URL+blobPath, true)
	require.Equal(b, ld.String(), single.sum)
	row("one node alone: %.2fs", single.total.Seconds())
	lone.Stop(b)

	var cluster []*lifeboat
	var addrs []string
	for _, peers := range []bool{false, true} {
		for _, together := range []bool{false, true} {
			nodes := make([]*lifeboat, 4)
			addrs = []string{freeAddr(b), freeAddr(b), freeAddr(b), freeAddr(b), freeAddr(b)}
			for i := range nodes {
				if peers {
					nodes[i] = startNode(b, counter.srv.URL, token, addrs[i], addrs)
				} else {
					nodes[i] = startLifeboat(b, b.TempDir(), "--upstream", upstreamName+"="+counter.srv.URL, "--default-registry", upstreamName)
				}
			}
			counter.bytes.Store(0)
			start := time.Now()
			var wg sync.WaitGroup
			for _, n := range nodes {
				pull := func() {
					r := fetch(b, "GET", n.URL+blobPath, true)
					require.Equal(b, ld.String(), r.sum)
				}
				if together {
					wg.Go(pull)
				} else {
					pull()
				}
			}
			wg.Wait()
			wall := time.Since(start)
			how := map[bool]string{false: "one after another", true: "all at once"}[together]
			with := map[bool]string{false: "4 lone nodes", true: "4 nodes with peers"}[peers]
			row("%-18s %-17s: wall %6.2fs (%.2fx one node alone); upstream bytes %.2fx the blob",
				with, how, wall.Seconds(), wall.Seconds()/single.total.Seconds(), float64(counter.bytes.Load())/float64(blobSize))
			if peers && together {
				cluster = nodes
			} else {
				for _, n := range nodes {
					n.Stop(b)
				}
			}
		}
	}

	// The outage: the small image cached on the cluster, upstream stopped,
	// an empty node pulls it by tag.
	pullCrane(b, cluster[0], "bench/small:v1")
	up.Stop()
	empty := startNode(b, counter.srv.URL, token, addrs[4], addrs)
	start := time.Now()
	pullCrane(b, empty, "bench/small:v1")
	row("empty node, upstream down: a cached 3-layer image (3 x 4 MiB) by tag in %.3fs", time.Since(start).Seconds())
	b.Log("\n" + report.String())
}
