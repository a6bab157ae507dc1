package registry

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// logBuffer collects JSON log lines from the handler, safe for concurrent
// use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewJSONHandler(b, nil)) }

// lines returns the access lines logged so far, decoded.
func (b *logBuffer) lines(t *testing.T) (raw []string, decoded []map[string]any) {
	t.Helper()
	b.mu.Lock()
	text := b.buf.String()
	b.mu.Unlock()
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "%s", sc.Text())
		raw, decoded = append(raw, sc.Text()), append(decoded, m)
	}
	return raw, decoded
}

// metricValue is the value of the counter name with exactly these labels,
// 0 if there is no such series.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestClientInputDoesNotBecomeLabelsOrLongLogLines reproduces the
// cardinality attack: every distinct method string a client sent became a
// label value of lifeboat_registry_requests_total, a series kept forever
// (5,000 requests with 50 KB methods: RSS from 60 to 483 MiB).
func TestClientInputDoesNotBecomeLabelsOrLongLogLines(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	s := newStackWith(t, stackOptions{registry: Options{Logger: logs.logger()}})
	long := strings.Repeat("M", 50<<10)
	longPath := "/v2/" + strings.Repeat("a/", 8<<10) + "manifests/v1"
	const n = 100
	for i := range n {
		resp, body := do(t, long+strconv.Itoa(i), s.srv.URL+longPath, nil)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%.200s", body) // the name is too long
	}
	resp, _ := do(t, "GET", s.srv.URL+"/v2/", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)

	// The series a fresh handler starts with (at zero), for comparison.
	fresh := prometheus.NewRegistry()
	newMetrics(fresh)
	start := map[string]int{}
	freshMfs, err := fresh.Gather()
	require.NoError(t, err)
	for _, mf := range freshMfs {
		start[mf.GetName()] = len(mf.GetMetric())
	}
	mfs, err := s.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "lifeboat_registry_") {
			continue
		}
		assert.LessOrEqual(t, len(mf.GetMetric()), start[mf.GetName()]+4, "%s: a series per request method", mf.GetName())
		longest := ""
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if len(l.GetValue()) > len(longest) {
					longest = l.GetValue()
				}
			}
		}
		assert.LessOrEqual(t, len(longest), 16, "%s: a label value from client input: %.40s…", mf.GetName(), longest)
	}
	assert.Equal(t, float64(n), metricValue(t, s.reg, "lifeboat_registry_requests_total",
		map[string]string{"kind": "unsupported", "method": "other", "result": "error"}))

	raw, lines := logs.lines(t)
	require.Len(t, lines, n+1, "one access line per request")
	for _, line := range raw {
		assert.Less(t, len(line), 2<<10, "an access line echoes unbounded client input: %.300s", line)
	}
	assert.True(t, strings.HasPrefix(lines[0]["method"].(string), "MMMM"), "the method is logged, clipped")
}

// TestABodyCutShortCarriesNoErrorJSON: once a blob's headers (200,
// Content-Length) are sent, an upstream that dies or stalls mid-body must
// cut the client's connection, never append an OCI error body to the blob's
// bytes, which a client could read as part of the blob.
func TestABodyCutShortCarriesNoErrorJSON(t *testing.T) {
	t.Parallel()
	for _, mode := range []upstreamtest.Mode{upstreamtest.DieMidBody, upstreamtest.StallBody} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			logs := &logBuffer{}
			s := newStackWith(t, stackOptions{registry: Options{Logger: logs.logger()}, bodyStall: 200 * time.Millisecond})
			_, path, want := s.pushImage(t, 1<<20)
			s.up.SetMode(mode)

			// The download may fail before this client joined it: then the
			// headers were not sent and the answer is an OCI error. Ask
			// again (a failed download is forgotten) until a client joined
			// in time to get the blob's headers.
			attempts := 0
			for {
				attempts++
				require.LessOrEqual(t, attempts, 20, "no client ever joined the download before it failed")
				resp, body, err := getBody(t, s.srv.URL+path)
				if resp == nil {
					// Cut before the 200's headers left the buffer: the
					// client sees the connection end, and no JSON either.
					require.Error(t, err)
					break
				}
				if resp.StatusCode != http.StatusOK {
					require.NoError(t, err)
					assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
					assert.Contains(t, string(body), `"errors"`)
					continue
				}
				assert.Equal(t, int64(len(want)), resp.ContentLength)
				require.Error(t, err, "the client must see the failure")
				assert.NotContains(t, string(body), `"errors"`)
				assert.Less(t, len(body), len(want))
				assert.True(t, bytes.HasPrefix(want, body), "what the client got is a prefix of the blob")
				break
			}

			// The access line and the metrics were written before the
			// connection was cut.
			assert.Equal(t, float64(attempts), metricValue(t, s.reg, "lifeboat_registry_requests_total",
				map[string]string{"kind": "blob", "method": "GET", "result": "error"}))
			_, lines := logs.lines(t)
			require.Len(t, lines, attempts)
			last := lines[attempts-1]
			assert.Equal(t, 200.0, last["status"])
			assert.NotEmpty(t, last["error"])
			assert.Equal(t, true, last["aborted"])
		})
	}
}

