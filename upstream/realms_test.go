package upstream

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/lifeboat-dev/lifeboat/credentials"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// realmRequest is what a token service on another host was sent.
type realmRequest struct{ method, authorization, body string }

// tokenRealm is a token service on a host other than the registry's,
// recording every request before answering as the registry's own would.
type tokenRealm struct {
	URL  string // https://localhost:PORT/token (or http://)
	Host string // localhost:PORT

	mu   sync.Mutex
	seen []realmRequest
}

// startTokenRealm serves next (up.TokenHandler()) from another server,
// named localhost:PORT while the registry is 127.0.0.1:PORT: another host to
// lifeboat, and one go-containerregistry accepts as a realm (it refuses
// loopback IP literals unless they are the registry's own host:port).
func startTokenRealm(t *testing.T, next http.Handler, tls bool) *tokenRealm {
	t.Helper()
	r := &tokenRealm{}
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
		r.mu.Lock()
		r.seen = append(r.seen, realmRequest{req.Method, req.Header.Get("Authorization"), string(body)})
		r.mu.Unlock()
		next.ServeHTTP(w, req)
	})
	srv := httptest.NewUnstartedServer(h)
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	r.Host = "localhost:" + u.Port()
	r.URL = u.Scheme + "://" + r.Host + "/token"
	return r
}

func (r *tokenRealm) requests() []realmRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]realmRequest(nil), r.seen...)
}

const (
	realmUser     = "realm-user"
	realmPassword = "realm-password"
	identityToken = "identity-token-secret"
)

// TestCredentialsStayOffForeignRealms: a registry whose challenge names a
// token realm on another host gets that realm asked for a token, but the
// realm sees the configured credentials (Basic, or an identity token in an
// OAuth2 POST) only when the upstream's TokenRealms allow it, and never over
// plain http.
func TestCredentialsStayOffForeignRealms(t *testing.T) {
	t.Parallel()
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(realmUser+":"+realmPassword))
	basicConfig := `{"auths":{"upstream.test":{"username":"` + realmUser + `","password":"` + realmPassword + `"}}}`
	identityConfig := `{"auths":{"upstream.test":{"identitytoken":"` + identityToken + `"}}}`
	for _, tc := range []struct {
		name string
		// tokenUser: the token service demands these credentials.
		tokenUser, dockerConfig string
		plainHTTP               bool
		// allow: TokenRealms lists the realm as host:port ("port"), as a
		// bare host ("host"), or not at all ("").
		allow string
		// wantSent: the credential the realm must see; "" none.
		wantSent string
		// wantReason: "" the call succeeds, else its failure.
		wantReason string
	}{
		{name: "not allowed: no credentials, private content denied",
			tokenUser: realmUser, dockerConfig: basicConfig, wantReason: ReasonDenied},
		{name: "not allowed: public content still works, anonymously",
			dockerConfig: basicConfig},
		{name: "allowed as host:port",
			tokenUser: realmUser, dockerConfig: basicConfig, allow: "port", wantSent: basic},
		{name: "allowed as host",
			tokenUser: realmUser, dockerConfig: basicConfig, allow: "host", wantSent: basic},
		{name: "allowed but plain http: no credentials",
			tokenUser: realmUser, dockerConfig: basicConfig, plainHTTP: true, allow: "port", wantReason: ReasonDenied},
		{name: "identity token not posted to a realm not allowed",
			dockerConfig: identityConfig},
		{name: "identity token posted to an allowed realm",
			dockerConfig: identityConfig, allow: "port", wantSent: identityToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := upstreamtest.Start(t)
			img := upstreamtest.RandomImage(t, 512, 1)
			up.Push(t, "app:v1", img)
			cfgDigest, err := img.ConfigName()
			require.NoError(t, err)
			realm := startTokenRealm(t, up.TokenHandler(), !tc.plainHTTP)
			up.RequireToken(tc.tokenUser, realmPassword)
			up.SetTokenRealm(realm.URL)

			keychain, err := credentials.New(credentials.Options{DockerConfig: writeDockerConfig(t, tc.dockerConfig)})
			require.NoError(t, err)
			cfg := Config{Name: "upstream.test", URL: up.URL, InsecureSkipVerify: true}
			switch tc.allow {
			case "port":
				cfg.TokenRealms = []string{realm.Host}
			case "host":
				cfg.TokenRealms = []string{"localhost"}
			}
			c, err := New(cfg, Options{Keychain: keychain})
			require.NoError(t, err)

			_, err = c.HeadBlob(t.Context(), "app", cfgDigest.String())
			if tc.wantReason == "" {
				require.NoError(t, err)
			} else {
				var ue *Error
				require.ErrorAs(t, err, &ue)
				assert.Equal(t, tc.wantReason, ue.Reason)
			}

			seen := realm.requests()
			require.NotEmpty(t, seen, "the realm is asked for a token either way")
			sent := false
			for _, r := range seen {
				leaked := r.authorization != "" || strings.Contains(r.body, identityToken)
				if tc.wantSent == "" {
					assert.False(t, leaked, "the realm saw credentials: %+v", r)
				}
				sent = sent || r.authorization == tc.wantSent || (tc.wantSent == identityToken && strings.Contains(r.body, identityToken))
			}
			if tc.wantSent != "" {
				assert.True(t, sent, "the allowed realm got the credentials: %+v", seen)
			}
		})
	}
}

