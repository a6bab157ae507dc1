package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

type fileSum struct {
	name string
	size int64
	sum  []byte
}

// writeSums writes SHA256SUMS in dir over every other file in it, in the
// format `sha256sum -c` reads, and returns what it summed.
func writeSums(dir string) ([]fileSum, error) {
	entries, err := os.ReadDir(dir) // sorted by name
	if err != nil {
		return nil, err
	}
	var sums []fileSum
	var b strings.Builder
	for _, e := range entries {
		if e.Name() == sumsFile || !e.Type().IsRegular() {
			continue
		}
		s, err := sumFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		sums = append(sums, s)
		fmt.Fprintf(&b, "%x  %s\n", s.sum, s.name)
	}
	return sums, os.WriteFile(filepath.Join(dir, sumsFile), []byte(b.String()), 0o644)
}

func sumFile(path string) (fileSum, error) {
	f, err := os.Open(path)
	if err != nil {
		return fileSum{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fileSum{}, err
	}
	return fileSum{name: filepath.Base(path), size: n, sum: h.Sum(nil)}, nil
}
