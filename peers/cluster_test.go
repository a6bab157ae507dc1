package peers

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/lifeboat-dev/lifeboat/proxy"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	testRegistry = "upstream.test"
	testToken    = "test-token-0123456789"
)

// node is one lifeboat of an in-process cluster: store, proxy, cluster
// tier and peer API on its own loopback listener.
type node struct {
	addr  string
	store *cache.Store
	p     *proxy.Proxy
	c     *Cluster
	reg   *prometheus.Registry
	up    *upstream.Client
}

// newNode starts a node whose peer API listens on ln.
func newNode(t *testing.T, up *upstreamtest.Upstream, ln net.Listener, cfg Config) *node {
	t.Helper()
	n := &node{addr: ln.Addr().String(), reg: prometheus.NewPedanticRegistry()}
	store, err := cache.Open(t.TempDir(), cache.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	cfg.Self, cfg.Registerer = n.addr, n.reg
	if cfg.Token == "" {
		cfg.Token = testToken
	}
	n.c, err = New(cfg)
	require.NoError(t, err)
	n.up, err = upstream.New(upstream.Config{Name: testRegistry, URL: up.URL,
		Timeouts: upstream.Timeouts{Request: 3 * time.Second, BodyStall: 2 * time.Second}}, upstream.Options{})
	require.NoError(t, err)
	n.p, err = proxy.New(store, proxy.Options{Upstreams: []proxy.Upstream{{Client: n.up}}, Peers: n.c, Registerer: n.reg})
	require.NoError(t, err)
	n.store = store
	srv := &http.Server{Handler: n.c.Handler(n.p)}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); n.p.Close() })
	return n
}

func listenLocal(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return ln
}

// cluster starts n nodes that know each other (and extra, if given).
func cluster(t *testing.T, up *upstreamtest.Upstream, n int, cfg Config, extra ...string) []*node {
	t.Helper()
	lns := make([]net.Listener, n)
	var all []Member
	for i := range lns {
		lns[i] = listenLocal(t)
		all = append(all, Member{Addr: lns[i].Addr().String()})
	}
	for _, e := range extra {
		all = append(all, Member{Addr: e})
	}
	nodes := make([]*node, n)
	for i, ln := range lns {
		nodes[i] = newNode(t, up, ln, cfg)
		nodes[i].c.SetMembers(all)
	}
	return nodes
}

// pull pulls repo:tag through n's proxy: the manifest, then every blob,
// each checked against its digest. It returns the manifest's source.
func pull(t *testing.T, n *node, repo, tag string) proxy.Source {
	t.Helper()
	m, err := n.p.Manifest(t.Context(), testRegistry, repo, tag)
	require.NoError(t, err)
	for _, d := range blobsOf(t, m.Body) {
		b, err := n.p.Blob(t.Context(), testRegistry, repo, d, true)
		require.NoError(t, err, "blob %s", d)
		body, err := io.ReadAll(b.Content)
		b.Content.Close()
		require.NoError(t, err)
		require.Equal(t, d, digest.FromBytes(body))
	}
	return m.Source
}

func blobsOf(t *testing.T, manifest []byte) []digest.Digest {
	var m v1.Manifest
	require.NoError(t, json.Unmarshal(manifest, &m))
	out := []digest.Digest{digest.Digest(m.Config.Digest.String())}
	for _, l := range m.Layers {
		out = append(out, digest.Digest(l.Digest.String()))
	}
	return out
}

func pushImage(t *testing.T, up *upstreamtest.Upstream, repoTag string, layers int64) v1.Image {
	img := upstreamtest.RandomImage(t, 64<<10, layers)
	up.Push(t, repoTag, img)
	return img
}

// The image is pulled on A, then B, then C: upstream serves each blob once
// in all, and B and C get it through the owners.
func TestClusterFetchesEachBlobFromUpstreamOnce(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	pushImage(t, up, "app:v1", 3)
	before := up.Requests("GET blobs")
	nodes := cluster(t, up, 3, Config{})
	for _, n := range nodes {
		pull(t, n, "app", "v1")
	}
	assert.Equal(t, 4, up.Requests("GET blobs")-before, "each of the 4 blobs fetched from upstream once in all")
	received := 0.0
	for _, n := range nodes {
		received += testutil.ToFloat64(n.c.metrics.received)
	}
	assert.Positive(t, received, "non-owners got blobs from peers")
}

