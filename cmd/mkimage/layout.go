package main

import (
	"archive/tar"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// writeOCIArchive writes img as an OCI image layout in a tarball: index.json
// names one manifest, the image or the image index, annotated with ref
// (containerd's import reads io.containerd.image.name, skopeo and the OCI
// spec org.opencontainers.image.ref.name). The tarball is the same bytes
// for the same image: entries in lexical order, owned by root, dated 1970.
func writeOCIArchive(file string, ref name.Reference, img artifact) error {
	dir, err := os.MkdirTemp("", "mkimage-oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	opt := layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          ref.Name(),
		"org.opencontainers.image.ref.name": ref.Identifier(),
	})
	switch img := img.(type) {
	case v1.ImageIndex:
		err = p.AppendIndex(img, opt)
	case v1.Image:
		err = p.AppendImage(img, opt)
	}
	if err != nil {
		return err
	}
	return tarDir(file, dir)
}

// tarDir writes the files under dir into a tarball at file, names relative
// to dir, with nothing of this machine in the headers.
func tarDir(file, dir string) (err error) {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg, Mode: 0o644}
		if d.IsDir() {
			h.Name, h.Typeflag, h.Mode = h.Name+"/", tar.TypeDir, 0o755
			return tw.WriteHeader(h)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h.Size = fi.Size()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
