package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Kill stops lifeboat with SIGKILL: no flush, no cleanup.
func (lb *lifeboat) Kill(t testing.TB) {
	t.Helper()
	_ = lb.cmd.Process.Kill()
	err := <-lb.done
	lb.done <- err
}

// lifeboatCLI runs the built binary with args and returns its exit code and
// output.
func lifeboatCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	require.NoError(t, err)
	return 0, out.String()
}

// pullQuietly pulls through lifeboat and reports success; errors are
// expected while lifeboat is being killed.
func pullQuietly(lb *lifeboat, repoTag string) error {
	ref, err := name.ParseReference(lb.Host+"/"+repoTag, name.Insecure)
	if err != nil {
		return err
	}
	img, err := remote.Image(ref, remote.WithRetryBackoff(remote.Backoff{Steps: 1}))
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = bytes.NewBuffer(nil).ReadFrom(rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// TestKillNineAtAnyMomentLeavesAVerifiedStore kills lifeboat with SIGKILL
// again and again while it fills and while it evicts, then checks that
// verify finds nothing wrong and that every image still pulls.
func TestKillNineAtAnyMomentLeavesAVerifiedStore(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	var images []v1.Image
	for i := range 6 {
		img := upstreamtest.RandomImage(t, 512<<10, 2)
		up.Push(t, fmt.Sprintf("app:v%d", i), img)
		images = append(images, img)
	}
	dataDir := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "lifeboat.yaml")
	// A cap of about three images and an eviction pass every 50ms, so that
	// kills land during eviction as well as during fills.
	require.NoError(t, os.WriteFile(cfg, []byte("maxSize: 3MiB\nminFreeDisk: 0\neviction:\n  interval: 50ms\n  keepRecent: 1ms\n"), 0o644))
	args := []string{"--config", cfg, "--upstream", upstreamName + "=" + up.URL, "--default-registry", upstreamName}
	for round := range 8 {
		// Slow rounds: kills land mid-fill. Fast rounds: the cache goes
		// over its cap and kills land during eviction.
		mode := upstreamtest.OK
		if round%2 == 0 {
			mode = upstreamtest.Slow
		}
		up.SetMode(mode)
		lb := startLifeboat(t, dataDir, args...)
		var wg sync.WaitGroup
		for i := range images {
			wg.Go(func() { _ = pullQuietly(lb, fmt.Sprintf("app:v%d", i)) })
		}
		time.Sleep(time.Duration(100+rand.IntN(600)) * time.Millisecond)
		lb.Kill(t)
		wg.Wait()
		t.Logf("round %d (%s): killed", round, mode)
	}

	code, out := lifeboatCLI(t, "verify", "--data-dir", dataDir)
	assert.Equal(t, 0, code, "verify after repeated kill -9: %s", out)
	t.Logf("verify: %s", out)

	up.SetMode(upstreamtest.OK)
	lb := startLifeboat(t, dataDir, args...)
	for i, img := range images {
		want, _ := img.Digest()
		assert.Equal(t, want, pullCrane(t, lb, fmt.Sprintf("app:v%d", i)), "image %d pulls after the kills", i)
	}
	require.Eventually(t, func() bool {
		return countMetric(scrape(t, lb), `lifeboat_cache_evicted_blobs_total{reason="lru"}`) > 0
	}, 10*time.Second, 50*time.Millisecond, "six images over a three-image cap: eviction ran")
	assert.LessOrEqual(t, countMetric(scrape(t, lb), "lifeboat_cache_size_bytes"), float64(3<<20), "and kept the cache under its cap")
	lb.Stop(t)
	code, out = lifeboatCLI(t, "verify", "--data-dir", dataDir)
	assert.Equal(t, 0, code, "verify after a clean stop: %s", out)
}

func TestAdminCommandsAgainstARunningLifeboat(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	idx := upstreamtest.MultiArchIndex(t, 64<<10, v1.Platform{OS: "linux", Architecture: "amd64"}, v1.Platform{OS: "linux", Architecture: "arm64"})
	up.Push(t, "multi:v1", idx)
	dataDir := t.TempDir()
	lb := startLifeboat(t, dataDir, "--upstream", upstreamName+"="+up.URL, "--default-registry", upstreamName)

	code, out := lifeboatCLI(t, "prefetch", "--data-dir", dataDir, "--admin", lb.AdminURL, "--platform", "linux/arm64", "--pin", upstreamName+"/multi:v1")
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, "linux/arm64 manifest")
	assert.NotContains(t, out, "linux/amd64")

	code, out = lifeboatCLI(t, "ls", "--data-dir", dataDir, "--admin", lb.AdminURL, "-o", "json")
	require.Equal(t, 0, code, out)
	var imgs []struct {
		Digest string   `json:"digest"`
		Tags   []string `json:"tags"`
		Pinned []string `json:"pinned"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &imgs))
	require.Len(t, imgs, 1)
	d, _ := idx.Digest()
	assert.Equal(t, d.String(), imgs[0].Digest)
	assert.Equal(t, []string{upstreamName + "/multi:v1"}, imgs[0].Tags)
	assert.NotEmpty(t, imgs[0].Pinned)

	code, out = lifeboatCLI(t, "unpin", "--data-dir", dataDir, "--admin", lb.AdminURL, upstreamName+"/multi:v1")
	require.Equal(t, 0, code, out)
	code, out = lifeboatCLI(t, "ls", "--data-dir", dataDir, "--admin", lb.AdminURL, "-o", "json")
	require.Equal(t, 0, code, out)
	assert.NotContains(t, out, `"pinned"`, "unpinned")
	code, _ = lifeboatCLI(t, "unpin", "--data-dir", dataDir, "--admin", lb.AdminURL, upstreamName+"/multi:v1")
	assert.Equal(t, 1, code, "unpinning what is not pinned is an error")

	code, out = lifeboatCLI(t, "gc", "--data-dir", dataDir, "--admin", lb.AdminURL, "--dry-run")
	require.Equal(t, 0, code, out)
	code, out = lifeboatCLI(t, "verify", "--data-dir", dataDir, "--admin", lb.AdminURL)
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, "0 damaged")

	resp, err := http.Get(lb.MetricsURL + "/admin/images")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "the admin API is not on the metrics listener Prometheus reaches")

	code, out = lifeboatCLI(t, "ls", "--data-dir", dataDir, "--admin", "http://127.0.0.1:1")
	assert.Equal(t, 1, code, "a held data dir with no admin endpoint is a clear error, not a hang")
	assert.Contains(t, out, "no lifeboat answers on --admin http://127.0.0.1:1")
}

func TestPrefetchOnADataDirWithNoLifeboatRunning(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	img := upstreamtest.RandomImage(t, 64<<10, 2)
	up.Push(t, "app:v1", img)
	dataDir := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "lifeboat.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf("defaultRegistry: %s\nupstreams:\n  - name: %s\n    url: %s\n", upstreamName, upstreamName, up.URL)), 0o644))

	code, out := lifeboatCLI(t, "prefetch", "--data-dir", dataDir, "--config", cfg, "--pin", upstreamName+"/app:v1")
	require.Equal(t, 0, code, out)
	code, out = lifeboatCLI(t, "ls", "--data-dir", dataDir)
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, upstreamName+"/app:v1")
	assert.Contains(t, out, "yes", "pinned")

	// Served from that cache with upstream gone.
	up.Stop()
	lb := startLifeboat(t, dataDir, "--config", cfg)
	want, _ := img.Digest()
	assert.Equal(t, want, pullCrane(t, lb, "app:v1"))
}
