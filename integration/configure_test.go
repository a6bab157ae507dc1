package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// configure runs `lifeboat configure-containerd` with args and returns its
// stdout and stderr; it must exit 0.
func configure(t *testing.T, args ...string) (string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), binary, append([]string{"configure-containerd"}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "configure-containerd %v:\n%s%s", args, stdout.String(), stderr.String())
	return stdout.String(), stderr.String()
}

// manifestRequests counts the manifest requests lifeboat logged for
// registry (the ns= containerd sent).
func manifestRequests(t *testing.T, lb *lifeboat, registry string) int {
	t.Helper()
	n := 0
	for _, line := range strings.Split(lb.logs.String(), "\n") {
		var entry struct{ Msg, Kind, Registry string }
		if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "request" && entry.Kind == "manifest" && entry.Registry == registry {
			n++
		}
	}
	return n
}

// blackhole is an address whose connections are never accepted: its
// listen queue is full, so a dial hangs until the dialer gives up.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	require.NoError(t, err)
	t.Cleanup(func() { syscall.Close(fd) })
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	require.NoError(t, syscall.Listen(fd, 0))
	sa, err := syscall.Getsockname(fd)
	require.NoError(t, err)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	for i := 0; ; i++ {
		require.Less(t, i, 16, "the listen queue of %s never filled", addr)
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
	}
	return addr
}

// TestConfigureContainerd: `lifeboat configure-containerd` points a real
// containerd, 1.6 and 2.x, at lifeboat, keeping a team's own hosts.toml
// after lifeboat's host; --remove puts everything back, and containerd
// then pulls from the registry directly.
func TestConfigureContainerd(t *testing.T) {
	t.Parallel()
	bins := containerdBinaries(t)
	for _, version := range []string{"1.6", "2.x"} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			up := upstreamtest.Start(t)
			direct := up.Host // a registry named by its own address: reachable without hosts.toml
			// One image per registry name (CRI reports one repo digest per name).
			repos := map[string]string{upstreamName: "team/app", direct: "team/direct"}
			digests := map[string]string{}
			for registry, repo := range repos {
				img := upstreamtest.RandomImage(t, 128<<10, 2)
				up.Push(t, repo+":v1", img)
				d, err := img.Digest()
				require.NoError(t, err)
				digests[registry] = registry + "/" + repo + "@" + d.String()
			}
			lb := startLifeboat(t, t.TempDir(), "--upstream", upstreamName+"="+up.URL, "--upstream", direct+"="+up.URL,
				"--default-registry", upstreamName)

			// The team's own hosts.toml for upstream.test: its server, and a
			// host with a header table.
			hostsDir := t.TempDir()
			own := filepath.Join(hostsDir, upstreamName, "hosts.toml")
			ownBytes := fmt.Appendf(nil, "# the team's registry settings\nserver = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n\n[host.%q.header]\n  x-team = \"platform\"\n",
				up.URL, up.URL, up.URL)
			require.NoError(t, os.MkdirAll(filepath.Dir(own), 0o755))
			require.NoError(t, os.WriteFile(own, ownBytes, 0o644))

			c, logs, containerdConfig := startContainerdOn(t, bins.get(t, version), version, hostsDir)
			args := []string{"--hosts-dir", hostsDir, "--mirror", lb.URL, "--registries", upstreamName + "," + direct + "=" + up.URL,
				"--containerd-config", containerdConfig}
			stdout, stderr := configure(t, args...)
			assert.Empty(t, stderr, "containerd's config reads --hosts-dir: no warning")
			assert.Contains(t, stdout, upstreamName+": merged with the existing hosts of "+own+", backup at "+own+".lifeboat-backup\n")
			assert.Contains(t, stdout, direct+": wrote "+filepath.Join(hostsDir, direct, "hosts.toml")+"\n")
			merged, err := os.ReadFile(own)
			require.NoError(t, err)
			stdout, _ = configure(t, args...)
			assert.Equal(t, 2, strings.Count(stdout, ": unchanged "), "a second run changes nothing:\n%s", stdout)
			again, err := os.ReadFile(own)
			require.NoError(t, err)
			assert.Equal(t, merged, again)

			// Both registries are pulled through lifeboat: containerd accepted
			// the files, dial_timeout included.
			for _, registry := range []string{upstreamName, direct} {
				before := manifestRequests(t, lb, registry)
				got, _, err := c.pull(t, registry+"/"+repos[registry]+":v1", time.Minute)
				require.NoError(t, err, registry)
				assert.Equal(t, digests[registry], got)
				assert.Eventually(t, func() bool { return manifestRequests(t, lb, registry) > before }, 10*time.Second, 10*time.Millisecond,
					"%s was pulled through lifeboat (ns=%s)", registry, registry)
			}
			assert.NotContains(t, logs.String(), "failed to decode", "containerd %s parsed every hosts.toml", version)
			c.Stop()

			stdout, _ = configure(t, append(args, "--remove")...)
			assert.Contains(t, stdout, upstreamName+": restored "+own+" from "+own+".lifeboat-backup\n")
			assert.Contains(t, stdout, direct+": removed "+filepath.Join(hostsDir, direct, "hosts.toml")+" and its directory\n")
			restored, err := os.ReadFile(own)
			require.NoError(t, err)
			assert.Equal(t, ownBytes, restored, "the team's file, byte for byte")
			assert.NoDirExists(t, filepath.Join(hostsDir, direct))
			assert.NoFileExists(t, own+".lifeboat-backup")

			// A fresh containerd on the same directory no longer goes
			// through lifeboat, and still pulls: from the team's server, and
			// from the registry named by its own address.
			c2, _, _ := startContainerdOn(t, bins.get(t, version), version, hostsDir)
			for _, registry := range []string{upstreamName, direct} {
				before, upBefore := manifestRequests(t, lb, registry), up.Requests("HEAD manifests")+up.Requests("GET manifests")
				got, _, err := c2.pull(t, registry+"/"+repos[registry]+":v1", time.Minute)
				require.NoError(t, err, registry)
				assert.Equal(t, digests[registry], got)
				assert.Equal(t, before, manifestRequests(t, lb, registry), "%s no longer reaches lifeboat", registry)
				assert.Greater(t, up.Requests("HEAD manifests")+up.Requests("GET manifests"), upBefore, "%s pulled from upstream directly", registry)
			}
			c2.Stop()
		})
	}
}

