package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Parallel layer fetch in containerd 2.x: with concurrent_layer_fetch_buffer
// of at least 512 bytes and max_concurrent_downloads above 1, the transfer
// service fetches a layer in chunks of that many bytes, max_concurrent_downloads
// at a time, each an open-ended "Range: bytes=N-" request whose body it cuts
// after the chunk (core/remotes/docker/fetcher.go, open).
const (
	fetchChunk       = 4 << 20
	fetchParallelism = 3
)

// parallelFetchConfig turns parallel layer fetch on in the transfer service
// (which CRI pulls go through unless use_local_image_pull is set), and debug
// logging so containerd's "fetching layer" lines show what it chose.
func parallelFetchConfig(config string) string {
	const transfer = "[plugins.\"io.containerd.transfer.v1.local\"]\n"
	const cri = "[plugins.\"io.containerd.cri.v1.images\"]\n"
	config = strings.Replace(config, transfer, transfer+fmt.Sprintf(
		"  max_concurrent_downloads = %d\n  concurrent_layer_fetch_buffer = %d\n", fetchParallelism, fetchChunk), 1)
	config = strings.Replace(config, cri, cri+"  use_local_image_pull = false\n", 1)
	return config + "[debug]\n  level = \"debug\"\n"
}

// gatedUpstream is a reverse proxy to the upstream that counts the GETs of
// one blob and, while closed, stops each answer of it after its first at
// bytes: lifeboat's download of it is then still running.
type gatedUpstream struct {
	*httptest.Server
	at      int64
	mu      sync.Mutex
	gets    int
	reached chan struct{} // closed when an answer stopped at the gate
	open    chan struct{} // closed to let answers through
	once    sync.Once
}

func newGatedUpstream(t *testing.T, upstream, blobPath string, at int64) *gatedUpstream {
	t.Helper()
	target, err := url.Parse(upstream)
	require.NoError(t, err)
	g := &gatedUpstream{at: at, reached: make(chan struct{}), open: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1
	rp.ModifyResponse = func(resp *http.Response) error {
		r := resp.Request
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, blobPath) {
			return nil
		}
		g.mu.Lock()
		g.gets++
		g.mu.Unlock()
		resp.Body = &gatedBody{ReadCloser: resp.Body, g: g, ctx: r.Context()}
		return nil
	}
	g.Server = httptest.NewServer(rp)
	t.Cleanup(func() { g.release(); g.Close() })
	return g
}

func (g *gatedUpstream) release() { g.once.Do(func() { close(g.open) }) }

func (g *gatedUpstream) GETs() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gets
}

type gatedBody struct {
	io.ReadCloser
	g       *gatedUpstream
	ctx     context.Context
	n       int64
	stopped sync.Once
}

func (b *gatedBody) Read(p []byte) (int, error) {
	if b.n < b.g.at {
		p = p[:min(int64(len(p)), b.g.at-b.n)]
	} else {
		select {
		case <-b.g.open:
		default:
			b.stopped.Do(func() { close(b.g.reached) })
			select {
			case <-b.g.open:
			case <-b.ctx.Done():
				return 0, b.ctx.Err()
			}
		}
	}
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// rangeRecorder is a reverse proxy to lifeboat, the mirror containerd
// pulls from, that records the Range header of each GET of one blob and
// the status lifeboat answered it with.
type rangeRecorder struct {
	*httptest.Server
	mu   sync.Mutex
	seen []rangedGET
}

type rangedGET struct {
	rng    string // the Range header, "" for none
	status int
}

func newRangeRecorder(t *testing.T, lifeboatURL, blobPath string) *rangeRecorder {
	t.Helper()
	target, err := url.Parse(lifeboatURL)
	require.NoError(t, err)
	rec := &rangeRecorder{}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1
	inner := rp.Director
	rp.Director = func(r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, blobPath) {
			rec.mu.Lock()
			rec.seen = append(rec.seen, rangedGET{rng: r.Header.Get("Range")})
			r.Header.Set("X-Recorded", strconv.Itoa(len(rec.seen)-1))
			rec.mu.Unlock()
		}
		inner(r)
	}
	rp.ModifyResponse = func(resp *http.Response) error {
		if i, err := strconv.Atoi(resp.Request.Header.Get("X-Recorded")); err == nil {
			rec.mu.Lock()
			rec.seen[i].status = resp.StatusCode
			rec.mu.Unlock()
		}
		return nil
	}
	// containerd drops each chunk's connection once it has the chunk: not
	// an error worth a log line.
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		if r.Context().Err() == nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
		}
	}
	rec.Server = httptest.NewServer(rp)
	t.Cleanup(rec.Close)
	return rec
}

