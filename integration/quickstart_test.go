package integration

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestQuickStart runs docs/quickstart.sh, the README's quick start, as a
// reader would, against a containerd of its own (1.6 and 2.x): a local
// registry, lifeboat, configure-containerd, crictl pull; then the registry
// stops, containerd forgets the image, and the second pull succeeds from
// lifeboat's cache. Every port is one the kernel had free.
func TestQuickStart(t *testing.T) {
	t.Parallel()
	bins := containerdBinaries(t)
	crictl := requireTool(t, "crictl", "go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0")
	requireTool(t, "curl", "apt-get install -y curl")
	for _, version := range []string{"1.6", "2.x"} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			bin := bins.get(t, version)
			hostsDir := t.TempDir()
			c, _, config := startContainerdOn(t, bin, version, hostsDir)
			dir := t.TempDir()
			_, port, err := net.SplitHostPort(freeAddr(t))
			require.NoError(t, err)
			admin := freeAddr(t)
			cmd := exec.CommandContext(t.Context(), "bash", "../docs/quickstart.sh")
			cmd.Env = append(os.Environ(),
				"QUICKSTART_DIR="+dir,
				"REGISTRY_PORT="+port,
				"LIFEBOAT_LISTEN="+freeAddr(t),
				"LIFEBOAT_HOSTS_DIR="+hostsDir,
				"CONTAINER_RUNTIME_ENDPOINT=unix://"+filepath.Join(c.dir, "c.sock"),
				"PATH="+filepath.Dir(crictl)+string(os.PathListSeparator)+os.Getenv("PATH"),
				// lifeboat's own settings: its other listeners, the admin
				// endpoint `lifeboat ls` asks, the containerd config that
				// configure-containerd checks, no docker config of the host's.
				"LIFEBOAT_METRICS_LISTEN="+freeAddr(t),
				"LIFEBOAT_ADMIN_LISTEN="+admin,
				"LIFEBOAT_ADMIN=http://"+admin,
				"LIFEBOAT_CONTAINERD_CONFIG="+config,
				"DOCKER_CONFIG="+t.TempDir(),
			)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err = cmd.Run()
			t.Logf("docs/quickstart.sh against containerd %s took %s:\n%s", version, time.Since(start).Round(100*time.Millisecond), out.String())
			lbLog, _ := os.ReadFile(filepath.Join(dir, "lifeboat.log"))
			require.NoError(t, err, "lifeboat log:\n%s", lbLog)

			image := "localhost:" + port + "/hello:v1"
			assert.Contains(t, out.String(), "pulled "+image+" with its registry stopped")
			assert.NotContains(t, out.String(), "configure-containerd: warning", "configure-containerd found containerd's config_path right")
			assert.Contains(t, string(lbLog), "serving stale content", "the second pull's tag came from the cache")
			_, err = net.DialTimeout("tcp", "localhost:"+port, time.Second)
			assert.Error(t, err, "the registry is stopped")
			st, err := c.is.ImageStatus(t.Context(), &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: image}})
			require.NoError(t, err)
			assert.NotNil(t, st.GetImage(), "containerd holds the image again")
		})
	}
}
