package main

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	cdx "github.com/CycloneDX/cyclonedx-go"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

const installHelm = "go install helm.sh/helm/v3/cmd/helm@v3.22.0"

// helmBinary is helm on PATH or in $(go env GOPATH)/bin; without it the
// test fails in CI and is skipped elsewhere, naming the install command.
func helmBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "helm")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := "helm not found on PATH or in $(go env GOPATH)/bin; install it with: " + installHelm
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestMakeRelease runs `make release` into a temporary directory, as a
// release is made, and checks what a cluster admin would before trusting
// it: static binaries for each architecture, an image index with both
// platforms whose images hold exactly those binaries, a chart that deploys
// that index by digest, SHA256SUMS that verify, and an SBOM that parses and
// lists what the binaries link.
func TestMakeRelease(t *testing.T) {
	t.Parallel()
	helm := helmBinary(t)
	const version = "0.0.0-ci.1"
	a := artifacts{version}
	dist := t.TempDir()
	out, err := exec.CommandContext(t.Context(), "make", "-C", "..", "release",
		"VERSION="+version, "DIST="+dist, "HELM="+helm).CombinedOutput()
	require.NoError(t, err, "make release:\n%s", out)
	t.Logf("make release:\n%s", out)

	binSums := map[string]string{} // arch -> sha256 of the released binary
	for _, arch := range arches {
		t.Run("binary/"+arch, func(t *testing.T) {
			bin := filepath.Join(dist, a.binary(arch))
			assertStatic(t, bin, arch)
			binSums[arch] = sha256File(t, bin)
		})
	}
	digest := checkImage(t, filepath.Join(dist, a.image()), binSums)
	t.Run("a copy keeps the digest", func(t *testing.T) { checkCopy(t, filepath.Join(dist, a.image()), digest) })
	t.Run("chart pins the image", func(t *testing.T) { checkChart(t, helm, filepath.Join(dist, a.chart()), version, digest) })
	t.Run("SHA256SUMS", func(t *testing.T) { checkSums(t, dist) })
	t.Run("SBOM", func(t *testing.T) {
		checkSBOM(t, filepath.Join(dist, a.sbom()), filepath.Join(dist, a.binary("amd64")), binSums)
	})
}

// assertStatic: an ELF executable for arch with no dynamic loader and no
// dynamic section, built with cgo off and lifeboat's version stamped.
func assertStatic(t *testing.T, bin, arch string) {
	t.Helper()
	f, err := elf.Open(bin)
	require.NoError(t, err)
	defer f.Close()
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	assert.Equal(t, want, f.Machine)
	assert.Equal(t, elf.ET_EXEC, f.Type, "a static executable, not a PIE needing a loader")
	for _, p := range f.Progs {
		assert.NotEqual(t, elf.PT_INTERP, p.Type, "no dynamic loader")
		assert.NotEqual(t, elf.PT_DYNAMIC, p.Type, "no shared libraries")
	}
	bi, err := buildinfo.ReadFile(bin)
	require.NoError(t, err)
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	assert.Equal(t, "0", settings["CGO_ENABLED"])
	assert.Equal(t, "linux", settings["GOOS"])
	assert.Equal(t, arch, settings["GOARCH"])
	assert.Equal(t, "true", settings["-trimpath"])
	assert.Equal(t, "github.com/lifeboat-dev/lifeboat/cmd/lifeboat", bi.Path)
}

