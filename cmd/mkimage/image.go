package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// artifact is what mkimage builds: a v1.Image for one binary, a
// v1.ImageIndex of images for several.
type artifact interface {
	Digest() (v1.Hash, error)
	MediaType() (types.MediaType, error)
}

// buildAll builds an image per binary, and an OCI image index of them
// when there is more than one; the index lists each image with its
// platform, so a runtime pulls the one for its node.
func buildAll(bins []platformBinary, caBundle string, labels map[string]string) (artifact, error) {
	var adds []mutate.IndexAddendum
	for _, b := range bins {
		img, err := build(b.path, caBundle, labels, b.arch)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.path, err)
		}
		if len(bins) == 1 {
			return img, nil
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: b.arch},
		}})
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...), nil
}

// defaultCmd is the image's command, the Dockerfile's CMD: every listener
// on loopback (the image runs in the host network, where that is the
// node's), so nothing is published and no port is exposed.
var defaultCmd = []string{"serve", "--listen", "127.0.0.1:5000", "--metrics-listen", "127.0.0.1:5090", "--admin-listen", "127.0.0.1:5091",
	"--data-dir", "/var/lib/lifeboat", "--log-format", "json"}

// build makes the image: one layer with /lifeboat and the CA bundle, config
// as the Dockerfile's.
func build(binary, caBundle string, labels map[string]string, arch string) (v1.Image, error) {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	if err := checkBinary(bin, arch); err != nil {
		return nil, err
	}
	cas, err := os.ReadFile(caBundle)
	if err != nil {
		return nil, fmt.Errorf("--ca-bundle: %w (without it lifeboat cannot verify https upstreams)", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	for _, e := range []struct {
		name string
		mode int64
		body []byte
		dir  bool
	}{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/ssl/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, body: cas},
		{name: "var/", mode: 0o755, dir: true},
		{name: "var/lib/", mode: 0o755, dir: true},
		{name: "var/lib/lifeboat/", mode: 0o755, dir: true},
		{name: "lifeboat", mode: 0o755, body: bin},
	} {
		h := &tar.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.body)), ModTime: epoch, Typeflag: tar.TypeReg}
		if e.dir {
			h.Typeflag = tar.TypeDir
		}
		if strings.HasPrefix(e.name, "var/lib/lifeboat") {
			h.Uid, h.Gid = 65532, 65532 // the data dir belongs to the image's user
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = "linux", arch, v1.Time{Time: epoch}
	cf.Config.User = "65532:65532"
	cf.Config.Entrypoint = []string{"/lifeboat"}
	cf.Config.Cmd = defaultCmd
	cf.Config.Labels = labels
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return plainImage{img}, nil
}

// plainImage is an image whose descriptor (in an index, in index.json)
// has no artifactType. go-containerregistry fills that in from the config's
// media type, which the OCI spec means for artifacts; tools that predate
// the field (skopeo 1.9) then rewrite the index when they copy it, and its
// digest, the one the chart pins, changes.
type plainImage struct{ v1.Image }

func (p plainImage) Descriptor() (*v1.Descriptor, error) {
	mt, err := p.MediaType()
	if err != nil {
		return nil, err
	}
	size, err := p.Size()
	if err != nil {
		return nil, err
	}
	d, err := p.Digest()
	if err != nil {
		return nil, err
	}
	return &v1.Descriptor{MediaType: mt, Size: size, Digest: d}, nil
}

// labels are the image's labels, the Dockerfile's, and the source commit
// when it is known.
func labels(version, revision string) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       "lifeboat",
		"org.opencontainers.image.description": "Node-local pull-through cache for container images",
		"org.opencontainers.image.source":      "https://github.com/lifeboat-dev/lifeboat",
		"org.opencontainers.image.version":     version,
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
	if revision != "" {
		l["org.opencontainers.image.revision"] = revision
	}
	return l
}

// elfMachines are the architectures checkBinary knows.
var elfMachines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// checkBinary refuses what would not run in the image: something other
// than an ELF executable, one for another architecture than the image
// says, or one that needs a dynamic loader (the image has no libc).
func checkBinary(bin []byte, arch string) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("not a Linux executable: %w", err)
	}
	if want, ok := elfMachines[arch]; ok && f.Machine != want {
		return fmt.Errorf("built for %s, not %s", f.Machine, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked, and the image has no libc: build with CGO_ENABLED=0")
		}
	}
	return nil
}
