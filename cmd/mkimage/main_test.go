package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeELF is an ELF header for machine with no program headers: what
// checkBinary reads of a static executable.
func fakeELF(t *testing.T, machine elf.Machine) []byte {
	t.Helper()
	h := elf.Header64{Type: uint16(elf.ET_EXEC), Machine: uint16(machine), Version: uint32(elf.EV_CURRENT), Ehsize: 64}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS], h.Ident[elf.EI_DATA], h.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	var buf bytes.Buffer
	require.NoError(t, binary.Write(&buf, binary.LittleEndian, h))
	return buf.Bytes()
}

// fixture writes a binary per machine and a CA bundle into a temporary
// directory and returns the flags that use them.
func fixture(t *testing.T, machines map[string]elf.Machine) []string {
	t.Helper()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644))
	args := []string{"--ca-bundle", ca, "--version", "1.2.3", "--tag", "registry.example/lifeboat:1.2.3"}
	for arch, m := range machines {
		bin := filepath.Join(dir, "lifeboat-"+arch)
		require.NoError(t, os.WriteFile(bin, fakeELF(t, m), 0o755))
		args = append(args, "--binary", arch+"="+bin)
	}
	return args
}

// untar extracts an OCI archive and returns the layout's directory.
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
		assert.Zero(t, h.ModTime.Unix(), h.Name)
		path := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			require.NoError(t, os.MkdirAll(path, 0o755))
			continue
		}
		body, err := io.ReadAll(tr)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, body, 0o644))
	}
}

func TestMultiArchOCIArchive(t *testing.T) {
	t.Parallel()
	args := fixture(t, map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64})
	out := filepath.Join(t.TempDir(), "image.oci.tar")
	var stdout bytes.Buffer
	require.NoError(t, run(append(args, "--oci-archive", out), &stdout))
	printed := strings.TrimSpace(stdout.String())

	root, err := layout.ImageIndexFromPath(untar(t, out))
	require.NoError(t, err)
	top, err := root.IndexManifest()
	require.NoError(t, err)
	require.Len(t, top.Manifests, 1, "index.json names the multi-arch index")
	desc := top.Manifests[0]
	assert.Equal(t, printed, desc.Digest.String(), "the printed digest is the index's")
	assert.Equal(t, "registry.example/lifeboat:1.2.3", desc.Annotations["io.containerd.image.name"])
	assert.Equal(t, "1.2.3", desc.Annotations["org.opencontainers.image.ref.name"])

	idx, err := root.ImageIndex(desc.Digest)
	require.NoError(t, err)
	require.NoError(t, validate.Index(idx), "every digest and size in the index holds")
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	platforms := map[string]v1.Hash{}
	for _, m := range im.Manifests {
		require.NotNil(t, m.Platform)
		assert.Empty(t, m.ArtifactType, "an image, not an artifact: older tools rewrite an index that says otherwise")
		platforms[m.Platform.String()] = m.Digest
	}
	require.Len(t, platforms, 2)
	for platform, digest := range platforms {
		img, err := idx.Image(digest)
		require.NoError(t, err)
		cf, err := img.ConfigFile()
		require.NoError(t, err)
		assert.Equal(t, platform, cf.OS+"/"+cf.Architecture, "the config agrees with the index")
		assert.Equal(t, dockerfileCmd(t), cf.Config.Cmd)
		assert.Empty(t, cf.Config.ExposedPorts, "every listener is on loopback")
		assert.Equal(t, "65532:65532", cf.Config.User)
	}
	assert.Contains(t, platforms, "linux/amd64")
	assert.Contains(t, platforms, "linux/arm64")

	// The same inputs, the same bytes.
	again := filepath.Join(t.TempDir(), "again.oci.tar")
	require.NoError(t, run(append(args, "--oci-archive", again), io.Discard))
	assert.Equal(t, fileSum(t, out), fileSum(t, again))
}

func fileSum(t *testing.T, file string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	return sha256.Sum256(b)
}

// dockerfileCmd is the Dockerfile's CMD: mkimage's image must run the same.
func dockerfileCmd(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../../Dockerfile")
	require.NoError(t, err)
	defer f.Close()
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if rest, ok := strings.CutPrefix(sc.Text(), "CMD "); ok {
			var cmd []string
			require.NoError(t, json.Unmarshal([]byte(rest), &cmd))
			return cmd
		}
	}
	t.Fatal("the Dockerfile has no CMD")
	return nil
}

func TestImageCommandIsTheDockerfiles(t *testing.T) {
	t.Parallel()
	assert.Equal(t, dockerfileCmd(t), defaultCmd)
	assert.Contains(t, strings.Join(defaultCmd, " "), "--listen 127.0.0.1:5000")
}

func TestRefused(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "out.tar")
	for _, tc := range []struct {
		name     string
		machines map[string]elf.Machine
		extra    []string
		want     string
	}{
		{"another architecture's binary", map[string]elf.Machine{"arm64": elf.EM_X86_64}, []string{"--oci-archive", out}, "not arm64"},
		{"several images in a Docker tarball", map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}, []string{"--tarball", out}, "--tarball holds one image"},
		{"nothing to write", map[string]elf.Machine{"amd64": elf.EM_X86_64}, nil, "nothing to do"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := run(append(fixture(t, tc.machines), tc.extra...), io.Discard)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	err := run([]string{"--binary", "amd64=a", "--binary", "amd64=b", "--oci-archive", out}, io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "two binaries for amd64")
}
