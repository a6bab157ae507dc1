package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The cluster's fixed addresses, on loopback (but the nodes' own, on the
// veth pair to node 2: node2_test.go). etcd is off its default ports so
// that an etcd someone else runs on the machine is left alone.
const (
	nodeName      = "lifeboat-e2e-node"
	apiPort       = 6443
	etcdPort      = 32379
	etcdPeerPort  = 32380
	bridgeName    = "lbe2e0"
	cniNetwork    = "lifeboat-e2e"
	podCIDR       = "10.244.0.0/24"
	serviceCIDR   = "10.96.0.0/16"
	sandboxImage  = "registry.k8s.io/pause:3.10"
	kubeVersion   = "v1.34.4"
	containerdBin = "/usr/bin/containerd"
)

// cluster is the running cluster under runDir: its control plane and node
// 1 (node 2 is a secondNode, started by scenario 8).
type cluster struct {
	runDir string
	binDir string // kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl
	pki    *pki
	procs  []*proc // in start order; stopped in reverse
	// admin is the cluster-admin kubeconfig.
	admin string
	// hostsDir is containerd's config_path, where the chart writes hosts.toml.
	hostsDir string
	// containerdConfig is containerd's config file.
	containerdConfig string
	// node is the first node: its name, address and containerd (the
	// second one, scenario 8's, is a secondNode).
	node
}

// node is one node's name, address and containerd, which ctr reaches on
// its socket.
type node struct {
	name string
	ip   string // its InternalIP: the kubelet's --node-ip
	sock string // containerd's socket
	// scratch is a directory for the image tarballs imported.
	scratch string
}

// proc is one process the harness started.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (c *cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.runDir}, elem...)...)
}

