package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The one system file the harness changes is /etc/hosts: the node name
// and the test registry's name resolve to 127.0.0.1 (the API server
// reaches the kubelet by node name, and everything stays on loopback).
// The lines it appends carry hostsMarker, and teardown removes exactly
// those lines, so a file another process edited meanwhile keeps its edits.
// The file is rewritten in place: under gVisor and in containers it is
// often a bind mount that a rename would not replace.
const (
	etcHosts    = "/etc/hosts"
	hostsMarker = "# lifeboat-e2e"
)

func addHosts(ip string, names ...string) error {
	b, err := os.ReadFile(etcHosts)
	if err != nil {
		return err
	}
	if len(b) > 0 && !bytes.HasSuffix(b, []byte("\n")) {
		// Our line must not be glued to the last one; removeHosts
		// takes the newline away again.
		b = append(b, []byte("\n"+hostsMarker+"-newline\n")...)
	}
	b = fmt.Appendf(b, "%s %s %s\n", ip, strings.Join(names, " "), hostsMarker)
	return os.WriteFile(etcHosts, b, 0o644)
}

// removeHosts removes the lines addHosts appended, if any.
func removeHosts() error {
	b, err := os.ReadFile(etcHosts)
	if err != nil {
		return err
	}
	var out []byte
	changed := false
	for line := range bytes.Lines(b) {
		if bytes.Contains(line, []byte(hostsMarker)) {
			changed = true
			continue
		}
		out = append(out, line...)
	}
	if !changed {
		return nil
	}
	if bytes.Contains(b, []byte(hostsMarker+"-newline")) {
		out = bytes.TrimSuffix(out, []byte("\n"))
	}
	return os.WriteFile(etcHosts, out, 0o644)
}

// systemDirs are the directories outside runDir that kubelet and
// containerd write whatever they are told: kubelet's device-plugin socket
// directory is a constant, libcni caches each attachment's result in
// /var/lib/cni, containerd 1.6's shims put their sockets in
// /run/containerd/s, and its CNI setup names pod network namespaces in
// /run/netns. The ones that did not exist before the run are listed in
// <runDir>/created and removed by cleanupRunDir (/run/containerd and
// /run/netns only when nothing but empty directories is left in them); in
// a /var/lib/cni that did, only the run's own CNI results are.
var systemDirs = []string{"/var/lib/kubelet", "/var/lib/cni", "/run/containerd", "/run/netns", "/var/log/containers"}

// onlyIfEmpty are the systemDirs other programs on the machine share.
var onlyIfEmpty = []string{"/run/containerd", "/run/netns"}

func noteSystemDirs(runDir string) error {
	var created []byte
	// `ip netns add` (node 2's namespace) makes /run/netns a mount point
	// of its own, bind-mounted on itself. If it was none before, the
	// run undoes that too, or a /run/netns the run created could not be
	// removed (EBUSY).
	if mounted, err := isMountPoint(netnsDir); err != nil {
		return err
	} else if !mounted {
		created = fmt.Appendf(created, "%s%s\n", unmountPrefix, netnsDir)
	}
	for _, d := range systemDirs {
		if !exists(d) {
			created = fmt.Appendf(created, "%s\n", d)
		}
	}
	return os.WriteFile(filepath.Join(runDir, "created"), created, 0o600)
}

const (
	netnsDir      = "/run/netns"
	unmountPrefix = "unmount "
)

// isMountPoint reports whether p is a mount point (a bind mount of a
// directory on itself included, which a device number cannot tell).
func isMountPoint(p string) (bool, error) {
	ms, err := mounts()
	if err != nil {
		return false, err
	}
	for _, f := range ms {
		if f[1] == p {
			return true, nil
		}
	}
	return false, nil
}

