// Package upstreamtest starts a real upstream registry (go-containerregistry's
// in-memory registry) behind a fault-injecting handler, and seeds it with
// random images: on loopback (Start), or on an in-memory Network for tests
// in a testing/synctest bubble (StartOn). It is for tests only.
package upstreamtest

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Mode is how the upstream misbehaves.
type Mode string

const (
	// OK: a working registry.
	OK Mode = "ok"
	// Hang: accept the request and never answer until the client leaves.
	Hang Mode = "hang"
	// StallBody: send the headers and half the body of GETs of manifests
	// and blobs, then stall until the client leaves. HEADs are answered.
	StallBody Mode = "stall-body"
	// DieMidBody: send the headers and half the body of GETs of manifests
	// and blobs, then close the connection.
	DieMidBody Mode = "die-mid-body"
	// Status500 … Status504 answer every request with that status.
	Status500 Mode = "500"
	Status502 Mode = "502"
	Status503 Mode = "503"
	Status504 Mode = "504"
	// Status429 answers 429 with Retry-After: 30.
	Status429 Mode = "429"
	// Slow: 100ms before each answer, then about 256 KiB/s.
	Slow Mode = "slow"
	// TokenDown and TokenHang: the registry rejects every token it issued
	// (401 with its challenge) and the token service answers 503, or
	// never answers. Only meaningful with RequireToken.
	TokenDown Mode = "token-down"
	TokenHang Mode = "token-hang"
	// CorruptBodies: answer GETs of manifests and blobs with one byte
	// changed (same length, same headers).
	CorruptBodies Mode = "corrupt"
	// Unauthorized answers 401 without a challenge a client could satisfy.
	Unauthorized Mode = "401"
)

// Upstream is a running test registry.
type Upstream struct {
	// URL is the base URL, e.g. http://127.0.0.1:43210.
	URL string
	// Host is URL without the scheme.
	Host string

	srv      *httptest.Server
	client   *http.Client // reaches srv: Push, Delete, Client
	mode     atomic.Value // Mode
	mu       sync.Mutex
	requests map[string]int // by "METHOD kind", kind: manifests, blobs, tags, base, token
	byAgent  map[string]int // by "agent METHOD kind": the User-Agent's product (lifeboat, containerd)
	inflight map[string]int // requests being answered, by the same key
	peak     map[string]int // the most requests answered at once, by the same key
	rateLeft string         // if set, sent as ratelimit-remaining on manifest answers
	token    bool           // demand a bearer token from /token
	user     string         // if set, /token demands these basic credentials
	password string
	realm    string                   // if set, the challenge names this token realm instead of /token
	holds    map[string]chan struct{} // requests by key wait for the channel to close: see Hold
	noRefAPI bool                     // answer the referrers API 404: see SetReferrersAPI
}

// SetReferrersAPI turns the referrers API (OCI 1.1, on by default) off or
// on: off, it answers 404 as a registry without it does, and clients
// that push an artifact with a subject keep the referrers tag schema's
// tag (sha256-<hex>) up to date instead.
func (u *Upstream) SetReferrersAPI(on bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.noRefAPI = !on
}

// SetRateLimitRemaining makes manifest answers carry Docker Hub's
// ratelimit-remaining header with this value.
func (u *Upstream) SetRateLimitRemaining(v string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.rateLeft = v
}

// token is the one bearer token the test token service issues.
const token = "upstreamtest-token"

// RequireToken makes the registry demand a bearer token from its own token
// service at /token, as Docker Hub and ghcr.io do. With user set, the token
// service demands those basic credentials; without, tokens are anonymous.
func (u *Upstream) RequireToken(user, password string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.token, u.user, u.password = true, user, password
}

// SetTokenRealm makes the registry's challenge name realm (a URL) as its
// token service instead of its own /token: a token service elsewhere, as
// Docker Hub's auth.docker.io, or one a hostile registry chose. Serve it
// with TokenHandler.
func (u *Upstream) SetTokenRealm(realm string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.realm = realm
}

// TokenHandler answers token requests (any path, GET or POST) as the
// registry's own /token does: the same token, the same credential check,
// the same TokenDown and TokenHang modes. It is the token service for a
// realm set with SetTokenRealm.
func (u *Upstream) TokenHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.serveToken(w, r, u.mode.Load().(Mode))
	})
}