// TestConfigureContainerdDialTimeout: the dial_timeout lifeboat writes is
// one containerd 2.x honours. With lifeboat's address accepting no
// connection, a pull falls back to the registry after about a second per
// request instead of 30 s (containerd 1.6 ignores the key and waits 30 s
// per request, so it is not run here).
func TestConfigureContainerdDialTimeout(t *testing.T) {
	t.Parallel()
	bins := containerdBinaries(t)
	up := upstreamtest.Start(t)
	img := upstreamtest.RandomImage(t, 64<<10, 1)
	up.Push(t, "team/app:v1", img)
	imgDigest, _ := img.Digest()

	hostsDir := t.TempDir()
	configure(t, "--hosts-dir", hostsDir, "--mirror", "http://"+blackhole(t), "--dial-timeout", "500ms",
		"--registries", upstreamName+"="+up.URL, "--containerd-config", "")
	c, _, _ := startContainerdOn(t, bins.get(t, "2.x"), "2.x", hostsDir)
	got, took, err := c.pull(t, upstreamName+"/team/app:v1", 20*time.Second)
	require.NoError(t, err)
	assert.Equal(t, upstreamName+"/team/app@"+imgDigest.String(), got)
	// Four requests (resolve, manifest, config, layer), each dialling the
	// dead mirror for 500ms first.
	assert.Less(t, took, 10*time.Second)
	t.Logf("containerd 2.x: pull with lifeboat unreachable (dial_timeout 500ms) took %s", took.Round(time.Millisecond))
}
