// Package integration drives the built lifeboat binary with real clients
// against a real upstream registry on loopback. Nothing here reaches the
// internet.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var binary string // the lifeboat binary built by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lifeboat-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "lifeboat")
	if b := os.Getenv("LIFEBOAT_BINARY"); b != "" {
		// A lifeboat built elsewhere (a release, an older commit): how
		// make bench compares before and after with one harness. A
		// relative path is taken from the repository root, where make
		// runs.
		if !filepath.IsAbs(b) {
			b = filepath.Join("..", b)
		}
		if binary, err = filepath.Abs(b); err == nil {
			_, err = os.Stat(binary)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "LIFEBOAT_BINARY:", err)
			os.Exit(1)
		}
	} else {
		build := mainModuleGo("build", "-o", binary, "./cmd/lifeboat")
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building lifeboat:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// mainModuleGo runs go in the repository root with GOWORK=off, so that what
// it builds (lifeboat, mkimage) uses lifeboat's own go.mod, as the Dockerfile
// does, not this test module's larger set of requirements.
func mainModuleGo(args ...string) *exec.Cmd {
	cmd := exec.Command("go", args...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "GOWORK=off")
	return cmd
}

// requireTool finds a command-line tool on PATH or in $(go env GOPATH)/bin
// (where go install puts helm): a test that needs a missing tool fails in
// CI and skips elsewhere, naming the command that installs it.
func requireTool(t *testing.T, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(gopath))) {
			if p := filepath.Join(dir, "bin", name); isExecutable(p) {
				return p
			}
		}
	}
	msg := fmt.Sprintf("%s not found; install it with: %s", name, install)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// lifeboat is a running lifeboat process.
type lifeboat struct {
	URL, Host, MetricsURL string
	AdminURL              string
	DataDir               string
	cmd                   *exec.Cmd
	logs                  *syncBuffer
	done                  chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// maxLogBytes bounds what a syncBuffer keeps of a process's output (a load
// test makes a lot of it); the rest is counted as written and dropped.
const maxLogBytes = 64 << 20

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if room := maxLogBytes - s.b.Len(); room < len(p) {
		s.b.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return s.b.Write(p)
}

// take returns what the buffer holds and empties it.
func (s *syncBuffer) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.b.String()
	s.b.Reset()
	return out
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// startLifeboat runs the binary on dataDir with the given extra flags and
// waits until it is ready. Its listeners take ports the kernel picks (no
// race with other tests for a "free" port); their addresses come from the
// "lifeboat serving" log line, printed once everything is up. It is stopped
// when the test ends.
func startLifeboat(t testing.TB, dataDir string, args ...string) *lifeboat {
	t.Helper()
	return startLifeboatEnv(t, dataDir, nil, args...)
}

// startLifeboatEnv is startLifeboat with env added to the process's
// environment.
func startLifeboatEnv(t testing.TB, dataDir string, env []string, args ...string) *lifeboat {
	t.Helper()
	lb := &lifeboat{DataDir: dataDir, logs: &syncBuffer{}, done: make(chan error, 1)}
	lb.cmd = exec.Command(binary, append([]string{"serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--admin-listen", "127.0.0.1:0", "--data-dir", dataDir, "--log-format", "json"}, args...)...)
	lb.cmd.Stdout, lb.cmd.Stderr = lb.logs, lb.logs
	lb.cmd.Env = append(append(os.Environ(), "DOCKER_CONFIG="+t.TempDir(), "HOME="+t.TempDir()), env...)
	require.NoError(t, lb.cmd.Start())
	go func() { lb.done <- lb.cmd.Wait() }()
	t.Cleanup(func() {
		lb.Stop(t)
		if t.Failed() {
			t.Logf("lifeboat logs:\n%s", lb.logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, line := range strings.Split(lb.logs.String(), "\n") {
			var serving struct {
				Msg           string `json:"msg"`
				Listen        string `json:"listen"`
				MetricsListen string `json:"metrics_listen"`
				AdminListen   string `json:"admin_listen"`
			}
			if json.Unmarshal([]byte(line), &serving) != nil || serving.Msg != "lifeboat serving" {
				continue
			}
			lb.Host = serving.Listen
			lb.URL = "http://" + serving.Listen
			lb.MetricsURL = "http://" + serving.MetricsListen
			lb.AdminURL = "http://" + serving.AdminListen
			return lb
		}
		select {
		case err := <-lb.done:
			lb.done <- err
			t.Fatalf("lifeboat exited before it was ready: %v\n%s", err, lb.logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("lifeboat not ready after 30s:\n%s", lb.logs.String())
		}
	}
}

// Stop sends SIGTERM and waits for a clean exit.
func (lb *lifeboat) Stop(t testing.TB) {
	t.Helper()
	if lb.cmd.ProcessState != nil {
		return
	}
	_ = lb.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-lb.done:
		lb.done <- err
		if err != nil && !strings.Contains(err.Error(), "signal") {
			t.Errorf("lifeboat exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		_ = lb.cmd.Process.Kill()
		t.Errorf("lifeboat did not stop within 30s of SIGTERM")
	}
}

func (lb *lifeboat) get(t *testing.T, ctx context.Context, method, path string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, lb.URL+path, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	require.NoError(t, err)
	return resp, b.Bytes()
}
