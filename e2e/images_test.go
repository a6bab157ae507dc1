package e2e

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The node cannot reach a public registry, so every image a pod of the
// chart uses is built here and imported into containerd (pull policy
// IfNotPresent finds it): the sandboxes' and the cleanup DaemonSet's
// pause, fix-permissions' busybox and the cleanup Job's kubectl. The
// references are the chart's defaults (values.yaml).
const (
	busyboxImage = "docker.io/library/busybox:1.37.0"
	kubectlImage = "registry.k8s.io/kubectl:v1.34.2"
	// busyboxBin is Debian's busybox-static.
	busyboxBin = "/bin/busybox"
)

// file is one file of an image layer.
type file struct {
	path string
	mode int64
	body []byte
	link string // a symlink's target
}

// layer is a gzip'd tar layer of files (parent directories added).
func layer(files ...file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		for d := filepath.Dir(f.path); d != "." && d != "/" && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) { // parents first
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755}); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		h := &tar.Header{Name: strings.TrimPrefix(f.path, "/"), Mode: f.mode, Size: int64(len(f.body)), Typeflag: tar.TypeReg}
		if f.link != "" {
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, f.link, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

// image is an image of the layers with entrypoint and user.
func image(entrypoint []string, user string, layers ...v1.Layer) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Entrypoint = entrypoint
	cf.Config.User = user
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	return mutate.ConfigFile(img, cf)
}

// buildPause builds the pause binary (./pause) into dir.
func buildPause(dir string) (string, error) {
	out := filepath.Join(dir, "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./pause: %w: %s", err, b)
	}
	return out, nil
}

// nodeImages are the images the chart's pods and the sandboxes need,
// by reference.
func nodeImages(pauseBin, kubectlBin string) (map[string]v1.Image, error) {
	pause, err := os.ReadFile(pauseBin)
	if err != nil {
		return nil, err
	}
	kubectl, err := os.ReadFile(kubectlBin)
	if err != nil {
		return nil, err
	}
	busybox, err := os.ReadFile(busyboxBin)
	if err != nil {
		return nil, fmt.Errorf("%w (apt-get install busybox-static)", err)
	}
	if err := checkStatic(busyboxBin); err != nil {
		return nil, err
	}
	imgs := map[string]v1.Image{}
	l, err := layer(file{path: "/pause", mode: 0o755, body: pause})
	if err != nil {
		return nil, err
	}
	if imgs[sandboxImage], err = image([]string{"/pause"}, "65535:65535", l); err != nil {
		return nil, err
	}
	files := []file{{path: "/bin/busybox", mode: 0o755, body: busybox}}
	for _, applet := range []string{"sh", "stat", "chown", "chmod", "ls", "cat", "sleep"} {
		files = append(files, file{path: "/bin/" + applet, link: "busybox"})
	}
	if l, err = layer(files...); err != nil {
		return nil, err
	}
	if imgs[busyboxImage], err = image([]string{"sh"}, "", l); err != nil {
		return nil, err
	}
	if l, err = layer(file{path: "/bin/kubectl", mode: 0o755, body: kubectl}); err != nil {
		return nil, err
	}
	if imgs[kubectlImage], err = image([]string{"kubectl"}, "65532:65532", l); err != nil {
		return nil, err
	}
	return imgs, nil
}

// checkStatic refuses a dynamically linked binary: it would not run in an
// image with nothing else in it.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (apt-get install busybox-static)", path)
		}
	}
	return nil
}

// appImage is the test workload's image: pause, and a random layer of
// size bytes that lifeboat has to fetch and cache. seed makes each tag's
// image distinct.
func appImage(pauseBin string, size int64) (v1.Image, error) {
	pause, err := os.ReadFile(pauseBin)
	if err != nil {
		return nil, err
	}
	l, err := layer(file{path: "/pause", mode: 0o755, body: pause})
	if err != nil {
		return nil, err
	}
	filler, err := random.Layer(size, "application/vnd.docker.image.rootfs.diff.tar.gzip")
	if err != nil {
		return nil, err
	}
	return image([]string{"/pause"}, "65532:65532", l, filler)
}

// importImages writes imgs to one tarball and imports it into the
// node's containerd, unpacked for its snapshotter.
func (n *node) importImages(imgs map[string]v1.Image) error {
	refs := map[name.Reference]v1.Image{}
	for r, img := range imgs {
		ref, err := name.ParseReference(r)
		if err != nil {
			return err
		}
		refs[ref] = img
	}
	tar := filepath.Join(n.scratch, "images.tar")
	if err := tarball.MultiRefWriteToFile(tar, refs); err != nil {
		return err
	}
	defer os.Remove(tar)
	return n.importTarball(tar)
}

func (n *node) importTarball(path string) error {
	_, err := n.ctr("images", "import", "--snapshotter", "native", "--platform", "linux/"+runtime.GOARCH, path)
	return err
}

// upgradeImage is lifeboat's image with a label added: another digest,
// the same program, for the upgrade scenario.
func upgradeImage(tarPath, tag string) (v1.Image, error) {
	img, err := tarball.ImageFromPath(tarPath, nil)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	if cf.Config.Labels == nil {
		cf.Config.Labels = map[string]string{}
	}
	cf.Config.Labels["dev.lifeboat.e2e.upgrade"] = tag
	return mutate.ConfigFile(img, cf)
}

// removeImage removes every reference containerd holds to the image
// named ref (its tag, its repo digest and its ID), as `crictl rmi` does.
func (n *node) removeImage(ref string) error {
	repo := ref
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		repo = ref[:i]
	}
	out, err := n.ctr("images", "ls")
	if err != nil {
		return err
	}
	var rm []string
	var digest string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) > 2 && f[0] == ref {
			digest = f[2]
		}
	}
	if digest == "" {
		return fmt.Errorf("image %s not on the node", ref)
	}
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != digest {
			continue
		}
		// The tag, repo@digest, and the sha256:<config> ID CRI adds.
		if strings.HasPrefix(f[0], repo) || strings.HasPrefix(f[0], "sha256:") {
			rm = append(rm, f[0])
		}
	}
	if _, err := n.ctr(append([]string{"images", "rm", "--sync"}, rm...)...); err != nil {
		return err
	}
	if left, _ := n.ctr("images", "ls", "-q"); strings.Contains(left, ref) {
		return errors.New("image still listed after removal: " + ref)
	}
	return nil
}