// checkImage opens the OCI layout tarball, checks its index and returns
// the index's digest.
func checkImage(t *testing.T, archive string, binSums map[string]string) string {
	t.Helper()
	root, err := layout.ImageIndexFromPath(untar(t, archive))
	require.NoError(t, err)
	top, err := root.IndexManifest()
	require.NoError(t, err)
	require.Len(t, top.Manifests, 1)
	desc := top.Manifests[0]
	idx, err := root.ImageIndex(desc.Digest)
	require.NoError(t, err)
	require.NoError(t, validate.Index(idx), "every digest and size in the index holds")
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	var platforms []string
	for _, m := range im.Manifests {
		require.NotNil(t, m.Platform)
		platforms = append(platforms, m.Platform.String())
		img, err := idx.Image(m.Digest)
		require.NoError(t, err)
		assert.Equal(t, binSums[m.Platform.Architecture], sha256File(t, imageFile(t, img, "lifeboat")),
			"the %s image holds the released %s binary", m.Platform, m.Platform.Architecture)
	}
	slices.Sort(platforms)
	assert.Equal(t, []string{"linux/amd64", "linux/arm64"}, platforms)
	return desc.Digest.String()
}

// imageFile extracts the file at name from the image's layers into a
// temporary file.
func imageFile(t *testing.T, img v1.Image, name string) string {
	t.Helper()
	layers, err := img.Layers()
	require.NoError(t, err)
	for _, l := range layers {
		rc, err := l.Uncompressed()
		require.NoError(t, err)
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
			if h.Name == name {
				out := filepath.Join(t.TempDir(), filepath.Base(name))
				f, err := os.Create(out)
				require.NoError(t, err)
				_, err = io.Copy(f, tr)
				require.NoError(t, err)
				require.NoError(t, f.Close())
				rc.Close()
				return out
			}
		}
		rc.Close()
	}
	t.Fatalf("no %s in the image", name)
	return ""
}

// checkCopy copies the image as the README says to push it (skopeo copy
// --all --preserve-digests), here into an OCI layout directory: the index
// arrives under the digest the chart pins, not rewritten.
func checkCopy(t *testing.T, archive, digest string) {
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		msg := "skopeo not found; install it with: apt-get install -y skopeo"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := filepath.Join(t.TempDir(), "copy")
	out, err := exec.CommandContext(t.Context(), skopeo, "copy", "--all", "--preserve-digests",
		"oci-archive:"+archive, "oci:"+dir+":copied").CombinedOutput()
	require.NoError(t, err, "%s", out)
	copied, err := layout.ImageIndexFromPath(dir)
	require.NoError(t, err)
	im, err := copied.IndexManifest()
	require.NoError(t, err)
	require.Len(t, im.Manifests, 1)
	assert.Equal(t, digest, im.Manifests[0].Digest.String())
}

// checkChart renders the packaged chart: every lifeboat container runs the
// image by the digest of the index built.
func checkChart(t *testing.T, helm, chart, version, digest string) {
	out, err := exec.CommandContext(t.Context(), helm, "show", "chart", chart).CombinedOutput()
	require.NoError(t, err, "%s", out)
	var meta struct{ Version, AppVersion string }
	require.NoError(t, yaml.Unmarshal(out, &meta))
	assert.Equal(t, version, meta.Version)
	assert.Equal(t, version, meta.AppVersion)

	out, err = exec.CommandContext(t.Context(), helm, "template", "rel", chart, "--show-only", "templates/daemonset.yaml").CombinedOutput()
	require.NoError(t, err, "%s", out)
	var ds struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers, InitContainers []struct{ Name, Image string }
				}
			}
		}
	}
	require.NoError(t, yaml.Unmarshal(out, &ds))
	pod := ds.Spec.Template.Spec
	containers := append(pod.Containers, pod.InitContainers...)
	var pinned int
	for _, c := range containers {
		if strings.HasPrefix(c.Image, "ghcr.io/lifeboat-dev/lifeboat") {
			assert.Equal(t, "ghcr.io/lifeboat-dev/lifeboat@"+digest, c.Image, c.Name)
			pinned++
		}
	}
	assert.Equal(t, 2, pinned, "lifeboat and configure-containerd")
}