// getBody GETs url on a connection of its own and reads the body to its end
// or its first error; resp is nil when the connection ended before headers.
func getBody(t *testing.T, url string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	require.NoError(t, err)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// TestAClientThatStopsReadingIsLetGo: a client that asks for a blob and
// never reads held a socket, a handler and an open blob file forever. With
// a progress deadline on every write, the handler gives up and the
// connection is closed, for a cached blob (sent with sendfile) and for one
// streamed while it downloads.
func TestAClientThatStopsReadingIsLetGo(t *testing.T) {
	t.Parallel()
	img := upstreamtest.RandomImage(t, 8<<20, 1) // more than any socket buffer holds
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	size, err := layers[0].Size()
	require.NoError(t, err)
	for _, cached := range []bool{true, false} {
		t.Run("cached="+strconv.FormatBool(cached), func(t *testing.T) {
			t.Parallel()
			logs := &logBuffer{}
			s := newStackWith(t, stackOptions{registry: Options{Logger: logs.logger(), WriteStall: 200 * time.Millisecond}})
			s.up.Push(t, "app:v1", img)
			path := "/v2/app/blobs/" + ld.String()
			want := "miss"
			if cached {
				// Filled through the proxy, not the edge: a busy machine
				// that delays this reader past the 200 ms write stall
				// would cut it (the subject below, not of this setup).
				b, err := s.p.Blob(t.Context(), "upstream.test", "app", digest.Digest(ld.String()), true)
				require.NoError(t, err)
				body, err := io.ReadAll(b.Content)
				b.Content.Close()
				require.NoError(t, err)
				require.Len(t, body, int(size))
				want = "hit"
			}

			conn := dialSmallWindow(t, s.srv.Listener.Addr().String())
			_, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: lifeboat\r\n\r\n")
			require.NoError(t, err)
			// The client reads nothing: the handler must give up on it, and
			// write its access line (after its metrics).
			var last map[string]any
			require.Eventually(t, func() bool {
				_, lines := logs.lines(t)
				if len(lines) == 0 {
					return false
				}
				last = lines[len(lines)-1]
				return last["aborted"] == true
			}, 20*time.Second, 10*time.Millisecond, "the handler of a client that stopped reading never returned")
			aborted := map[string]string{"kind": "blob", "method": "GET", "result": "aborted"}
			assert.Equal(t, 1.0, metricValue(t, s.reg, "lifeboat_registry_requests_total", aborted))
			assert.Equal(t, path, last["path"])
			assert.Equal(t, want, last["cache"])
			assert.Contains(t, last["client_error"], "timeout")
			assert.Less(t, last["bytes"], float64(size))

			// And the connection was closed: what was in flight arrives,
			// then the end of the stream, not the rest of the blob.
			require.NoError(t, conn.SetReadDeadline(time.Now().Add(20*time.Second)))
			n, err := io.Copy(io.Discard, conn)
			var ne net.Error
			assert.False(t, errors.As(err, &ne) && ne.Timeout(), "the connection is still open: %v", err)
			assert.Less(t, n, size)

			if !cached {
				// The download went on without the client: now a hit.
				resp, _ := do(t, "HEAD", s.srv.URL+path, nil)
				assert.Equal(t, http.StatusOK, resp.StatusCode)
			}
		})
	}
}

// dialSmallWindow connects with a receive buffer of a few KiB, so that a
// client that does not read fills the server's socket buffers quickly.
func dialSmallWindow(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
	conn, err := d.DialContext(t.Context(), "tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// TestOpenEndedRangeFollowsADownload: containerd 2.1+ fetches a layer in
// parallel chunks, each an open-ended range (bytes=N-), the first before any
// other. Such a range reads to the end, so it follows the download in
// progress (the last byte still held back until the digest matched) rather
// than waiting for the whole verified blob: containerd gives up on headers
// after 30 s, so waiting would fail every layer that takes longer.
func TestOpenEndedRangeFollowsADownload(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, stackOptions{bodyStall: 30 * time.Second})
	_, path, want := s.pushImage(t, 1<<20)
	s.up.SetMode(upstreamtest.StallBody) // half the blob, then nothing until the client leaves

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.srv.URL+path, nil)
	require.NoError(t, err)
	req.Header.Set("Range", "bytes=4096-")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	require.NoError(t, err, "the headers come while the download is still in progress")
	defer resp.Body.Close()
	assert.Equal(t, http.StatusPartialContent, resp.StatusCode)
	assert.Equal(t, fmt.Sprintf("bytes 4096-%d/%d", len(want)-1, len(want)), resp.Header.Get("Content-Range"))
	got := make([]byte, 64<<10)
	_, err = io.ReadFull(resp.Body, got)
	require.NoError(t, err, "bytes the upstream sent arrive before the download ends")
	assert.Equal(t, want[4096:4096+len(got)], got)
}