// removeSystemDirs undoes noteSystemDirs's run.
func removeSystemDirs(runDir string) error {
	b, err := os.ReadFile(filepath.Join(runDir, "created"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var errs []error
	for d := range strings.Lines(string(b)) {
		switch d = strings.TrimSpace(d); {
		case strings.HasPrefix(d, unmountPrefix):
			// Only while no namespace is left in it (another program's
			// would be a file): unmounting would hide it.
			if p := strings.TrimPrefix(d, unmountPrefix); p == netnsDir && emptyTree(p) {
				for {
					if mounted, _ := isMountPoint(p); !mounted {
						break
					}
					if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil {
						errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
						break
					}
				}
			}
		case slices.Contains(onlyIfEmpty, d):
			if emptyTree(d) {
				errs = append(errs, os.RemoveAll(d))
			}
		case slices.Contains(systemDirs, d):
			errs = append(errs, os.RemoveAll(d))
		}
	}
	// A /var/lib/cni that was there before: the results of the run's
	// network (<network>-<sandbox>-eth0) and of those sandboxes' loopback.
	results, _ := filepath.Glob("/var/lib/cni/results/" + cniNetwork + "-*-eth0")
	for _, r := range results {
		id := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(r), cniNetwork+"-"), "-eth0")
		errs = append(errs, os.Remove(r), ignoreMissing(os.Remove("/var/lib/cni/results/cni-loopback-"+id+"-lo")))
	}
	return errors.Join(errs...)
}

// emptyTree reports whether dir holds nothing but empty directories.
func emptyTree(dir string) bool {
	empty := true
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			empty = false
			return filepath.SkipAll
		}
		return nil
	})
	return empty
}

func ignoreMissing(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// The PIDs the harness started, one per line in <runDir>/pids, so that a
// run killed before its teardown (a test binary's timeout panics past
// every defer) is cleaned up by the next run.
func recordPID(runDir string, pid int) error {
	f, err := os.OpenFile(filepath.Join(runDir, "pids"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(f, pid)
	return errors.Join(err, f.Close())
}

// ownedPIDs are the live processes whose command line or executable
// names runDir: the harness's own processes, the containerd shims they
// spawned and the containers those run (runc's init names the bundle).
// A PID in the pids file counts only if its command line still names
// runDir, so a recycled PID is never signalled.
func ownedPIDs(runDir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(cmdline, []byte(runDir)) {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

// killOwned sends SIGTERM to every process ownedPIDs finds, waits up to
// grace, then SIGKILLs the ones left. It returns the ones that survived.
func killOwned(runDir string, grace time.Duration) []int {
	return killAll(func() []int { return ownedPIDs(runDir) }, grace)
}

// killAll sends SIGTERM to the processes find finds, by PID, waits up to
// grace for them to go, SIGKILLs the ones left, and returns the ones
// find still finds.
func killAll(find func() []int, grace time.Duration) []int {
	for _, pid := range find() {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for len(find()) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	for _, pid := range find() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	time.Sleep(200 * time.Millisecond)
	return find()
}

// mounts are the fields of each line of /proc/self/mounts: device, mount
// point, type, options.
func mounts() ([][]string, error) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	var ms [][]string
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) > 2 {
			ms = append(ms, f)
		}
	}
	return ms, nil
}

// unmountUnder lazily unmounts every mount point below dir, deepest first
// (kubelet's tmpfs volumes, containerd's sandbox /dev/shm).
func unmountUnder(dir string) error {
	ms, err := mounts()
	if err != nil {
		return err
	}
	var points []string
	for _, f := range ms {
		if f[1] == dir || strings.HasPrefix(f[1], dir+"/") {
			points = append(points, f[1])
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// removeCgroups removes the cgroups the kubelets created under each of
// names (cgroupfs driver: node 1's /kubepods, node 2's node2CgroupRoot)
// in every hierarchy, deepest first. Best effort: a cgroup with a process
// left in it stays, and is reused by the next run.
func removeCgroups(names ...string) {
	var roots []string
	for _, h := range cgroupHierarchies() {
		for _, d := range names {
			if d := filepath.Join(h, d); exists(d) {
				roots = append(roots, d)
			}
		}
	}
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			_ = syscall.Rmdir(d)
		}
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
