// Command mkimage builds lifeboat's container image without a Docker
// engine: a static lifeboat binary on an empty base, non-root, with the same
// entrypoint, command and labels as the Dockerfile. Given one binary it
// builds one image; given one per architecture, an OCI image index of them
// (a multi-arch image). It writes an OCI image layout tarball (skopeo's
// oci-archive:, `ctr import`), a Docker tarball of a single image
// (`docker load`, `crane push`), and can push to a registry. It prints the
// digest of what it built: the image's, or the index's.
//
//	go run ./cmd/mkimage --binary bin/lifeboat --version v1.2.3 --tarball bin/lifeboat-image.tar
//	go run ./cmd/mkimage --binary amd64=dist/lifeboat-linux-amd64 --binary arm64=dist/lifeboat-linux-arm64 \
//	    --version 1.2.3 --tag ghcr.io/lifeboat-dev/lifeboat:1.2.3 --oci-archive dist/lifeboat-image.oci.tar
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	var bins binaryFlag
	fs.Var(&bins, "binary", "static linux lifeboat `[ARCH=]PATH` to put in the image (default bin/lifeboat); once per architecture for a multi-arch index")
	version := fs.String("version", "dev", "version label")
	revision := fs.String("revision", "", "source commit, for the org.opencontainers.image.revision label")
	tag := fs.String("tag", "ghcr.io/lifeboat-dev/lifeboat:dev", "image reference recorded in the tarball and the OCI layout")
	out := fs.String("tarball", "", "write the image as a Docker tarball here (one image only)")
	ociArchive := fs.String("oci-archive", "", "write the image or index as an OCI image layout tarball here")
	push := fs.String("push", "", "push the image or index to this reference (plain http for localhost registries)")
	arch := fs.String("arch", runtime.GOARCH, "the architecture of a --binary given without ARCH=")
	caBundle := fs.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "PEM bundle of CA certificates put at /etc/ssl/certs/ca-certificates.crt, so lifeboat can verify https upstreams")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" && *ociArchive == "" && *push == "" {
		return errors.New("nothing to do: give --tarball, --oci-archive, --push or a mix")
	}
	platforms, err := bins.resolve(*arch)
	if err != nil {
		return err
	}
	ref, err := name.ParseReference(*tag)
	if err != nil {
		return fmt.Errorf("--tag: %w", err)
	}
	img, err := buildAll(platforms, *caBundle, labels(*version, *revision))
	if err != nil {
		return err
	}
	if *out != "" {
		single, ok := img.(v1.Image)
		if !ok {
			return errors.New("--tarball holds one image: give one --binary, or use --oci-archive for several")
		}
		if err := tarball.WriteToFile(*out, ref, single); err != nil {
			return err
		}
	}
	if *ociArchive != "" {
		if err := writeOCIArchive(*ociArchive, ref, img); err != nil {
			return fmt.Errorf("--oci-archive: %w", err)
		}
	}
	if *push != "" {
		if err := pushTo(*push, img); err != nil {
			return fmt.Errorf("--push: %w", err)
		}
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, d)
	return nil
}

func pushTo(to string, img artifact) error {
	ref, err := name.ParseReference(to, name.Insecure)
	if err != nil {
		return err
	}
	if idx, ok := img.(v1.ImageIndex); ok {
		return remote.WriteIndex(ref, idx)
	}
	return remote.Write(ref, img.(v1.Image))
}

// binaryFlag is the repeated --binary: [ARCH=]PATH.
type binaryFlag []platformBinary

type platformBinary struct{ arch, path string }

func (b *binaryFlag) String() string {
	var parts []string
	for _, p := range *b {
		parts = append(parts, p.arch+"="+p.path)
	}
	return strings.Join(parts, ",")
}

func (b *binaryFlag) Set(s string) error {
	arch, path, ok := strings.Cut(s, "=")
	if !ok {
		arch, path = "", s
	}
	if path == "" {
		return errors.New("empty path")
	}
	*b = append(*b, platformBinary{arch: arch, path: path})
	return nil
}

// resolve gives a binary without ARCH= the default architecture, and
// refuses two binaries for one architecture.
func (b binaryFlag) resolve(defaultArch string) ([]platformBinary, error) {
	if len(b) == 0 {
		b = binaryFlag{{path: "bin/lifeboat"}}
	}
	seen := map[string]bool{}
	out := make([]platformBinary, 0, len(b))
	for _, p := range b {
		if p.arch == "" {
			p.arch = defaultArch
		}
		if seen[p.arch] {
			return nil, fmt.Errorf("--binary: two binaries for %s", p.arch)
		}
		seen[p.arch] = true
		out = append(out, p)
	}
	return out, nil
}
