package integration

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const clusterToken = "cluster-test-token-0123456789"

// startNode runs one lifeboat of a static cluster: its peer API on self,
// every node listed in all.
func startNode(t testing.TB, upURL, tokenFile, self string, all []string, extra ...string) *lifeboat {
	t.Helper()
	return startLifeboat(t, t.TempDir(), append([]string{"--upstream", upstreamName + "=" + upURL, "--default-registry", upstreamName,
		"--peer-listen", self, "--peers", strings.Join(all, ","), "--peer-token-file", tokenFile}, extra...)...)
}

func writeToken(t testing.TB) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(f, []byte(clusterToken+"\n"), 0o600))
	return f
}

func blobCount(t *testing.T, img v1.Image) int {
	layers, err := img.Layers()
	require.NoError(t, err)
	return len(layers) + 1
}

// TestClusterSharesCaches: three lifeboat processes with --peers and one
// upstream. Pulled cold on A, then B and C, the image costs upstream each
// blob once. With upstream stopped, a brand-new node D pulls it by tag
// (served stale, reason peer) and by digest from its peers, and so does
// containerd over CRI through another new node E.
func TestClusterSharesCaches(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	img := upstreamtest.RandomImage(t, 512<<10, 3)
	up.Push(t, "team/app:v1", img)
	token := writeToken(t)
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)}
	nodes := make([]*lifeboat, 3)
	for i := range nodes {
		nodes[i] = startNode(t, up.URL, token, addrs[i], addrs)
	}

	before := up.Requests("GET blobs")
	var digest v1.Hash
	for i, n := range nodes {
		start := time.Now()
		digest = pullCrane(t, n, "team/app:v1")
		t.Logf("node %c: pulled in %s", 'A'+i, time.Since(start).Round(time.Millisecond))
	}
	assert.Equal(t, blobCount(t, img), up.Requests("GET blobs")-before, "upstream served each blob once in all")
	received := 0.0
	for _, n := range nodes {
		received += countMetric(scrape(t, n), "lifeboat_peer_received_bytes_total")
	}
	assert.Positive(t, received, "nodes got blobs from their peers")

	up.Stop()
	d := startNode(t, up.URL, token, addrs[3], addrs)
	start := time.Now()
	assert.Equal(t, digest, pullCrane(t, d, "team/app:v1"), "an empty node pulls by tag during the outage")
	t.Logf("node D (empty, upstream down): pulled by tag in %s", time.Since(start).Round(time.Millisecond))
	pullCrane(t, d, "team/app@"+digest.String())
	resp, _ := d.get(t, t.Context(), http.MethodGet, "/v2/team/app/manifests/v1")
	assert.Equal(t, "stale", resp.Header.Get("X-Lifeboat-Cache"))
	assert.Equal(t, 1.0, countMetric(scrape(t, d), `lifeboat_proxy_stale_responses_total{reason="peer",registry="upstream.test"}`))

	t.Run("containerd", func(t *testing.T) {
		bins := containerdBinaries(t)
		e := freeAddr(t)
		lbE := startNode(t, "http://127.0.0.1:1", token, e, append(addrs, e))
		for _, version := range []string{"1.6", "2.x"} {
			c := startContainerd(t, bins.get(t, version), version, upstreamName, lbE.URL, "http://127.0.0.1:1")
			got, took, err := c.pull(t, upstreamName+"/team/app:v1", time.Minute)
			require.NoError(t, err, "containerd %s pulls through an empty node while upstream is down", version)
			assert.Equal(t, upstreamName+"/team/app@"+digest.String(), got)
			t.Logf("containerd %s through empty node E, upstream down: %s", version, took.Round(time.Millisecond))
			c.Stop()
		}
	})
}

// TestPeerSecurity: the peer listener answers nothing without the token,
// and the registry listener refuses every peer API path.
func TestPeerSecurity(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	img := upstreamtest.RandomImage(t, 64<<10, 1)
	up.Push(t, "team/app:v1", img)
	token := writeToken(t)
	self := freeAddr(t)
	lb := startNode(t, up.URL, token, self, []string{self})
	pullCrane(t, lb, "team/app:v1")
	layers, err := img.Layers()
	require.NoError(t, err)
	ld, err := layers[0].Digest()
	require.NoError(t, err)
	peerPath := "/v2/_lifeboat/" + upstreamName + "/team/app/blobs/" + ld.String()

	get := func(url, auth string) *http.Response {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		require.NoError(t, err)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	for _, auth := range []string{"", "Bearer wrong", "Basic " + clusterToken} {
		resp := get("http://"+self+peerPath, auth)
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "auth %q", auth)
		assert.Empty(t, resp.Header.Get("Docker-Content-Digest"))
		assert.Equal(t, http.StatusUnauthorized, get("http://"+self+"/v2/team/app/manifests/v1", auth).StatusCode)
	}
	assert.Equal(t, http.StatusOK, get("http://"+self+peerPath, "Bearer "+clusterToken).StatusCode)
	for _, auth := range []string{"", "Bearer " + clusterToken} {
		resp := get(lb.URL+peerPath, auth)
		assert.GreaterOrEqual(t, resp.StatusCode, 400, "the registry listener never answers a peer path (auth %q)", auth)
	}
}

// TestDeadPeerCost: a peer that never accepts a connection costs a pull
// one dial timeout (200ms), once; then its breaker is open.
func TestDeadPeerCost(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	up.Push(t, "team/app:v1", upstreamtest.RandomImage(t, 64<<10, 6))
	token := writeToken(t)
	self, dead := freeAddr(t), blackhole(t)
	lb := startNode(t, up.URL, token, self, []string{self, dead}, "--peer-replicas", "2")
	start := time.Now()
	pullCrane(t, lb, "team/app:v1")
	took := time.Since(start)
	t.Logf("pull with a blackholed owner: %s", took.Round(time.Millisecond))
	assert.Less(t, took, 2*time.Second)
	m := scrape(t, lb)
	errs := countMetric(m, `lifeboat_peer_requests_total{kind="blob",result="error"}`) + countMetric(m, `lifeboat_peer_requests_total{kind="manifest",result="error"}`)
	open := countMetric(m, `lifeboat_peer_requests_total{kind="blob",result="circuit_open"}`) + countMetric(m, `lifeboat_peer_requests_total{kind="manifest",result="circuit_open"}`)
	t.Logf("dead peer: %v requests failed, %v not sent (breaker open)", errs, open)
	assert.LessOrEqual(t, errs, 1.0, "the dead peer is tried once")
}