// start runs bin with args, its output in <runDir>/logs/<name>.log.
func (c *cluster) start(name, bin string, args ...string) (*proc, error) {
	logPath := c.path("logs", name+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: a ^C to `make e2e` reaches the harness,
	// which stops the cluster in order, not every process at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	c.procs = append(c.procs, p)
	return p, recordPID(c.runDir, cmd.Process.Pid)
}

// stop sends SIGTERM to the process, by PID, and SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail is the last n bytes of the process's log.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// waitFor polls check every interval until it returns nil, the process
// exits or timeout passes.
func waitFor(p *proc, timeout time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited while waiting for %s:\n%s", p.name, what, p.tail(3000))
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("%s not ready after %s: %v", what, timeout, err)
			if p != nil {
				msg += "\n" + p.tail(3000)
			}
			return errors.New(msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startCluster brings the cluster up: PKI, etcd, containerd,
// kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, and
// waits for the node to be Ready.
func startCluster(runDir, binDir string) (*cluster, error) {
	c := &cluster{
		runDir:           runDir,
		binDir:           binDir,
		admin:            filepath.Join(runDir, "admin.kubeconfig"),
		hostsDir:         filepath.Join(runDir, "certs.d"),
		containerdConfig: filepath.Join(runDir, "containerd", "config.toml"),
		node:             node{name: nodeName, ip: node1IP, sock: filepath.Join(runDir, "containerd", "containerd.sock"), scratch: runDir},
	}
	steps := []struct {
		name string
		fn   func() error
	}{
		{"pki", c.writePKI},
		{"node network", setupNodeNetwork},
		{"etcd", c.startEtcd},
		{"containerd", c.startContainerd},
		{"kube-apiserver", c.startAPIServer},
		{"kube-controller-manager", c.startControllerManager},
		{"kube-scheduler", c.startScheduler},
		{"kubelet", c.startKubelet},
	}
	for _, s := range steps {
		start := time.Now()
		if err := s.fn(); err != nil {
			return c, fmt.Errorf("%s: %w", s.name, err)
		}
		logf("cluster: %s up in %s", s.name, time.Since(start).Round(time.Millisecond))
	}
	return c, nil
}

func (c *cluster) writePKI() error {
	p, err := newPKI(c.path("pki"))
	if err != nil {
		return err
	}
	c.pki = p
	issues := []struct {
		name, cn string
		orgs     []string
		hosts    []string
	}{
		{"apiserver", "kube-apiserver", nil, []string{"127.0.0.1", "localhost", "10.96.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}},
		{"admin", "lifeboat-e2e-admin", []string{"system:masters"}, nil},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil},
		{"kubelet", "system:node:" + nodeName, []string{"system:nodes"}, nil},
		{"kubelet-serving", nodeName, nil, []string{nodeName, "127.0.0.1", node1IP}},
		{"kubelet-node2", "system:node:" + node2Name, []string{"system:nodes"}, nil},
		{"kubelet-node2-serving", node2Name, nil, []string{node2Name, "127.0.0.1", node2IP}},
	}
	for _, i := range issues {
		if err := p.issue(i.name, i.cn, i.orgs, i.hosts...); err != nil {
			return err
		}
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	if err := p.kubeconfig(c.admin, server, "admin"); err != nil {
		return err
	}
	// Node 2 reaches the API server on its own loopback too: the
	// harness forwards 127.0.0.1:6443 in its network namespace.
	if err := p.kubeconfig(c.path("kubelet-node2.kubeconfig"), server, "kubelet-node2"); err != nil {
		return err
	}
	return p.kubeconfig(c.path("kubelet.kubeconfig"), server, "kubelet")
}

func (c *cluster) startEtcd() error {
	client := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", etcdPeerPort)
	p, err := c.start("etcd", "etcd",
		"--name=e2e", "--data-dir="+c.path("etcd"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=e2e="+peer,
		"--quota-backend-bytes=1073741824", "--log-level=warn")
	if err != nil {
		return err
	}
	return waitFor(p, 30*time.Second, "etcd", answersOK(http.DefaultClient, client+"/health"))
}

// containerd 1.6's config: everything under runDir (root, state, the
// runc root, the socket), cgroupfs, the native snapshotter (no overlayfs
// needed), restrict_oom_score_adj (root here lacks CAP_SYS_RESOURCE, and
// runc fails to write a negative oom_score_adj without it), and
// config_path, read only when containerd starts.
const containerdConfig = `version = 2
root = "@D@/root"
state = "@D@/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "@D@/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "@D@/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "@SANDBOX@"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "@D@/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "@D@/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "@HOSTS@"
`

// The pod network: a bridge on the node with host-local addresses, its
// state under runDir. No masquerading: nothing leaves the machine.
const cniConfig = `{
  "cniVersion": "1.0.0",
  "name": "@NET@",
  "plugins": [{
    "type": "bridge",
    "bridge": "@BRIDGE@",
    "isGateway": true,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "@CIDR@"}]], "dataDir": "@D@/ipam"}
  }]
}
`

func (c *cluster) startContainerd() error {
	cfg, err := writeContainerdConfig(filepath.Dir(c.containerdConfig), c.hostsDir, bridgeName, podCIDR, cniNetwork)
	if err != nil {
		return err
	}
	p, err := c.start("containerd", containerdBin, "--config", cfg)
	if err != nil {
		return err
	}
	return c.node.waitContainerd(p)
}

// writeContainerdConfig writes containerd's config and its pod network's
// under dir, and returns the config's path. hostsDir is its config_path.
func writeContainerdConfig(dir, hostsDir, bridge, cidr, network string) (string, error) {
	if err := os.MkdirAll(filepath.Join(dir, "net.d"), 0o755); err != nil {
		return "", err
	}
	if err := os.MkdirAll(hostsDir, 0o755); err != nil {
		return "", err
	}
	r := strings.NewReplacer("@D@", dir, "@HOSTS@", hostsDir, "@SANDBOX@", sandboxImage, "@BRIDGE@", bridge, "@CIDR@", cidr, "@NET@", network)
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(r.Replace(containerdConfig)), 0o644); err != nil {
		return "", err
	}
	return cfg, os.WriteFile(filepath.Join(dir, "net.d", "10-"+network+".conflist"), []byte(r.Replace(cniConfig)), 0o644)
}

// waitContainerd waits until the node's containerd answers.
func (n *node) waitContainerd(p *proc) error {
	return waitFor(p, 30*time.Second, "containerd", func() error {
		_, err := n.ctr("version")
		return err
	})
}

// ctr runs ctr against the node's containerd, in kubelet's namespace.
func (n *node) ctr(args ...string) (string, error) {
	out, err := exec.Command("ctr", append([]string{"--address", n.sock, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (c *cluster) startAPIServer() error {
	pk := c.pki.path
	p, err := c.start("kube-apiserver", filepath.Join(c.binDir, "kube-apiserver"),
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdPort),
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", apiPort),
		"--service-cluster-ip-range="+serviceCIDR,
		"--client-ca-file="+pk("ca.crt"),
		"--tls-cert-file="+pk("apiserver.crt"), "--tls-private-key-file="+pk("apiserver.key"),
		"--kubelet-client-certificate="+pk("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+pk("apiserver-kubelet-client.key"),
		// The node's name resolves to 127.0.0.1 (/etc/hosts): the API
		// server reaches the kubelet (logs, exec) on loopback.
		"--kubelet-preferred-address-types=Hostname",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+pk("sa.pub"),
		"--service-account-signing-key-file="+pk("sa.key"),
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		// A loopback address cannot be the kubernetes Service's endpoint.
		"--endpoint-reconciler-type=none",
		// The e2e cluster has no kube-proxy: a MutatingAdmissionPolicy
		// points the chart's hook Job at the API server on loopback.
		"--feature-gates=MutatingAdmissionPolicy=true",
		"--runtime-config=admissionregistration.k8s.io/v1beta1=true",
		"--profiling=false")
	if err != nil {
		return err
	}
	return waitFor(p, 60*time.Second, "kube-apiserver", func() error {
		_, err := c.kubectl("get", "--raw=/readyz")
		return err
	})
}

func (c *cluster) startControllerManager() error {
	p, err := c.start("kube-controller-manager", filepath.Join(c.binDir, "kube-controller-manager"),
		"--kubeconfig="+c.admin,
		"--authentication-kubeconfig="+c.admin, "--authorization-kubeconfig="+c.admin,
		"--bind-address=127.0.0.1", "--secure-port=10257",
		"--leader-elect=false",
		"--service-account-private-key-file="+c.pki.path("sa.key"),
		"--root-ca-file="+c.pki.path("ca.crt"),
		"--use-service-account-credentials=true",
		"--profiling=false")
	if err != nil {
		return err
	}
	return waitFor(p, 60*time.Second, "kube-controller-manager", healthz(10257))
}

func (c *cluster) startScheduler() error {
	p, err := c.start("kube-scheduler", filepath.Join(c.binDir, "kube-scheduler"),
		"--kubeconfig="+c.admin,
		"--authentication-kubeconfig="+c.admin, "--authorization-kubeconfig="+c.admin,
		"--bind-address=127.0.0.1", "--secure-port=10259",
		"--leader-elect=false",
		"--profiling=false")
	if err != nil {
		return err
	}
	return waitFor(p, 60*time.Second, "kube-scheduler", healthz(10259))
}

// healthz checks a component's /healthz on loopback (served to anyone).
func healthz(port int) func() error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the component's self-signed serving cert
	}}
	return answersOK(client, fmt.Sprintf("https://127.0.0.1:%d/healthz", port))
}

// answersOK checks that a GET of url answers 200.
func answersOK(client *http.Client, url string) func() error {
	return func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

// The kubelet: cgroupfs (no systemd), swap tolerated, no iptables chains
// of its own on the machine (nothing here reads them, and the teardown
// would have to take them away), every address on loopback (node 2's on its
// veth), every directory under runDir, and disk thresholds low enough
// that a busy shared disk neither evicts the test pods nor collects the
// images the node cannot pull again.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: @ADDR@
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
cgroupRoot: @CGROOT@
makeIPTablesUtilChains: false
failSwapOn: false
containerRuntimeEndpoint: unix://@SOCK@
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: @PKI@/ca.crt
authorization:
  mode: Webhook
tlsCertFile: @PKI@/@SERVING@.crt
tlsPrivateKeyFile: @PKI@/@SERVING@.key
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
volumePluginDir: @D@/volume-plugins
podLogsDir: @D@/pod-logs
resolvConf: /etc/resolv.conf
`

func (c *cluster) startKubelet() error {
	p, err := c.runKubelet(kubeletOn{
		proc: "kubelet", dir: c.path("kubelet"), node: c.node,
		address: "127.0.0.1", cgroupRoot: "/",
		kubeconfig: c.path("kubelet.kubeconfig"), serving: "kubelet-serving",
	})
	if err != nil {
		return err
	}
	return c.waitNodeReady(p, nodeName)
}

// kubeletOn is how one node's kubelet runs.
type kubeletOn struct {
	proc string // its process's name
	dir  string // its config, root, certificate and log directories
	node
	address    string   // where it serves (the API server's logs and exec)
	cgroupRoot string   // under which it makes its pods' cgroups
	kubeconfig string   // its credentials
	serving    string   // its serving certificate's name in the PKI
	wrap       []string // the command it runs under, if any (node 2's namespaces)
}

func (c *cluster) runKubelet(k kubeletOn) (*proc, error) {
	if err := os.MkdirAll(k.dir, 0o755); err != nil {
		return nil, err
	}
	r := strings.NewReplacer("@D@", k.dir, "@SOCK@", k.sock, "@PKI@", c.pki.dir, "@ADDR@", k.address, "@CGROOT@", k.cgroupRoot, "@SERVING@", k.serving)
	cfg := filepath.Join(k.dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(r.Replace(kubeletConfig)), 0o644); err != nil {
		return nil, err
	}
	args := slices.Clone(k.wrap)
	args = append(args, filepath.Join(c.binDir, "kubelet"),
		"--config="+cfg,
		"--kubeconfig="+k.kubeconfig,
		"--hostname-override="+k.name,
		// An address the other node reaches (scenario 8): node 1's is
		// the host's end of the veth pair to node 2's network
		// namespace. The peers meet on these addresses.
		"--node-ip="+k.ip,
		"--root-dir="+filepath.Join(k.dir, "root"),
		"--cert-dir="+filepath.Join(k.dir, "pki"))
	return c.start(k.proc, args[0], args[1:]...)
}

// waitNodeReady waits for the node's Ready condition.
func (c *cluster) waitNodeReady(p *proc, name string) error {
	return waitFor(p, 90*time.Second, "node "+name+" Ready", func() error {
		out, err := c.kubectl("get", "node", name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err != nil {
			return err
		}
		if out != "True" {
			return fmt.Errorf("Ready=%q", out)
		}
		return nil
	})
}

// kubectl runs kubectl as cluster-admin and returns its standard output.
func (c *cluster) kubectl(args ...string) (string, error) {
	return c.kubectlIn(context.Background(), "", args...)
}

// kubectlIn runs kubectl with stdin, under ctx.
func (c *cluster) kubectlIn(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, "kubectl"), append([]string{"--kubeconfig=" + c.admin}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// teardown stops everything and removes runDir: kubelet first (so it
// restarts nothing), then the pods' processes (by the PIDs containerd
// reports), containerd and what is left of its shims, the control plane,
// etcd; then the mounts, the bridge, the cgroups and /etc/hosts.
func (c *cluster) teardown() error {
	var errs []error
	byName := map[string]*proc{}
	for _, p := range c.procs {
		byName[p.name] = p
	}
	// Pods deleted through the API: kubelet stops their sandboxes, and
	// containerd tears their networks down (veth, network namespace).
	if p := byName["kubelet"]; p != nil && !p.exited() {
		if _, err := c.kubectl(append([]string{"delete", "namespaces", "--ignore-not-found", "--timeout=60s"}, testNamespaces...)...); err != nil {
			logf("teardown: %v", err)
		}
		if err := waitFor(nil, 30*time.Second, "no pod sandboxes left", func() error {
			out, err := c.ctr("tasks", "ls", "-q")
			if err == nil && strings.TrimSpace(out) != "" {
				err = fmt.Errorf("tasks running: %s", strings.Fields(out))
			}
			return err
		}); err != nil {
			logf("teardown: %v", err)
		}
	}
	if p := byName["kubelet"]; p != nil {
		p.stop(15 * time.Second)
	}
	if p := byName["containerd"]; p != nil && !p.exited() {
		c.killTasks()
	}
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(15 * time.Second)
	}
	errs = append(errs, cleanupRunDir(c.runDir))
	return errors.Join(errs...)
}

// killTasks kills every container the node's containerd runs, by the
// PID it reports.
func (n *node) killTasks() {
	out, err := n.ctr("tasks", "ls")
	if err != nil {
		return
	}
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] == "TASK" {
			continue
		}
		if pid, err := strconv.Atoi(f[1]); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	time.Sleep(500 * time.Millisecond)
}

// cleanupRunDir undoes what a run left on the machine, whether it ended
// cleanly or was killed: leftover processes (node 2's, shims), mounts,
// the pod bridge, node 2's network namespace and veth pair, the kubelets'
// cgroups, the /etc/hosts lines, then runDir itself.
func cleanupRunDir(runDir string) error {
	var errs []error
	if left := killNode2Procs(10 * time.Second); len(left) > 0 {
		errs = append(errs, fmt.Errorf("node 2's processes still running: %v", left))
	}
	if left := killOwned(runDir, 10*time.Second); len(left) > 0 {
		errs = append(errs, fmt.Errorf("processes still running: %v", left))
	}
	if err := unmountUnder(runDir); err != nil {
		errs = append(errs, err)
	}
	if _, err := net.InterfaceByName(bridgeName); err == nil {
		if out, err := exec.Command("ip", "link", "delete", bridgeName).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip link delete %s: %w: %s", bridgeName, err, out))
		}
	}
	if err := removeNodeNetwork(); err != nil {
		errs = append(errs, err)
	}
	removeCgroups("kubepods", node2CgroupRoot)
	if err := removeSystemDirs(runDir); err != nil {
		errs = append(errs, err)
	}
	if err := removeHosts(); err != nil {
		errs = append(errs, fmt.Errorf("restore %s: %w", etcHosts, err))
	}
	if err := os.RemoveAll(runDir); err != nil {
		errs = append(errs, err)
	}
	_ = os.Remove(filepath.Dir(runDir)) // if empty: the harness created it
	return errors.Join(errs...)
}