// checkSums reads SHA256SUMS as `sha256sum -c` does: every other file in
// the directory is listed once, with its hash.
func checkSums(t *testing.T, dist string) {
	f, err := os.Open(filepath.Join(dist, sumsFile))
	require.NoError(t, err)
	defer f.Close()
	listed := map[string]bool{}
	for sc := bufio.NewScanner(f); sc.Scan(); {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		require.True(t, ok, "line %q: want <sha256>  <name>", sc.Text())
		assert.Equal(t, sum, sha256File(t, filepath.Join(dist, name)), name)
		listed[name] = true
	}
	entries, err := os.ReadDir(dist)
	require.NoError(t, err)
	for _, e := range entries {
		if e.Name() != sumsFile {
			assert.True(t, listed[e.Name()], "%s is not in %s", e.Name(), sumsFile)
		}
	}
	assert.Len(t, listed, 5, "two binaries, the image, the chart, the SBOM")
	if sha256sum, err := exec.LookPath("sha256sum"); err == nil {
		cmd := exec.Command(sha256sum, "--check", "--strict", sumsFile)
		cmd.Dir = dist
		out, err := cmd.CombinedOutput()
		assert.NoError(t, err, "sha256sum --check:\n%s", out)
	}
}

// checkSBOM decodes the SBOM as CycloneDX and checks it against the
// binaries: every module one links, at its version, and their hashes.
func checkSBOM(t *testing.T, file, bin string, binSums map[string]string) {
	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	var bom cdx.BOM
	require.NoError(t, cdx.NewBOMDecoder(f, cdx.BOMFileFormatJSON).Decode(&bom))
	assert.Equal(t, cdx.SpecVersion1_6, bom.SpecVersion)
	require.NotNil(t, bom.Metadata)
	require.NotNil(t, bom.Metadata.Component)
	assert.Equal(t, "github.com/lifeboat-dev/lifeboat", bom.Metadata.Component.Name)
	require.NotNil(t, bom.Metadata.Component.Components)
	files := map[string]string{}
	for _, c := range *bom.Metadata.Component.Components {
		require.NotNil(t, c.Hashes)
		files[c.Name] = (*c.Hashes)[0].Value
	}
	a := artifacts{strings.TrimPrefix(bom.Metadata.Component.Version, "v")}
	for arch, sum := range binSums {
		assert.Equal(t, sum, files[a.binary(arch)], "the SBOM names the released %s binary", arch)
	}

	require.NotNil(t, bom.Components)
	listed := map[string]string{}
	for _, c := range *bom.Components {
		listed[c.Name] = c.Version
	}
	assert.Contains(t, listed, "github.com/google/go-containerregistry")
	assert.Contains(t, listed, "stdlib")
	bi, err := buildinfo.ReadFile(bin)
	require.NoError(t, err)
	for _, m := range bi.Deps {
		if m.Replace != nil {
			m = m.Replace
		}
		assert.Equal(t, m.Version, listed[m.Path], "%s", m.Path)
	}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// untar extracts a tarball of regular files and directories.
func untar(t *testing.T, file string) string {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		require.NoError(t, err)
		path := filepath.Join(dir, filepath.FromSlash(h.Name))
		require.True(t, strings.HasPrefix(path, dir+string(filepath.Separator)), "%s escapes the archive", h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			require.NoError(t, os.MkdirAll(path, 0o755))
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, b, 0o644))
		default:
			t.Fatalf("%s: unexpected entry type %c", h.Name, h.Typeflag)
		}
	}
}

// TestPinImage: only image.digest changes, comments kept; a values file
// without the line is refused.
func TestPinImage(t *testing.T) {
	t.Parallel()
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	values := "# top\nimage:\n  # -- the image\n  repository: r\n  digest: \"\"\nother:\n  digest: \"\"\n"
	got, err := pinImage([]byte(values), digest)
	require.NoError(t, err)
	assert.Equal(t, strings.Replace(values, "  digest: \"\"\nother", fmt.Sprintf("  digest: %q\nother", digest), 1), string(got))

	_, err = pinImage([]byte("image:\n  repository: r\nother:\n  digest: \"\"\n"), digest)
	assert.ErrorContains(t, err, "no image.digest")
}
