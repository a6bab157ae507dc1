package registry

import (
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/stretchr/testify/require"
)

// BenchmarkConcurrentManifestGets reports the peak heap in use (above what
// it was before, sampled every millisecond) while 100 clients GET one cached
// manifest of almost upstream.MaxManifestSize (4 MiB) at once, and read
// and discard it. The registry serves the body the proxy returns without
// copying it: what this measures is the copies the proxy and the store make
// per request.
func BenchmarkConcurrentManifestGets(b *testing.B) {
	const clients = 100
	s := newStack(b)
	img := upstreamtest.RandomImage(b, 256, 1)
	raw, err := img.RawManifest()
	require.NoError(b, err)
	pad := strings.Repeat("x", upstream.MaxManifestSize-len(raw)-64)
	img = mutate.Annotations(img, map[string]string{"pad": pad}).(v1.Image)
	s.up.Push(b, "app:big", img)
	url := s.srv.URL + "/v2/app/manifests/big"
	resp, body := do(b, "GET", url, nil) // cached from now on
	require.Equal(b, http.StatusOK, resp.StatusCode, "%.200s", body)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}

	var peak uint64
	for b.Loop() {
		runtime.GC()
		base := heapInuse()
		stop, sampled := make(chan struct{}), make(chan uint64)
		go func() { sampled <- peakHeapInuse(stop) }()
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				resp, err := client.Get(url)
				if err != nil {
					b.Error(err)
					return
				}
				defer resp.Body.Close()
				_, _ = io.Copy(io.Discard, resp.Body)
			})
		}
		wg.Wait()
		close(stop)
		if p := <-sampled; p > base {
			peak = max(peak, p-base)
		}
	}
	b.ReportMetric(float64(len(body))/(1<<20), "manifest-MiB")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}

func heapInuse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// peakHeapInuse samples HeapInuse until stop is closed and returns the
// highest value seen.
func peakHeapInuse(stop <-chan struct{}) uint64 {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	peak := heapInuse()
	for {
		select {
		case <-stop:
			return max(peak, heapInuse())
		case <-t.C:
			peak = max(peak, heapInuse())
		}
	}
}
