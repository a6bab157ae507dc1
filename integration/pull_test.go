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
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const upstreamName = "upstream.test"

// pullCrane pulls repoTag through lifeboat with go-containerregistry (what
// crane does), verifies every digest, and returns the manifest digest.
func pullCrane(t testing.TB, lb *lifeboat, repoTag string) v1.Hash {
	t.Helper()
	ref, err := name.ParseReference(lb.Host+"/"+repoTag, name.Insecure)
	require.NoError(t, err)
	desc, err := remote.Get(ref, remote.WithContext(t.Context()))
	require.NoError(t, err)
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		require.NoError(t, err)
		require.NoError(t, validate.Index(idx), "index, children and blobs verify")
	} else {
		img, err := desc.Image()
		require.NoError(t, err)
		require.NoError(t, validate.Image(img), "manifest, config and layers verify")
	}
	return desc.Digest
}

// pullSkopeo copies repoTag through lifeboat into a directory with skopeo
// (which verifies every blob and keeps the manifest's bytes) and returns the
// digest of the manifest it received.
func pullSkopeo(t *testing.T, skopeo string, lb *lifeboat, repoTag string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	cmd := exec.CommandContext(t.Context(), skopeo, "copy", "--src-tls-verify=false", "--retry-times=0",
		"docker://"+lb.Host+"/"+repoTag, "dir:"+dst)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "skopeo copy: %s", out)
	raw, err := os.ReadFile(filepath.Join(dst, "manifest.json"))
	require.NoError(t, err)
	sum := sha256.Sum256(raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func TestPullThroughLifeboatWithCraneAndSkopeo(t *testing.T) {
	t.Parallel()
	skopeo := requireTool(t, "skopeo", "apt-get install -y skopeo")
	up := upstreamtest.Start(t)
	img := upstreamtest.RandomImage(t, 1<<20, 3)
	up.Push(t, "team/app:v1", img)
	idx := upstreamtest.MultiArchIndex(t, 256<<10, v1.Platform{OS: "linux", Architecture: "amd64"}, v1.Platform{OS: "linux", Architecture: "arm64"})
	up.Push(t, "team/multi:v1", idx)
	imgDigest, _ := img.Digest()
	idxDigest, _ := idx.Digest()

	dataDir := t.TempDir()
	lb := startLifeboat(t, dataDir, "--upstream", upstreamName+"="+up.URL, "--default-registry", upstreamName)

	start := time.Now()
	assert.Equal(t, imgDigest, pullCrane(t, lb, "team/app:v1"))
	cold := time.Since(start)
	start = time.Now()
	assert.Equal(t, imgDigest, pullCrane(t, lb, "team/app:v1"))
	warm := time.Since(start)
	start = time.Now()
	direct, err := name.ParseReference(up.Host+"/team/app:v1", name.Insecure)
	require.NoError(t, err)
	directImg, err := remote.Image(direct)
	require.NoError(t, err)
	require.NoError(t, validate.Image(directImg))
	t.Logf("3 MiB image: direct pull %s, through lifeboat cold %s, warm %s", time.Since(start), cold, warm)

	assert.Equal(t, idxDigest, pullCrane(t, lb, "team/multi:v1"))
	assert.Equal(t, imgDigest.String(), pullSkopeo(t, skopeo, lb, "team/app:v1"))

	// Upstream gone: everything cached still pulls, by tag and by digest.
	up.Stop()
	assert.Equal(t, imgDigest, pullCrane(t, lb, "team/app:v1"))
	assert.Equal(t, idxDigest, pullCrane(t, lb, "team/multi:v1"))
	assert.Equal(t, imgDigest, pullCrane(t, lb, "team/app@"+imgDigest.String()))
	assert.Equal(t, imgDigest.String(), pullSkopeo(t, skopeo, lb, "team/app:v1"))

	resp, _ := lb.get(t, t.Context(), http.MethodHead, "/v2/team/app/manifests/v1")
	assert.Equal(t, "stale", resp.Header.Get("X-Lifeboat-Cache"))
	resp, body := lb.get(t, t.Context(), http.MethodGet, "/v2/team/app/manifests/v2")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "an uncached tag fails fast with upstream down: %s", body)

	// Restart on the same data directory, upstream still gone.
	lb.Stop(t)
	lb = startLifeboat(t, dataDir, "--upstream", upstreamName+"="+up.URL, "--default-registry", upstreamName)
	assert.Equal(t, imgDigest, pullCrane(t, lb, "team/app:v1"))
	assert.Equal(t, idxDigest, pullCrane(t, lb, "team/multi:v1"))
	assert.Equal(t, imgDigest.String(), pullSkopeo(t, skopeo, lb, "team/app:v1"))

	metrics := scrape(t, lb)
	// (Every series exists from the start, at 0: check the counts.)
	assert.Positive(t, countMetric(metrics, `lifeboat_proxy_stale_responses_total{reason="refused",registry="upstream.test"}`))
	assert.Positive(t, countMetric(metrics, `lifeboat_registry_requests_total{kind="blob",method="GET",result="hit"}`))
	assertStoreVerified(t, dataDir)
}