// With upstream gone, a node that never saw the image pulls it by tag and
// by digest from its peers' caches; the tag is served stale.
func TestClusterOutageEmptyNode(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	pushImage(t, up, "app:v1", 3)
	lnD := listenLocal(t)
	nodes := cluster(t, up, 2, Config{}, lnD.Addr().String())
	pull(t, nodes[0], "app", "v1")
	up.Stop()

	d := newNode(t, up, lnD, Config{})
	d.c.SetMembers([]Member{{Addr: nodes[0].addr}, {Addr: nodes[1].addr}, {Addr: d.addr}})
	start := time.Now()
	assert.Equal(t, proxy.Stale, pull(t, d, "app", "v1"))
	t.Logf("empty node, upstream down: pulled by tag in %s", time.Since(start))
	m, err := d.p.Manifest(t.Context(), testRegistry, "app", "v1")
	require.NoError(t, err)
	byDigest, err := d.p.Manifest(t.Context(), testRegistry, "app", m.Digest.String())
	require.NoError(t, err)
	assert.Equal(t, proxy.Hit, byDigest.Source)
	assert.Equal(t, 1.0, gathered(t, d.reg, "lifeboat_proxy_stale_responses_total", "reason", proxy.ReasonPeer))
}

// peerGet sends a raw request to a node's peer API.
func peerGet(t *testing.T, n *node, path, token string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+n.addr+path, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// Without the token: 401, and nothing about the cache. With it: cached
// content, and no upstream fetch for a digest this node does not own.
func TestPeerAPISecurity(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	img := pushImage(t, up, "app:v1", 2)
	nodes := cluster(t, up, 2, Config{Replicas: 1})
	a := nodes[0]
	pull(t, a, "app", "v1")
	layers, err := img.Layers()
	require.NoError(t, err)
	ld, err := layers[0].Digest()
	require.NoError(t, err)
	path := "/v2/_lifeboat/" + testRegistry + "/app/blobs/" + ld.String()

	for _, token := range []string{"", "wrong-token-0123456789"} {
		resp := peerGet(t, a, path, token)
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		body, _ := io.ReadAll(resp.Body)
		assert.NotContains(t, string(body), ld.String())
		assert.Empty(t, resp.Header.Get("Docker-Content-Digest"))
	}
	resp := peerGet(t, a, path, testToken)
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	// A blob upstream has, asked of the node that does not own it: 404,
	// and upstream is not asked.
	other := pushImage(t, up, "other:v1", 1)
	ol, err := other.Layers()
	require.NoError(t, err)
	od, err := ol[0].Digest()
	require.NoError(t, err)
	var notOwner *node
	for _, n := range nodes {
		if !n.c.Owns(digest.Digest(od.String())) {
			notOwner = n
		}
	}
	require.NotNil(t, notOwner)
	before := up.Requests("GET blobs")
	resp = peerGet(t, notOwner, "/v2/_lifeboat/"+testRegistry+"/other/blobs/"+od.String(), testToken)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	assert.Equal(t, before, up.Requests("GET blobs"), "no upstream fetch for a digest this node does not own")
	// Not a registry mirrored here; not a peer path.
	assert.Equal(t, http.StatusNotFound, peerGet(t, a, "/v2/_lifeboat/elsewhere.io/app/blobs/"+ld.String(), testToken).StatusCode)
	assert.Equal(t, http.StatusNotFound, peerGet(t, a, "/metrics", testToken).StatusCode)
	assert.Equal(t, http.StatusNotFound, peerGet(t, a, "/v2/"+testRegistry+"/app/blobs/"+ld.String(), testToken).StatusCode,
		"the registry API's paths are not the peer API's")
}

// badPeer is a peer API that answers every request with the token, as an
// owner would, in one broken way.
func badPeer(t *testing.T, handle func(w http.ResponseWriter, r *http.Request)) string {
	t.Helper()
	ln := listenLocal(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Path == "/v2/" {
			return
		}
		handle(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// Peers that send wrong bytes, die mid-stream or hang: the pull succeeds
// (from upstream, or the next peer), and nothing unverified is stored.
func TestPeerFaults(t *testing.T) {
	t.Parallel()
	wrong := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "65536")
		_, _ = w.Write(make([]byte, 65536))
	}
	cut := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "65536")
		_, _ = w.Write(make([]byte, 1000))
		panic(http.ErrAbortHandler)
	}
	hang := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	for name, h := range map[string]http.HandlerFunc{"wrong bytes": wrong, "killed mid-stream": cut, "hangs": hang} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			up := upstreamtest.Start(t)
			pushImage(t, up, "app:v1", 3)
			bad := badPeer(t, h)
			// Every digest's owners are the bad peer and this node's
			// healthy neighbour, or both of them: the bad one is asked first
			// about half of the time.
			nodes := cluster(t, up, 2, Config{Replicas: 3, FirstByte: 300 * time.Millisecond}, bad)
			start := time.Now()
			pull(t, nodes[0], "app", "v1")
			pull(t, nodes[1], "app", "v1")
			assert.Less(t, time.Since(start), 3*time.Second)
			for _, n := range nodes {
				rep, err := n.store.Verify(t.Context(), false)
				require.NoError(t, err)
				assert.Empty(t, rep.Damaged, "nothing unverified stored")
				assert.Positive(t, rep.Checked)
			}
		})
	}
}

