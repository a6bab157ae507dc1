package integration

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestImageBuiltWithoutDocker builds lifeboat's image with cmd/mkimage (no
// Docker engine), pushes it to a registry, pulls it with a real containerd
// through lifeboat, and runs `lifeboat version` from the unpacked rootfs.
func TestImageBuiltWithoutDocker(t *testing.T) {
	t.Parallel()
	bins := containerdBinaries(t)
	dir := t.TempDir()
	static := filepath.Join(dir, "lifeboat")
	build := mainModuleGo("build", "-trimpath", "-ldflags", "-X main.version=image-test", "-o", static, "./cmd/lifeboat")
	build.Env = append(build.Env, "CGO_ENABLED=0", "GOOS=linux")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	up := upstreamtest.Start(t)
	mk := mainModuleGo("run", "./cmd/mkimage", "--binary", static, "--version", "image-test",
		"--tarball", filepath.Join(dir, "image.tar"), "--push", up.Host+"/lifeboat:test")
	out, err = mk.CombinedOutput()
	require.NoError(t, err, "mkimage: %s", out)
	assert.FileExists(t, filepath.Join(dir, "image.tar"))

	lb := startLifeboat(t, t.TempDir(), "--upstream", upstreamName+"="+up.URL, "--default-registry", upstreamName)
	c := startContainerd(t, bins.get(t, "2.x"), "2.x", upstreamName, lb.URL, up.URL)
	got, took, err := c.pull(t, upstreamName+"/lifeboat:test", time.Minute)
	require.NoError(t, err)
	assert.Equal(t, upstreamName+"/lifeboat@"+strings.TrimSpace(lastLine(string(out))), got)
	t.Logf("pulled the image through lifeboat in %s", took)

	bins2, err := filepath.Glob(filepath.Join(c.dir, "root", "io.containerd.snapshotter.v1.native", "snapshots", "*", "lifeboat"))
	require.NoError(t, err)
	require.Len(t, bins2, 1, "the image's rootfs holds /lifeboat")
	assert.FileExists(t, filepath.Join(filepath.Dir(bins2[0]), "etc", "ssl", "certs", "ca-certificates.crt"), "the image can verify https upstreams")
	ver, err := exec.Command(bins2[0], "version").CombinedOutput()
	require.NoError(t, err, "%s", ver)
	assert.Contains(t, string(ver), "lifeboat image-test")
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
