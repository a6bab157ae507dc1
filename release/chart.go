package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"

	"sigs.k8s.io/yaml"
)

// packageChart packages a copy of the chart with version as its version
// and appVersion and the lifeboat image pinned to digest, into dist.
func packageChart(helm, chart, version, digest, dist string) error {
	tmp, err := os.MkdirTemp("", "lifeboat-release-chart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, filepath.Base(chart))
	if err := os.CopyFS(dir, os.DirFS(chart)); err != nil {
		return err
	}
	values := filepath.Join(dir, "values.yaml")
	orig, err := os.ReadFile(values)
	if err != nil {
		return err
	}
	pinned, err := pinImage(orig, digest)
	if err != nil {
		return err
	}
	if err := os.WriteFile(values, pinned, 0o644); err != nil {
		return err
	}
	out, err := exec.Command(helm, "package", dir, "--version", version, "--app-version", version, "--destination", dist).CombinedOutput()
	if err != nil {
		return fmt.Errorf("helm package: %w\n%s", err, out)
	}
	return nil
}

// pinImage sets image.digest in the text of values.yaml, keeping its
// comments: the one `  digest: ""` line of the top-level image block. It
// then checks that the values decode to the same as before but for that.
func pinImage(values []byte, digest string) ([]byte, error) {
	lines := strings.SplitAfter(string(values), "\n")
	inImage, done := false, false
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "image:"):
			inImage = true
		case l != "" && !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "#") && strings.TrimSpace(l) != "":
			inImage = false // the next top-level key
		case inImage && strings.TrimRight(l, "\n") == `  digest: ""`:
			lines[i] = fmt.Sprintf("  digest: %q\n", digest)
			inImage, done = false, true
		}
	}
	if !done {
		return nil, errors.New(`values.yaml: no image.digest: "" to pin`)
	}
	pinned := []byte(strings.Join(lines, ""))
	var before, after map[string]any
	if err := yaml.Unmarshal(values, &before); err != nil {
		return nil, err
	}
	if err := yaml.Unmarshal(pinned, &after); err != nil {
		return nil, err
	}
	image, ok := before["image"].(map[string]any)
	if !ok {
		return nil, errors.New("values.yaml: no image block")
	}
	image["digest"] = digest
	if !reflect.DeepEqual(before, after) {
		return nil, errors.New("values.yaml: pinning the digest changed other values")
	}
	return pinned, nil
}
