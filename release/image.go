package main

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
)

// ociIndex is an OCI image index, as much of it as is read here.
type ociIndex struct {
	Manifests []struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
	} `json:"manifests"`
}

var sha256Digest = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)

// imageDigest is the digest of the multi-arch image in an OCI image layout
// tarball (cmd/mkimage --oci-archive): the one entry of its index.json,
// which must be an image index. It is what a registry the archive is
// copied to serves, and what the chart pins.
func imageDigest(archive string) (string, error) {
	f, err := os.Open(archive)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", errors.New("no index.json: not an OCI image layout")
		}
		if err != nil {
			return "", err
		}
		if h.Name != "index.json" {
			continue
		}
		var idx ociIndex
		if err := json.NewDecoder(tr).Decode(&idx); err != nil {
			return "", fmt.Errorf("index.json: %w", err)
		}
		if len(idx.Manifests) != 1 || idx.Manifests[0].MediaType != "application/vnd.oci.image.index.v1+json" {
			return "", errors.New("index.json must name exactly one image index (the multi-arch image)")
		}
		d := idx.Manifests[0].Digest
		if !sha256Digest.MatchString(d) {
			return "", fmt.Errorf("index.json: digest %q", d)
		}
		return d, nil
	}
}
