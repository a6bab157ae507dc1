package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDiskFullDuringAFill puts the data directory on a 4 MiB tmpfs and pulls
// a 12 MiB blob: the disk fills mid-download, the client still gets every
// byte (relayed from memory, verified), and nothing partial is kept.
func TestDiskFullDuringAFill(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		msg := "mounting a small tmpfs for the disk-full test needs root"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dataDir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "lifeboat-test", dataDir).CombinedOutput()
	require.NoError(t, err, "mount tmpfs: %s", out)
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dataDir).Run() })

	up := upstreamtest.Start(t)
	img := upstreamtest.RandomImage(t, 12<<20, 1)
	up.Push(t, "big:v1", img)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	lb := startLifeboat(t, dataDir, "--upstream", upstreamName+"="+up.URL, "--default-registry", upstreamName, "--min-free-disk", "0")

	resp, err := http.Get(lb.URL + "/v2/big/blobs/" + ld.String())
	require.NoError(t, err)
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	require.NoError(t, err, "the client gets the whole blob although the disk is full")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, ld.Hex, hex.EncodeToString(h.Sum(nil)), "and it is the right one (after %d bytes)", n)

	assert.Contains(t, scrape(t, lb), `lifeboat_proxy_fills_total{registry="upstream.test",result="disk_full"} 1`)
	var files []string
	_ = filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() != "index.db" {
			files = append(files, path)
		}
		return nil
	})
	assert.Empty(t, files, "nothing partial is kept")

	// The space came back: a small blob is cached as usual.
	small := upstreamtest.RandomImage(t, 64<<10, 1)
	up.Push(t, "small:v1", small)
	want, _ := small.Digest()
	assert.Equal(t, want, pullCrane(t, lb, "small:v1"))
	assert.Contains(t, scrape(t, lb), `lifeboat_proxy_fills_total{registry="upstream.test",result="ok"}`)
}