// A dead peer costs its dial timeout once; then its breaker is open and
// it is not asked again.
func TestDeadPeerCost(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	ln := listenLocal(t)
	dead := ln.Addr().String()
	ln.Close() // refused from now on
	nodes := cluster(t, up, 1, Config{Replicas: 2}, dead)
	n := nodes[0]
	// An image whose every blob (config and three layers) has the dead peer
	// as its first owner: the pull asks it for each in turn. And none has
	// this node first, so no replication (Stored, in the background) asks
	// it too: that ask raced the pull's, and when it won, the pull found
	// the circuit open and "asked once" counted no blob error.
	var img v1.Image
	for img == nil {
		cand := upstreamtest.RandomImage(t, 64<<10, 3)
		blobs := []v1.Hash{must(cand.ConfigName())}
		for _, l := range must(cand.Layers()) {
			blobs = append(blobs, must(l.Digest()))
		}
		if !slices.ContainsFunc(blobs, func(h v1.Hash) bool { return n.c.Owners(digest.Digest(h.String()))[0] != dead }) {
			img = cand
		}
	}
	up.Push(t, "app:v1", img)
	start := time.Now()
	pull(t, n, "app", "v1")
	took := time.Since(start)
	// Refused dials are quick: what proves the cost is paid once is the
	// count below; this bound only catches a pull that waits on the dead
	// peer (a dial timeout per blob, or worse), loosely enough that a
	// busy machine never trips it.
	assert.Less(t, took, 5*time.Second)
	t.Logf("first pull with a dead owner: %s", took)
	cl, err := n.c.client(dead)
	require.NoError(t, err)
	assert.True(t, cl.CircuitOpen(), "the dead peer's breaker opened")
	assert.Positive(t, testutil.ToFloat64(n.c.metrics.requests.WithLabelValues("blob", "circuit_open"))+
		testutil.ToFloat64(n.c.metrics.requests.WithLabelValues("manifest", "circuit_open")))
	assert.Equal(t, 1.0, testutil.ToFloat64(n.c.metrics.requests.WithLabelValues("blob", "error"))+
		testutil.ToFloat64(n.c.metrics.requests.WithLabelValues("manifest", "error")), "asked once")
}

// gathered is the value of the series of metric name with label=value.
func gathered(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A blob pulled on one node ends up on that node and on all R owners,
// while upstream serves it once.
func TestBlobReplicatedToItsOwners(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	img := pushImage(t, up, "app:v1", 4)
	before := up.Requests("GET blobs")
	nodes := cluster(t, up, 4, Config{Replicas: 3})
	pull(t, nodes[0], "app", "v1")
	byAddr := map[string]*node{}
	for _, n := range nodes {
		byAddr[n.addr] = n
	}
	layers, err := img.Layers()
	require.NoError(t, err)
	for _, l := range layers {
		d := digest.Digest(must(l.Digest()).String())
		for _, o := range nodes[0].c.Owners(d) {
			require.EventuallyWithT(t, func(ct *assert.CollectT) {
				_, err := byAddr[o].store.Stat(d)
				assert.NoError(ct, err, "owner %s holds %s", o, d)
			}, 10*time.Second, 20*time.Millisecond)
		}
	}
	assert.Equal(t, 5, up.Requests("GET blobs")-before, "each blob from upstream once")
}