func TestBadInputIsRefusedAndNothingBadIsStored(t *testing.T) {
	t.Parallel()
	up := upstreamtest.Start(t)
	img := upstreamtest.RandomImage(t, 64<<10, 2)
	up.Push(t, "app:v1", img)
	dataDir := t.TempDir()
	lb := startLifeboat(t, dataDir, "--upstream", upstreamName+"="+up.URL, "--default-registry", upstreamName)
	imgDigest, _ := img.Digest()
	layers, _ := img.Layers()
	layerDigest, _ := layers[0].Digest()

	for _, tc := range []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"unknown ns", "GET", "/v2/app/manifests/v1?ns=registry.example.com", 403, "DENIED"},
		{"dot-dot in name", "GET", "/v2/app/../../etc/manifests/v1", 400, "NAME_INVALID"},
		{"encoded dot-dot", "GET", "/v2/app/%2e%2e/%2e%2e/etc/manifests/v1", 400, "NAME_INVALID"},
		{"long name", "GET", "/v2/" + strings.Repeat("a/", 130) + "b/manifests/v1", 400, "NAME_INVALID"},
		{"short digest", "GET", "/v2/app/blobs/sha256:abcd", 400, "DIGEST_INVALID"},
		{"digest path traversal", "GET", "/v2/app/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd", 400, "DIGEST_INVALID"},
		{"no algorithm", "GET", "/v2/app/manifests/" + strings.Repeat("a", 64) + ":x", 400, "DIGEST_INVALID"},
		{"push", "PUT", "/v2/app/manifests/v2", 405, "UNSUPPORTED"},
		{"delete", "DELETE", "/v2/app/manifests/" + imgDigest.String(), 405, "UNSUPPORTED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := lb.get(t, t.Context(), tc.method, tc.path)
			assert.Equal(t, tc.status, resp.StatusCode, "%s", body)
			assert.Contains(t, string(body), `"code":"`+tc.code+`"`)
		})
	}

	// Upstream corrupts every body: lifeboat refuses and stores nothing.
	up.SetMode(upstreamtest.CorruptBodies)
	resp, body := lb.get(t, t.Context(), "GET", "/v2/app/manifests/v1")
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
	assert.Contains(t, string(body), `"code":"DIGEST_INVALID"`)
	resp, err := http.Get(lb.URL + "/v2/app/blobs/" + layerDigest.String())
	require.NoError(t, err)
	body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		// The stream began before the digest could be checked: it must be
		// cut short so the client's own check fails, never complete.
		require.Error(t, err, "a corrupt stream is cut, not completed")
		assert.Less(t, int64(len(body)), resp.ContentLength)
	} else {
		assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
		assert.Contains(t, string(body), `"code":"DIGEST_INVALID"`)
	}
	assertStoreVerified(t, dataDir)
	blobs := 0
	_ = filepath.WalkDir(filepath.Join(dataDir, "blobs"), func(_ string, d fs.DirEntry, _ error) error {
		if d != nil && !d.IsDir() {
			blobs++
		}
		return nil
	})
	assert.Zero(t, blobs, "nothing from a corrupting upstream was stored")

	up.SetMode(upstreamtest.OK)
	assert.Equal(t, imgDigest, pullCrane(t, lb, "app:v1"), "once upstream heals the pull works")
	metrics := scrape(t, lb)
	assert.Positive(t, countMetric(metrics, `lifeboat_proxy_digest_mismatches_total{kind="manifest",registry="upstream.test"}`)+
		countMetric(metrics, `lifeboat_proxy_digest_mismatches_total{kind="blob",registry="upstream.test"}`))
}

// assertStoreVerified re-hashes every stored blob against its file name.
func assertStoreVerified(t *testing.T, dataDir string) {
	t.Helper()
	err := filepath.WalkDir(filepath.Join(dataDir, "blobs"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		assert.Equal(t, d.Name(), hex.EncodeToString(h.Sum(nil)), "stored blob %s matches its digest", path)
		return nil
	})
	require.NoError(t, err)
}

func scrape(t *testing.T, lb *lifeboat) string {
	t.Helper()
	resp, err := http.Get(lb.MetricsURL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}
