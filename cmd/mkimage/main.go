// Command mkimage builds lifeboat's container image without a Docker
// engine: a static lifeboat binary on an empty base, non-root, with the same
// entrypoint, command and labels as the Dockerfile. It writes a tarball
// (`docker load` / `ctr import` / `crane push` can take it) and can push the
// image to a registry.
//
//	go run ./cmd/mkimage --binary bin/lifeboat --version v1.2.3 --tarball bin/lifeboat-image.tar
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	binary := fs.String("binary", "bin/lifeboat", "static linux lifeboat binary to put in the image")
	version := fs.String("version", "dev", "version label")
	tag := fs.String("tag", "ghcr.io/lifeboat-dev/lifeboat:dev", "image reference recorded in the tarball")
	out := fs.String("tarball", "", "write the image as a tarball here")
	push := fs.String("push", "", "push the image to this reference (plain http for localhost registries)")
	arch := fs.String("arch", runtime.GOARCH, "the binary's architecture")
	caBundle := fs.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "PEM bundle of CA certificates put at /etc/ssl/certs/ca-certificates.crt, so lifeboat can verify https upstreams")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" && *push == "" {
		return fmt.Errorf("nothing to do: give --tarball, --push or both")
	}
	img, err := build(*binary, *caBundle, *version, *arch)
	if err != nil {
		return err
	}
	if *out != "" {
		ref, err := name.ParseReference(*tag)
		if err != nil {
			return fmt.Errorf("--tag: %w", err)
		}
		if err := tarball.WriteToFile(*out, ref, img); err != nil {
			return err
		}
	}
	if *push != "" {
		ref, err := name.ParseReference(*push, name.Insecure)
		if err != nil {
			return fmt.Errorf("--push: %w", err)
		}
		if err := remote.Write(ref, img); err != nil {
			return err
		}
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Println(d)
	return nil
}

// defaultCmd is the image's command, the Dockerfile's CMD: every listener
// on loopback (the image runs in the host network, where that is the
// node's), so nothing is published and no port is exposed.
var defaultCmd = []string{"serve", "--listen", "127.0.0.1:5000", "--metrics-listen", "127.0.0.1:5090", "--admin-listen", "127.0.0.1:5091",
	"--data-dir", "/var/lib/lifeboat", "--log-format", "json"}

// build makes the image: one layer with /lifeboat and the CA bundle, config
// as the Dockerfile's.
func build(binary, caBundle, version, arch string) (v1.Image, error) {
	bin, err := os.ReadFile(binary)
	if err != nil {
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
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":       "lifeboat",
		"org.opencontainers.image.description": "Node-local pull-through cache for container images",
		"org.opencontainers.image.source":      "https://github.com/lifeboat-dev/lifeboat",
		"org.opencontainers.image.version":     version,
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
	return mutate.ConfigFile(img, cf)
}