func (u *Upstream) serveToken(w http.ResponseWriter, r *http.Request, mode Mode) {
	u.mu.Lock()
	user, password := u.user, u.password
	u.mu.Unlock()
	switch mode {
	case TokenHang:
		<-r.Context().Done()
		return
	case TokenDown:
		http.Error(w, "token service unavailable", http.StatusServiceUnavailable)
		return
	}
	if user != "" {
		if gu, gp, ok := r.BasicAuth(); !ok || gu != user || gp != password {
			http.Error(w, `{"details":"incorrect username or password"}`, http.StatusUnauthorized)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"token":"`+token+`","expires_in":300}`)
}

// authorize answers the token endpoint and the bearer challenge; it reports
// whether the request was answered.
func (u *Upstream) authorize(w http.ResponseWriter, r *http.Request, mode Mode) bool {
	u.mu.Lock()
	need, realm := u.token, u.realm
	u.mu.Unlock()
	if realm == "" {
		realm = u.URL + "/token"
	}
	if r.URL.Path == "/token" {
		u.serveToken(w, r, mode)
		return true
	}
	tokenOK := r.Header.Get("Authorization") == "Bearer "+token && mode != TokenDown && mode != TokenHang
	if need && !tokenOK {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`",service="upstreamtest"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
		return true
	}
	return false
}

// Start starts an upstream registry on loopback that stops when the test
// ends.
func Start(t testing.TB) *Upstream {
	t.Helper()
	u := newUpstream()
	// URL and Host are set before the server starts: a request (even a
	// stray one, on a port another test used before) may come at once.
	u.srv = httptest.NewUnstartedServer(u.wrap(u.registry()))
	u.Host = u.srv.Listener.Addr().String()
	u.URL = "http://" + u.Host
	// A client of its own: other tests close the default transport's
	// connections (go-containerregistry does on some paths).
	u.client = &http.Client{Transport: &http.Transport{}}
	u.srv.Start()
	t.Cleanup(u.Stop)
	return u
}

// StartOn starts an upstream registry on an in-memory network, for a test
// in a testing/synctest bubble (see Network): call it inside the bubble,
// and give the proxy's client n.DialContext. It stops when the test ends.
func StartOn(t testing.TB, n *Network) *Upstream {
	t.Helper()
	u := newUpstream()
	u.client = n.Client()
	u.srv = n.Server(t, u.wrap(u.registry()), false)
	u.URL = u.srv.URL
	u.Host = strings.TrimPrefix(u.URL, "http://")
	t.Cleanup(u.Stop)
	return u
}

func newUpstream() *Upstream {
	u := &Upstream{requests: map[string]int{}, byAgent: map[string]int{}, inflight: map[string]int{}, peak: map[string]int{}}
	u.mode.Store(OK)
	return u
}

func (u *Upstream) registry() http.Handler {
	return ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)), ggcrregistry.WithReferrersSupport(true))
}

// Client is an HTTP client that reaches the upstream, for a test's own
// requests (a blob upload, a manifest PUT).
func (u *Upstream) Client() *http.Client { return u.client }

// SetMode switches how the upstream behaves from now on. Open connections
// are closed so that no client keeps talking to the old behaviour.
func (u *Upstream) SetMode(m Mode) {
	u.mode.Store(m)
	u.srv.CloseClientConnections()
}

// Stop closes the listener: further connections are refused.
func (u *Upstream) Stop() {
	u.srv.CloseClientConnections()
	u.srv.Close()
	u.client.CloseIdleConnections()
}

// Hold makes requests with key ("GET manifests", "GET token") wait, once
// counted, until release is called or their client leaves: a test can then
// gather concurrent callers before any answer arrives.
func (u *Upstream) Hold(key string) (release func()) {
	gate := make(chan struct{})
	u.mu.Lock()
	if u.holds == nil {
		u.holds = map[string]chan struct{}{}
	}
	u.holds[key] = gate
	u.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			u.mu.Lock()
			delete(u.holds, key)
			u.mu.Unlock()
			close(gate)
		})
	}
}

// InFlight is how many requests with key are being answered (or held) now.
func (u *Upstream) InFlight(key string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.inflight[key]
}

// Requests counts requests seen, by "METHOD kind" (e.g. "GET blobs").
func (u *Upstream) Requests(key string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.requests[key]
}

// RequestsFrom counts requests seen from one client, by the product name
// its User-Agent starts with ("lifeboat", "containerd") and "METHOD kind".
func (u *Upstream) RequestsFrom(agent, key string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.byAgent[agent+" "+key]
}

// Peak is the most requests with this key ("GET blobs") answered at once.
func (u *Upstream) Peak(key string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.peak[key]
}

func requestKind(path string) string {
	switch {
	case strings.Contains(path, "/manifests/"):
		return "manifests"
	case strings.Contains(path, "/blobs/"):
		return "blobs"
	case strings.HasSuffix(path, "/tags/list"):
		return "tags"
	case strings.Contains(path, "/referrers/"):
		return "referrers"
	case path == "/token":
		return "token"
	}
	return "base"
}

