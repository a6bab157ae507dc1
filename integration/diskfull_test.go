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
	"syscall"
	"testing"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDiskFullDuringAFill puts the data directory on a 4 MiB tmpfs and pulls
// a 2 MiB blob from a slow upstream; once the download has started,
// another file takes the rest of the disk (as kubelet's or containerd's
// would): the disk fills mid-download, the client still gets every byte
// (relayed from memory, verified), and nothing partial is kept.
// A blob announced larger than the free space is refused before a byte is
// written (no_space, 503).
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
	img := upstreamtest.RandomImage(t, 2<<20, 1)
	up.Push(t, "big:v1", img)
	huge := upstreamtest.RandomImage(t, 6<<20, 1)
	up.Push(t, "huge:v1", huge)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	lb := startLifeboat(t, dataDir, "--upstream", upstreamName+"="+up.URL, "--min-free-disk", "0", "--disk-reserve", "1KiB")

	hl, _ := huge.Layers()
	hd, _ := hl[0].Digest()
	resp, err := http.Get(lb.URL + "/v2/huge/blobs/" + hd.String())
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "a blob announced larger than the free disk is refused")
	assert.Contains(t, scrape(t, lb), `lifeboat_proxy_fills_total{registry="upstream.test",result="no_space"} 1`)

	up.SetMode(upstreamtest.Slow) // about 256 KiB/s: 8 s for the blob
	resp, err = http.Get(lb.URL + "/v2/big/blobs/" + ld.String())
	require.NoError(t, err)
	filler := filepath.Join(dataDir, "filler")
	fill, err := os.Create(filler)
	require.NoError(t, err)
	_, err = io.Copy(fill, io.LimitReader(zeros{}, 8<<20))
	require.ErrorIs(t, err, syscall.ENOSPC, "the filler takes the rest of the disk")
	fill.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	require.NoError(t, err, "the client gets the whole blob although the disk is full")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, ld.Hex, hex.EncodeToString(h.Sum(nil)), "and it is the right one (after %d bytes)", n)

	assert.Contains(t, scrape(t, lb), `lifeboat_proxy_fills_total{registry="upstream.test",result="disk_full"} 1`)
	require.NoError(t, os.Remove(filler))
	up.SetMode(upstreamtest.OK)
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

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
