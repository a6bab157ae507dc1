package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// Scenario 8's second node runs on the same machine as the first, its
// containerd and kubelet each in two namespaces of their own:
//
//   - A network namespace, node2NetNS, joined to the host by a veth pair:
//     node 1 is node1IP on the host's end (its kubelet's --node-ip), node 2
//     is node2IP on the other. Node 2's host-network pods (lifeboat) get a
//     loopback of their own, so lifeboat binds 127.0.0.1:5000, :5090 and
//     :5091 there as on any node, and its peer port on node2IP; the test
//     registry's name (127.0.0.1 in /etc/hosts) is refused there, so node
//     2 never reaches it. The harness forwards 127.0.0.1:6443 in the
//     namespace to the API server.
//   - A mount namespace (unshare, propagation slave: nothing mounted in it
//     reaches the host, and it is gone with its last process). In it,
//     node 2's own directories are bind-mounted over the chart's hostPaths
//     (containerd's hosts directory and config file, lifeboat's data
//     directory), so one DaemonSet spec fits both nodes, and over the
//     directories kubelet, libcni and containerd use at fixed paths.
//
// Its kubelet makes its pods' cgroups under node2CgroupRoot: under a
// shared root each kubelet would take the other's pod cgroups for orphans.
const (
	node2Name       = "lifeboat-e2e-node2"
	node2NetNS      = "lbe2e-node2"
	vethHost        = "lbe2e-h"
	vethNode2       = "lbe2e-n2"
	node1IP         = "10.250.15.1"
	node2IP         = "10.250.15.2"
	node2Bridge     = "lbe2e1"
	node2PodCIDR    = "10.244.1.0/24"
	node2CgroupRoot = "/lbe2e-node2"
)

var node2NetNSPath = "/run/netns/" + node2NetNS

// nsfsMagic is the file system type of a namespace file (NSFS_MAGIC).
const nsfsMagic = 0x6e736673

// setupNodeNetwork makes the network namespace and the veth pair. Node 1
// needs its end from the start: its kubelet's --node-ip is on it.
func setupNodeNetwork() error {
	if err := removeNodeNetwork(); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"netns", "add", node2NetNS},
		{"link", "add", vethHost, "type", "veth", "peer", "name", vethNode2, "netns", node2NetNS},
		{"addr", "add", node1IP + "/24", "dev", vethHost},
		{"link", "set", vethHost, "up"},
		{"-n", node2NetNS, "addr", "add", node2IP + "/24", "dev", vethNode2},
		{"-n", node2NetNS, "link", "set", vethNode2, "up"},
		{"-n", node2NetNS, "link", "set", "lo", "up"},
	} {
		if err := ip(args...); err != nil {
			return err
		}
	}
	return nil
}

// removeNodeNetwork deletes the namespace and the veth pair, if there.
func removeNodeNetwork() error {
	var errs []error
	if exists(node2NetNSPath) {
		errs = append(errs, ip("netns", "delete", node2NetNS))
	}
	// Deleting the namespace deletes the pair, unless a process still
	// holds the namespace.
	if _, err := net.InterfaceByName(vethHost); err == nil {
		errs = append(errs, ip("link", "delete", vethHost))
	}
	return errors.Join(errs...)
}

func ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// secondNode is node 2: its containerd, then its kubelet (the join).
type secondNode struct {
	node
	c          *cluster
	dir        string
	containerd *proc
	kubelet    *proc
	api        net.Listener // the API server forwarder in its network namespace
}

func (n *secondNode) path(elem ...string) string {
	return filepath.Join(append([]string{n.dir}, elem...)...)
}