func (u *Upstream) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Method + " " + requestKind(r.URL.Path)
		u.mu.Lock()
		u.requests[key]++
		agent, _, _ := strings.Cut(r.UserAgent(), "/")
		u.byAgent[agent+" "+key]++
		u.inflight[key]++
		u.peak[key] = max(u.peak[key], u.inflight[key])
		defer func() {
			u.mu.Lock()
			u.inflight[key]--
			u.mu.Unlock()
		}()
		if u.rateLeft != "" && requestKind(r.URL.Path) == "manifests" {
			w.Header().Set("Ratelimit-Remaining", u.rateLeft)
		}
		gate, noRefAPI := u.holds[key], u.noRefAPI
		u.mu.Unlock()

		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		mode := u.mode.Load().(Mode)
		content := requestKind(r.URL.Path) == "manifests" || requestKind(r.URL.Path) == "blobs"
		switch mode {
		case Hang:
			<-r.Context().Done()
			return
		case Status500, Status502, Status503, Status504, Status429:
			code, _ := strconv.Atoi(string(mode))
			if mode == Status429 {
				w.Header().Set("Retry-After", "30")
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_, _ = io.WriteString(w, `{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}`)
			return
		case Unauthorized:
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		case Slow:
			time.Sleep(100 * time.Millisecond)
			w = &throttled{ResponseWriter: w}
		}
		if u.authorize(w, r, mode) {
			return
		}
		if noRefAPI && requestKind(r.URL.Path) == "referrers" {
			http.Error(w, `{"errors":[{"code":"NAME_UNKNOWN","message":"no referrers API"}]}`, http.StatusNotFound)
			return
		}
		switch {
		case mode == CorruptBodies && r.Method == http.MethodGet && content:
			c := &buffered{ResponseWriter: w}
			next.ServeHTTP(c, r)
			c.flush()
		case mode == StallBody && r.Method == http.MethodGet && content:
			c := &buffered{ResponseWriter: w}
			next.ServeHTTP(c, r)
			c.stall(r)
		case mode == DieMidBody && r.Method == http.MethodGet && content:
			c := &buffered{ResponseWriter: w}
			next.ServeHTTP(c, r)
			c.die()
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// throttled writes about 256 KiB/s.
type throttled struct{ http.ResponseWriter }

func (t *throttled) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), 16<<10)
		m, err := t.ResponseWriter.Write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		if f, ok := t.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		p = p[n:]
		time.Sleep(60 * time.Millisecond)
	}
	return written, nil
}

// buffered holds a response so it can be corrupted or stalled.
type buffered struct {
	http.ResponseWriter
	buf    []byte
	status int
}

func (c *buffered) WriteHeader(code int) { c.status = code }
func (c *buffered) Write(p []byte) (int, error) {
	c.buf = append(c.buf, p...)
	return len(p), nil
}

// stall sends the headers and half the buffered body, then waits for the
// client to leave.
func (c *buffered) stall(r *http.Request) {
	if c.status != 0 {
		c.ResponseWriter.WriteHeader(c.status)
	}
	_, _ = c.ResponseWriter.Write(c.buf[:len(c.buf)/2])
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	<-r.Context().Done()
}

// die sends the headers and half the buffered body, then drops the
// connection.
func (c *buffered) die() {
	if c.status != 0 {
		c.ResponseWriter.WriteHeader(c.status)
	}
	_, _ = c.ResponseWriter.Write(c.buf[:len(c.buf)/2])
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	panic(http.ErrAbortHandler)
}

// flush sends the buffered body with its last byte flipped.
func (c *buffered) flush() {
	if len(c.buf) > 0 {
		c.buf[len(c.buf)-1] ^= 0xff
	}
	if c.status != 0 {
		c.ResponseWriter.WriteHeader(c.status)
	}
	_, _ = c.ResponseWriter.Write(c.buf)
}

// Push writes an image or index to repo:tag on the upstream.
func (u *Upstream) Push(t testing.TB, repoTag string, img any) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(u.Host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	switch v := img.(type) {
	case v1.Image:
		err = remote.Write(ref, v, remote.WithTransport(u.client.Transport))
	case v1.ImageIndex:
		err = remote.WriteIndex(ref, v, remote.WithTransport(u.client.Transport))
	default:
		t.Fatalf("Push: %T is neither an image nor an index", img)
	}
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

// RandomImage is an image of layers random layers of size bytes each.
func RandomImage(t testing.TB, size, layers int64) v1.Image {
	t.Helper()
	img, err := random.Image(size, layers)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// MultiArchIndex is an OCI index of one random image per platform.
func MultiArchIndex(t testing.TB, size int64, platforms ...v1.Platform) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		img, err := random.Image(size, 2)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			t.Fatal(err)
		}
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	return idx
}

// Delete removes repo:tag from the upstream.
func (u *Upstream) Delete(t testing.TB, repoTag string) {
	t.Helper()
	ref, err := name.ParseReference(u.Host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(ref, remote.WithTransport(u.client.Transport)); err != nil {
		t.Fatalf("delete %s: %v", ref, err)
	}
}
