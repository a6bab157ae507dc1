package registry

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/require"
)

// The hot path: a manifest by digest and a tag HEAD within the tag TTL,
// both answered from the cache. Each is measured twice: ServeHTTP called
// directly (the handler's own CPU and allocations per request; the access
// log goes through a JSON slog handler into io.Discard, as in a cluster), and
// over loopback HTTP with b.RunParallel beside BenchmarkHotPathCeiling, a
// bare net/http handler serving the same bytes from memory: the floor any
// Go HTTP server pays.

type hotPath struct {
	srv      *httptest.Server
	h        http.Handler
	body     []byte
	byDigest string // path of the manifest by digest
	byTag    string // path of the manifest by tag
}

func newHotPath(b *testing.B) *hotPath {
	b.Helper()
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	s := newStackWith(b, stackOptions{registry: Options{Logger: log}, tagTTL: time.Hour})
	img := upstreamtest.RandomImage(b, 1024, 3)
	s.up.Push(b, "library/app:v1", img)
	md, err := img.Digest()
	require.NoError(b, err)
	hp := &hotPath{srv: s.srv, h: s.srv.Config.Handler,
		byDigest: "/v2/library/app/manifests/" + md.String(), byTag: "/v2/library/app/manifests/v1"}
	resp, body := do(b, "GET", s.srv.URL+hp.byTag, nil) // cached, and the tag confirmed, from now on
	require.Equal(b, http.StatusOK, resp.StatusCode, "%s", body)
	hp.body = body
	return hp
}

// discardWriter is the cheapest ResponseWriter: what ServeHTTP costs
// without a connection.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

func benchServe(b *testing.B, h http.Handler, method, path string) {
	b.ReportAllocs()
	req := httptest.NewRequest(method, path, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	for b.Loop() {
		w := &discardWriter{h: make(http.Header)}
		h.ServeHTTP(w, req)
		if w.status != 0 && w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
}

func BenchmarkManifestByDigestHit(b *testing.B) {
	hp := newHotPath(b)
	benchServe(b, hp.h, "GET", hp.byDigest)
}

func BenchmarkTagHeadWithinTTL(b *testing.B) {
	hp := newHotPath(b)
	benchServe(b, hp.h, "HEAD", hp.byTag)
}

// benchHTTP runs GETs (or HEADs) of url over loopback from 32 goroutines
// on at most 32 connections, as the whole-process benchmark does, and
// reports req/s.
func benchHTTP(b *testing.B, method, url string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 32}}
	b.Cleanup(client.CloseIdleConnections)
	b.ReportAllocs()
	b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(method, url, nil)
			req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

func BenchmarkHotPathHTTP(b *testing.B) {
	hp := newHotPath(b)
	ceiling := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Content-Length", strconv.Itoa(len(hp.body)))
		_, _ = w.Write(hp.body)
	}))
	b.Cleanup(ceiling.Close)
	b.Run("ceiling", func(b *testing.B) { benchHTTP(b, "GET", ceiling.URL+"/") })
	b.Run("manifest-by-digest", func(b *testing.B) { benchHTTP(b, "GET", hp.srv.URL+hp.byDigest) })
	b.Run("tag-HEAD-within-TTL", func(b *testing.B) { benchHTTP(b, "HEAD", hp.srv.URL+hp.byTag) })
}
