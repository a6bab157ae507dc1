package credentials

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The test binary is also the fake plugin and the fake helper: linked into
// a directory under their names, it acts as what it is called.
func TestMain(m *testing.M) {
	switch base := filepath.Base(os.Args[0]); {
	case strings.HasPrefix(base, "docker-credential-"):
		os.Exit(fakeHelper())
	case strings.HasPrefix(base, "fake-provider"):
		os.Exit(fakePlugin())
	}
	os.Exit(m.Run())
}

// fakeState is the directory the fakes read their behaviour from and log
// their calls to: FAKE_STATE, set in the plugin's config env or the
// helper's environment.
func fakeState(name string) string {
	b, _ := os.ReadFile(filepath.Join(os.Getenv("FAKE_STATE"), name))
	return strings.TrimSpace(string(b))
}

func fakeLog(line string) {
	f, err := os.OpenFile(filepath.Join(os.Getenv("FAKE_STATE"), "calls"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err == nil {
		fmt.Fprintln(f, line)
		f.Close()
	}
}

// fakePlugin answers a CredentialProviderRequest: mode (ok, hang, error,
// garbage), creds (user:pass), key (cacheKeyType), duration (cacheDuration,
// none if empty) and match (the auth entry's key) come from FAKE_STATE.
func fakePlugin() int {
	in, _ := io.ReadAll(os.Stdin)
	fakeLog(strings.Join(os.Args[1:], " ") + " " + string(in))
	switch fakeState("mode") {
	case "hang":
		time.Sleep(time.Hour)
	case "error":
		fmt.Fprintln(os.Stderr, "metadata service unreachable")
		return 1
	case "garbage":
		fmt.Println("not json")
		return 0
	}
	var req struct{ APIVersion, Image string }
	_ = json.Unmarshal(in, &req)
	user, pass, _ := strings.Cut(fakeState("creds"), ":")
	resp := map[string]any{
		"kind": "CredentialProviderResponse", "apiVersion": req.APIVersion, "cacheKeyType": fakeState("key"),
		"auth": map[string]any{fakeState("match"): map[string]string{"username": user, "password": pass}},
	}
	if d := fakeState("duration"); d != "" {
		resp["cacheDuration"] = d
	}
	_ = json.NewEncoder(os.Stdout).Encode(resp)
	return 0
}

// fakeHelper is a docker credential helper: "get" with the server URL on
// stdin; mode (ok, hang, error, notfound) and creds from FAKE_STATE.
func fakeHelper() int {
	in, _ := io.ReadAll(os.Stdin)
	fakeLog(filepath.Base(os.Args[0]) + " " + strings.Join(os.Args[1:], " ") + " " + string(in))
	switch fakeState("mode") {
	case "hang":
		time.Sleep(time.Hour)
	case "error":
		fmt.Println("keychain locked")
		return 1
	case "notfound":
		fmt.Println("credentials not found in native keychain")
		return 1
	}
	user, secret, _ := strings.Cut(fakeState("creds"), ":")
	_ = json.NewEncoder(os.Stdout).Encode(map[string]string{"ServerURL": string(in), "Username": user, "Secret": secret})
	return 0
}

// fake is a test's fake plugin or helper: its directory and state.
type fake struct {
	t          *testing.T
	dir, state string
}

// newFake links the test binary into a directory as name.
func newFake(t *testing.T, name string) *fake {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	f := &fake{t: t, dir: t.TempDir(), state: t.TempDir()}
	require.NoError(t, os.Symlink(self, filepath.Join(f.dir, name)))
	return f
}

func (f *fake) set(name, value string) {
	f.t.Helper()
	require.NoError(f.t, os.WriteFile(filepath.Join(f.state, name), []byte(value), 0o600))
}

// calls are the fake's runs so far, one line each.
func (f *fake) calls() []string {
	b, _ := os.ReadFile(filepath.Join(f.state, "calls"))
	return strings.Split(strings.TrimSpace(string(b)), "\n")[:strings.Count(string(b), "\n")]
}