// TestCredGuardTrusted: which URLs may carry the registry's credentials.
func TestCredGuardTrusted(t *testing.T) {
	t.Parallel()
	realms, err := parseRealmHosts(append(DefaultTokenRealms("docker.io"), "token.example:8443", "[::1]"))
	require.NoError(t, err)
	base, err := url.Parse("https://registry-1.docker.io")
	require.NoError(t, err)
	g := newCredGuard("docker.io", base, "registry-1.docker.io", realms, nil, http.DefaultTransport)
	for _, tc := range []struct {
		url  string
		want bool
	}{
		{"https://registry-1.docker.io/v2/library/alpine/manifests/3", true},
		{"https://REGISTRY-1.docker.io:443/v2/", true},
		{"https://registry-1.docker.io:8443/token", true}, // the same name, proven by TLS
		{"http://registry-1.docker.io/v2/", false},        // a downgrade
		{"https://auth.docker.io/token", true},
		{"https://auth.docker.io:444/token", true}, // a bare host allows any port
		{"http://auth.docker.io/token", false},     // never over plain http
		{"https://token.example:8443/t", true},
		{"https://token.example/t", false}, // the entry named a port
		{"https://[::1]:9000/t", true},
		{"https://evil.example/token", false},
		{"https://auth.docker.io.evil.example/token", false},
		{"https://169.254.169.254/latest", false},
	} {
		u, err := url.Parse(tc.url)
		require.NoError(t, err)
		assert.Equal(t, tc.want, g.trusted(u), tc.url)
	}

	plain, err := url.Parse("http://127.0.0.1:5000")
	require.NoError(t, err)
	g = newCredGuard("local", plain, "127.0.0.1:5000", nil, nil, http.DefaultTransport)
	for _, tc := range []struct {
		url  string
		want bool
	}{
		{"http://127.0.0.1:5000/v2/", true},     // the registry itself, as configured
		{"http://127.0.0.1:5001/token", false},  // plain http elsewhere, even on its host
		{"https://127.0.0.1:5001/token", true},  // the registry's host, over https
		{"http://localhost:5000/token", false},  // another name
		{"https://localhost:5000/token", false}, // another name
	} {
		u, err := url.Parse(tc.url)
		require.NoError(t, err)
		assert.Equal(t, tc.want, g.trusted(u), tc.url)
	}
}

// TestCredGuardStripsBasicKeepsBearer: a request to a host not trusted
// loses a Basic header and keeps a Bearer one; a POST is not sent at all.
func TestCredGuardStripsBasicKeepsBearer(t *testing.T) {
	t.Parallel()
	srv := startTokenRealm(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), false)
	base, err := url.Parse("https://registry.example")
	require.NoError(t, err)
	g := newCredGuard("registry.example", base, "registry.example", nil, nil, http.DefaultTransport)
	client := &http.Client{Transport: g}
	for _, a := range []string{"Basic dTpw", "Bearer anonymous-token", "Token x"} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", a)
		resp, err := client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, a, req.Header.Get("Authorization"), "the caller's request is not modified")
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL, strings.NewReader("refresh_token=secret"))
	require.NoError(t, err)
	resp, err := client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "answered locally")

	assert.Equal(t, []realmRequest{{"GET", "", ""}, {"GET", "Bearer anonymous-token", ""}, {"GET", "", ""}}, srv.requests())
}

func TestTokenRealmsConfig(t *testing.T) {
	t.Parallel()
	assert.Equal(t, []string{"auth.docker.io"}, DefaultTokenRealms("docker.io"))
	assert.Equal(t, []string{"gitlab.com"}, DefaultTokenRealms("registry.gitlab.com"))
	assert.Equal(t, []string{"europe-docker.pkg.dev"}, DefaultTokenRealms("europe-docker.pkg.dev"))
	assert.Nil(t, DefaultTokenRealms("registry.example"))
	d := DefaultTokenRealms("docker.io")
	d[0] = "changed"
	assert.Equal(t, []string{"auth.docker.io"}, DefaultTokenRealms("docker.io"), "callers get a copy")

	for _, bad := range []string{"https://auth.docker.io", "auth.docker.io/token", "*.example", "", "user@host", ":443"} {
		_, err := New(Config{Name: "r.example", URL: "https://r.example", TokenRealms: []string{bad}}, Options{})
		assert.Error(t, err, bad)
	}
	for _, good := range []string{"auth.example", "auth.example:8443", "[::1]:443", "10.0.0.1"} {
		_, err := New(Config{Name: "r.example", URL: "https://r.example", TokenRealms: []string{good}}, Options{})
		assert.NoError(t, err, good)
	}
}

func writeDockerConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}