func (rec *rangeRecorder) since(i int) []rangedGET {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]rangedGET(nil), rec.seen[i:]...)
}

func (rec *rangeRecorder) len() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.seen)
}

var openRange = regexp.MustCompile(`^bytes=(\d+)-$`)

// offsets are the starts of the open-ended ranges among gets; other
// shapes of Range (or none) are returned apart.
func offsets(gets []rangedGET) (open []int64, other []string) {
	for _, g := range gets {
		m := openRange.FindStringSubmatch(g.rng)
		if m == nil {
			other = append(other, fmt.Sprintf("%q", g.rng))
			continue
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		open = append(open, n)
	}
	return open, other
}

// accessLines counts lifeboat's access log lines for GETs of path, by
// status and cache outcome ("206 hit").
func accessLines(logs, blobPath string) map[string]int {
	out := map[string]int{}
	for _, line := range strings.Split(logs, "\n") {
		var l struct {
			Msg    string `json:"msg"`
			Method string `json:"method"`
			Path   string `json:"path"`
			Status int    `json:"status"`
			Cache  string `json:"cache"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.Msg != "request" || l.Method != http.MethodGet || !strings.HasSuffix(l.Path, blobPath) {
			continue
		}
		out[fmt.Sprintf("%d %s", l.Status, l.Cache)]++
	}
	return out
}

// TestContainerdParallelLayerFetch: containerd 2.x with parallel layer
// fetch on pulls a one-layer 32 MiB image over CRI through lifeboat. Every
// GET of the layer is an open-ended range (bytes=N-), chunk-aligned. Cold,
// the first (bytes=0-) arrives while lifeboat's download of the layer stands
// still part-way; an open-ended range reads to the end, so it follows the
// download in progress (the last byte held back until the digest matched)
// instead of waiting for the verified blob, which would outlast
// containerd's 30 s ResponseHeaderTimeout (core/remotes/docker/registry.go)
// on any layer slower than that; every other chunk follows the same
// download. Cached, every range is a hit. Upstream sees one GET of the layer
// in all, and containerd, which checks each blob's digest as it commits it,
// has the image.
func TestContainerdParallelLayerFetch(t *testing.T) {
	t.Parallel()
	bin := containerdBinaries(t).get(t, "2.x")
	up := upstreamtest.Start(t)
	img := upstreamtest.RandomImage(t, 32<<20, 1)
	up.Push(t, "team/big:v1", img)
	imgDigest, err := img.Digest()
	require.NoError(t, err)
	layers, err := img.Layers()
	require.NoError(t, err)
	layerDigest, err := layers[0].Digest()
	require.NoError(t, err)
	layerSize, err := layers[0].Size()
	require.NoError(t, err)
	blobPath := "/blobs/" + layerDigest.String()
	ref := upstreamName + "/team/big:v1"
	wantRepoDigest := upstreamName + "/team/big@" + imgDigest.String()

	// Lifeboat's download stops at 2.5 chunks until containerd has asked
	// for ranges beyond that.
	holdAt := int64(2*fetchChunk + fetchChunk/2)
	gate := newGatedUpstream(t, up.URL, blobPath, holdAt)
	lb := startLifeboat(t, t.TempDir(), "--upstream", upstreamName+"="+gate.URL, "--default-registry", upstreamName)
	rec := newRangeRecorder(t, lb.URL, blobPath)

	// The mirror is the only way: the fallback refuses connections, so a
	// pull that succeeds went through lifeboat.
	certs := t.TempDir()
	hosts := filepath.Join(certs, upstreamName)
	require.NoError(t, os.MkdirAll(hosts, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(hosts, "hosts.toml"), fmt.Appendf(nil,
		"server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://127.0.0.1:1", rec.URL), 0o644))

	pull := func(name string) []rangedGET {
		t.Helper()
		before := rec.len()
		c, logs, _ := startContainerdEdited(t, bin, "2.x", certs, parallelFetchConfig)
		defer c.Stop()
		got, took, err := c.pull(t, ref, 2*time.Minute)
		require.NoError(t, err, "%s pull", name)
		assert.Equal(t, wantRepoDigest, got, "%s pull", name)
		gets := rec.since(before)
		var fetching []string
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "fetching layer") && strings.Contains(line, "chunk_size=") {
				fetching = append(fetching, line[strings.Index(line, "msg="):])
			}
		}
		t.Logf("%s pull: %s; containerd: %s", name, took.Round(time.Millisecond), strings.Join(fetching, " | "))
		t.Logf("%s pull: %d GETs of the %d-byte layer: %+v", name, len(gets), layerSize, gets)
		return gets
	}

	// (a) Cold: the download stands still part-way until containerd's
	// first range of the layer has been waiting on it for a second.
	go func() {
		defer gate.release()
		select {
		case <-gate.reached:
		case <-time.After(time.Minute):
			return
		}
		for deadline := time.Now().Add(time.Minute); rec.len() == 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Second)
	}()
	cold := pull("cold")
	// A range containerd stopped reading ends its handler (and its access
	// line) a little after the pull returned.
	require.Eventually(t, func() bool {
		a := accessLines(lb.logs.String(), blobPath)
		return a["206 miss"]+a["206 hit"] >= len(cold)
	}, 10*time.Second, 10*time.Millisecond, "an access line for every cold range")
	coldAccess := accessLines(lb.logs.String(), blobPath)
	open, other := offsets(cold)
	assert.Empty(t, other, "every GET of the layer is an open-ended range")
	if assert.NotEmpty(t, open) {
		assert.Zero(t, open[0], "the first range starts the layer: %v", open)
	}
	assert.Greater(t, len(open), 2, "containerd fetched the layer in chunks: %v", open)
	for _, o := range open {
		assert.Zero(t, o%fetchChunk, "chunk offsets are multiples of the chunk size: %v", open)
	}
	for _, g := range cold {
		assert.Equal(t, http.StatusPartialContent, g.status, "%+v", cold)
	}
	assert.Equal(t, 1, gate.GETs(), "upstream GETs of the layer")
	assert.Equal(t, 2, up.Requests("GET blobs"), "upstream GETs of blobs: the config and the layer")

	// (b) Cached: a fresh containerd pulls again; lifeboat serves the
	// ranges from its file.
	cached := pull("cached")
	open, other = offsets(cached)
	assert.Empty(t, other, "every GET of the layer is an open-ended range")
	assert.Greater(t, len(open), 2, "containerd fetched the layer in chunks: %v", open)
	for _, g := range cached {
		assert.Equal(t, http.StatusPartialContent, g.status, "%+v", cached)
	}
	assert.Equal(t, 1, gate.GETs(), "upstream GETs of the layer, cold and cached")
	assert.Equal(t, 2, up.Requests("GET blobs"), "upstream GETs of blobs, cold and cached")

	// Access lines reach the pipe a little after the answers (lifeboat
	// writes them in batches, from a goroutine of their own).
	assert.Eventually(t, func() bool {
		a := accessLines(lb.logs.String(), blobPath)
		return a["206 miss"]+a["206 hit"] >= len(cold)+len(cached)
	}, 10*time.Second, 10*time.Millisecond)
	access := accessLines(lb.logs.String(), blobPath)
	t.Logf("lifeboat's access log for the layer, by status and cache: cold %v, in all %v", coldAccess, access)
	assert.Equal(t, len(cold)+len(cached), access["206 miss"]+access["206 hit"], "lifeboat answered every range 206: %v", access)
	// Cold, the ranges that came while the download was held followed it
	// (misses); one that a busy machine delayed until the download had
	// finished is a hit, and the one upstream GET above is the guarantee.
	assert.Equal(t, len(cold), coldAccess["206 miss"]+coldAccess["206 hit"], "cold, every range answered 206: %v", coldAccess)
	assert.GreaterOrEqual(t, coldAccess["206 miss"], 2, "cold, ranges followed the one download in progress: %v", coldAccess)
	assert.Equal(t, access["206 miss"], coldAccess["206 miss"], "cached, no range is a miss: %v", access)
	assert.Equal(t, len(cached), access["206 hit"]-coldAccess["206 hit"], "cached, every range is a hit: %v", access)
}
