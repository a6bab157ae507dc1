package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// doctorRun runs `lifeboat doctor` and returns its exit code and output.
func doctorRun(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.CommandContext(t.Context(), binary, append([]string{"doctor"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), out.String()
	}
	require.NoError(t, err)
	return 0, out.String()
}

// TestDoctorRealContainerd: lifeboat doctor against a real containerd, 1.6
// and 2.x. containerd reads config_path only at start: one started with
// another config_path, whose file was then fixed, still bypasses lifeboat,
// and doctor says so (from CRI Status on 1.6, from the introspection
// service on 2.x) until containerd restarts. Then a miss during an outage:
// what containerd prints for lifeboat's 503 (the troubleshooting table).
func TestDoctorRealContainerd(t *testing.T) {
	t.Parallel()
	bins := containerdBinaries(t)
	for _, version := range []string{"1.6", "2.x"} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			bin := bins.get(t, version)
			up := upstreamtest.Start(t)
			up.Push(t, "team/app:v1", upstreamtest.RandomImage(t, 64<<10, 1))
			lb := startLifeboat(t, t.TempDir(), "--upstream", upstreamName+"="+up.URL)
			hostsDir, elsewhere := t.TempDir(), t.TempDir()

			c, _, config := startContainerdOn(t, bin, version, elsewhere)
			configure(t, "--hosts-dir", hostsDir, "--mirror", lb.URL, "--registries", upstreamName+"="+up.URL, "--containerd-config", "")
			raw, err := os.ReadFile(config)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(config, bytes.ReplaceAll(raw, []byte(elsewhere), []byte(hostsDir)), 0o644))

			args := []string{"--runtime", "containerd", "--hosts-dir", hostsDir, "--containerd-config", config,
				"--containerd-socket", filepath.Join(c.dir, "c.sock"), "--mirror", lb.URL, "--metrics", lb.MetricsURL,
				"--registries", upstreamName + "=" + up.URL, "--data-dir", lb.DataDir}
			code, out := doctorRun(t, args...)
			t.Logf("doctor, containerd not restarted:\n%s", out)
			assert.Equal(t, 1, code, out)
			assert.Contains(t, out, "OK   containerd config: "+config+" sets config_path = \""+hostsDir+"\"")
			assert.Contains(t, out, "OK   "+upstreamName+" hosts.toml: ")
			assert.Contains(t, out, "FAIL containerd loaded: ")
			assert.Contains(t, out, "runs with config_path \""+elsewhere+"\", not \""+hostsDir+"\" as "+config+" now says: it was started before the file changed; fix: restart containerd")
			assert.Contains(t, out, "OK   lifeboat registry: ")
			assert.Contains(t, out, "OK   upstream "+upstreamName+": "+up.URL+"/v2/ answers 200 OK; lifeboat's circuit closed")

			c.Stop()
			c, _, config = startContainerdOn(t, bin, version, hostsDir)
			args[5], args[7] = config, filepath.Join(c.dir, "c.sock")
			code, out = doctorRun(t, args...)
			t.Logf("doctor, containerd restarted:\n%s", out)
			assert.Equal(t, 0, code, out)
			assert.Contains(t, out, "OK   containerd loaded: ")
			assert.Contains(t, out, "runs with config_path \""+hostsDir+"\"")

			// A miss while upstream is down: lifeboat answers 503 with its
			// reason; containerd then tries server, down too.
			up.Stop()
			_, _, err = c.pull(t, upstreamName+"/team/app:v2", 30*time.Second)
			require.Error(t, err)
			t.Logf("containerd %s, a miss during an outage: %v", version, err)
			// containerd resolves a tag with HEAD: the answer has no body, so
			// it prints the status only (1.6: "pulling from host <lifeboat>
			// failed with status code [manifests v2]: 503 Service
			// Unavailable"; 2.x: "unexpected status from HEAD request to
			// <lifeboat URL>: 503 Service Unavailable"), naming lifeboat even
			// though it tried the registry after it. The reason is in
			// lifeboat's request log line.
			assert.Contains(t, err.Error(), "503 Service Unavailable")
			assert.Contains(t, err.Error(), lb.Host)
			// (The access line is written a moment after the answer.)
			assert.Eventually(t, func() bool {
				return strings.Contains(lb.logs.String(), "upstream "+upstreamName+" unavailable (refused) and the content is not cached")
			}, 10*time.Second, 10*time.Millisecond, "lifeboat's log:\n%s", lb.logs.String())
		})
	}
}
