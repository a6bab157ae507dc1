// Command release finishes `make release`: given the binaries and the
// multi-arch image the Makefile built into the dist directory, it writes the
// SBOM, packages the Helm chart with the image pinned by digest, and writes
// SHA256SUMS over everything.
//
//	go run . --version 1.2.3 --dist ../dist --chart ../charts/lifeboat --helm helm
//
// It lives in a module of its own so that its dependencies (the CycloneDX
// library) stay out of lifeboat's go.mod.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

// semver is a release version: x.y.z, optionally with a pre-release.
var semver = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`)

// arches are the architectures of a release, each a static linux binary
// and a platform of the image.
var arches = []string{"amd64", "arm64"}

// artifacts names the files of release version in its dist directory.
type artifacts struct{ version string }

func (a artifacts) binary(arch string) string { return "lifeboat-" + a.version + "-linux-" + arch }
func (a artifacts) image() string             { return "lifeboat-" + a.version + "-image.oci.tar" }
func (a artifacts) chart() string             { return "lifeboat-" + a.version + ".tgz" } // helm package's name
func (a artifacts) sbom() string              { return "lifeboat-" + a.version + ".cdx.json" }

const sumsFile = "SHA256SUMS"

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("release", flag.ContinueOnError)
	version := fs.String("version", "", "the release's version, x.y.z")
	dist := fs.String("dist", "dist", "directory holding the binaries and the image; the rest is written here")
	chart := fs.String("chart", "charts/lifeboat", "the chart's directory")
	helm := fs.String("helm", "helm", "helm binary")
	revision := fs.String("revision", "", "the source's commit, recorded in the SBOM")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !semver.MatchString(*version) {
		return fmt.Errorf("--version %q: want x.y.z", *version)
	}
	a := artifacts{*version}
	var bins []string
	for _, arch := range arches {
		bins = append(bins, filepath.Join(*dist, a.binary(arch)))
	}
	digest, err := imageDigest(filepath.Join(*dist, a.image()))
	if err != nil {
		return fmt.Errorf("%s: %w", a.image(), err)
	}
	if err := writeSBOM(filepath.Join(*dist, a.sbom()), *version, *revision, bins); err != nil {
		return fmt.Errorf("SBOM: %w", err)
	}
	if err := packageChart(*helm, *chart, *version, digest, *dist); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if _, err := os.Stat(filepath.Join(*dist, a.chart())); err != nil {
		return errors.New("helm package did not write " + a.chart())
	}
	sums, err := writeSums(*dist)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "lifeboat %s in %s, image %s:\n", *version, *dist, digest)
	for _, s := range sums {
		fmt.Fprintf(stdout, "  %-40s %10d bytes\n", s.name, s.size)
	}
	return nil
}