// bootNode2 starts node 2's containerd in its namespaces and imports the
// images an air-gapped node comes with: imgs, and lifeboat's tarball.
func (c *cluster) bootNode2(imgs map[string]v1.Image, lifeboatTar string) (*secondNode, error) {
	dir := c.path("node2")
	n := &secondNode{c: c, dir: dir, node: node{
		name: node2Name, ip: node2IP, sock: filepath.Join(dir, "containerd", "containerd.sock"), scratch: dir,
	}}
	cfg, err := writeContainerdConfig(n.path("containerd"), c.hostsDir, node2Bridge, node2PodCIDR, cniNetwork+"-node2")
	if err != nil {
		return n, err
	}
	// node 2's directory -> the path where node 2's pods and programs find it.
	binds := [][2]string{
		{n.path("certs.d"), c.hostsDir},
		{n.path("lifeboat-data"), c.path("lifeboat-data")},
		{cfg, c.containerdConfig},
		{n.path("host", "var-lib-kubelet"), "/var/lib/kubelet"}, // the device-plugin and pod-resources sockets
		{n.path("host", "var-lib-cni"), "/var/lib/cni"},         // libcni's cache
		{n.path("host", "run-containerd"), "/run/containerd"},   // the shims' sockets
		{n.path("host", "run-netns"), "/run/netns"},             // the pods' network namespaces
		{n.path("host", "var-log-containers"), "/var/log/containers"},
	}
	var script strings.Builder
	script.WriteString("set -e\n")
	for _, b := range binds {
		for _, d := range b {
			if d == cfg || d == c.containerdConfig {
				continue
			}
			if err := os.MkdirAll(d, 0o755); err != nil {
				return n, err
			}
		}
		fmt.Fprintf(&script, "mount --bind %s %s\n", b[0], b[1])
	}
	fmt.Fprintf(&script, "exec %s --config %s\n", containerdBin, cfg)
	// nsenter, unshare and sh each exec the next: the PID is containerd's.
	n.containerd, err = c.start("containerd-node2", "nsenter", "--net="+node2NetNSPath, "--",
		"unshare", "--mount", "--propagation", "slave", "--", "/bin/sh", "-c", script.String())
	if err != nil {
		return n, err
	}
	if err := n.waitContainerd(n.containerd); err != nil {
		return n, err
	}
	if err := n.importImages(imgs); err != nil {
		return n, err
	}
	if err := n.importTarball(lifeboatTar); err != nil {
		return n, err
	}
	n.api, err = listenInNetNS(node2NetNSPath, fmt.Sprintf("127.0.0.1:%d", apiPort))
	if err != nil {
		return n, fmt.Errorf("the API server's forwarder in %s: %w", node2NetNS, err)
	}
	go forward(n.api, fmt.Sprintf("127.0.0.1:%d", apiPort))
	return n, nil
}

// join starts node 2's kubelet in containerd's namespaces and waits for
// the node to be Ready.
func (n *secondNode) join() error {
	// kubelet refuses a --cgroup-root that does not exist.
	for _, h := range cgroupHierarchies() {
		d := filepath.Join(h, node2CgroupRoot)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if filepath.Base(h) == "cpuset" { // an empty cpuset takes no process
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(h, f))
				if err == nil {
					err = os.WriteFile(filepath.Join(d, f), b, 0o644)
				}
				if err != nil {
					return err
				}
			}
		}
	}
	var err error
	n.kubelet, err = n.c.runKubelet(kubeletOn{
		proc: "kubelet-node2", dir: n.path("kubelet"), node: n.node,
		address: "0.0.0.0", cgroupRoot: node2CgroupRoot,
		kubeconfig: n.c.path("kubelet-node2.kubeconfig"), serving: "kubelet-node2-serving",
		wrap: []string{"nsenter", "--target=" + strconv.Itoa(n.containerd.cmd.Process.Pid), "--net", "--mount", "--"},
	})
	if err != nil {
		return err
	}
	return n.c.waitNodeReady(n.kubelet, node2Name)
}

// stop takes node 2 away: its pods' containers, kubelet, containerd and
// whatever they left (by PID), its cgroups and its Node object. The
// network namespace stays for the cluster's teardown (node 1's address is
// on it). Safe to call twice.
func (n *secondNode) stop() error {
	if n == nil {
		return nil
	}
	var errs []error
	if n.kubelet != nil {
		n.kubelet.stop(15 * time.Second)
	}
	if n.containerd != nil && !n.containerd.exited() {
		n.killTasks()
	}
	if n.containerd != nil {
		n.containerd.stop(15 * time.Second)
	}
	if n.api != nil {
		_ = n.api.Close()
	}
	if left := killNode2Procs(10 * time.Second); len(left) > 0 {
		errs = append(errs, fmt.Errorf("node 2's processes still running: %v", left))
	}
	removeCgroups(node2CgroupRoot) // node 1's kubelet is still running: its own stay
	if n.kubelet != nil {
		if _, err := n.c.kubectl("delete", "node", node2Name, "--ignore-not-found"); err != nil {
			errs = append(errs, err)
		}
		// Its pods are gone with it: no kubelet will confirm their end.
		_, err := n.c.kubectl("delete", "pods", "--all-namespaces", "--field-selector=spec.nodeName="+node2Name,
			"--force", "--grace-period=0", "--ignore-not-found")
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// node2PIDs are the processes in node 2's network namespace (containerd,
// kubelet, the shims, host-network containers) or in its kubelet's
// cgroups (the other containers): what is left of node 2 if the harness
// was killed before its teardown.
func node2PIDs() []int {
	var pids []int
	// The namespace's identity is its nsfs device and inode; a stale plain
	// file left at the path (not a mounted namespace) names none.
	var nsDev, nsIno uint64
	var st syscall.Stat_t
	var fs syscall.Statfs_t
	if syscall.Statfs(node2NetNSPath, &fs) == nil && fs.Type == nsfsMagic && syscall.Stat(node2NetNSPath, &st) == nil {
		nsDev, nsIno = st.Dev, st.Ino
	}
	self := os.Getpid()
	if nsIno != 0 {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == self {
				continue
			}
			if syscall.Stat(filepath.Join("/proc", e.Name(), "ns", "net"), &st) == nil && st.Dev == nsDev && st.Ino == nsIno {
				pids = append(pids, pid)
			}
		}
	}
	for _, h := range cgroupHierarchies() {
		_ = filepath.WalkDir(filepath.Join(h, node2CgroupRoot), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid != self {
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	slices.Sort(pids)
	return slices.Compact(pids)
}

// killNode2Procs ends node2PIDs (SIGTERM, SIGKILL after grace) and
// returns the ones left.
func killNode2Procs(grace time.Duration) []int {
	return killAll(node2PIDs, grace)
}

// cgroupHierarchies are the mounted cgroup hierarchies: each cgroup v1
// controller's, or the single v2 one.
func cgroupHierarchies() []string {
	ms, _ := mounts()
	var hs []string
	for _, f := range ms {
		if (f[2] == "cgroup" || f[2] == "cgroup2") && strings.HasPrefix(f[1], "/sys/fs/cgroup") {
			hs = append(hs, f[1])
		}
	}
	return hs
}

// listenInNetNS listens on addr in the network namespace at nsPath. A
// thread enters the namespace to open the socket, which stays in it;
// the thread is never unlocked, so it ends with its goroutine instead of
// going back to the scheduler in the wrong namespace.
func listenInNetNS(nsPath, addr string) (net.Listener, error) {
	type result struct {
		ln  net.Listener
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(nsPath)
		if err != nil {
			done <- result{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{nil, fmt.Errorf("setns %s: %w", nsPath, err)}
			return
		}
		ln, err := net.Listen("tcp", addr)
		done <- result{ln, err}
	}()
	r := <-done
	return r.ln, r.err
}

// forward copies each connection ln accepts to a new one to target, both
// ways, until ln is closed.
func forward(ln net.Listener, target string) {
	for {
		in, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer in.Close()
			out, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				return
			}
			defer out.Close()
			go func() { _, _ = io.Copy(out, in); _ = out.(*net.TCPConn).CloseWrite() }()
			_, _ = io.Copy(in, out)
		}()
	}
}
