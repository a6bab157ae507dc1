package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lifeboat-dev/lifeboat/nodeconfig"
)

const doctorUsage = `Usage: lifeboat doctor [flags]

Check, on a node, that its container runtime pulls through lifeboat, and
explain what is wrong: one line per check, OK, WARN or FAIL, with the fix.
It exits 1 when a check fails (the runtime bypasses lifeboat, or lifeboat
does not answer), 0 otherwise (warnings included).

  runtime config   containerd's config points config_path at --hosts-dir;
                   CRI-O's drop-in in --crio-conf-dir is lifeboat's
  runtime loaded   the running containerd (--containerd-socket) loaded that
                   config_path: containerd reads it only at start
  hosts.toml       each registry's hosts.toml is lifeboat's, lifeboat first
  lifeboat         answers /v2/ on --mirror and /readyz on --metrics
  upstream         each registry answers /v2/ from this node; lifeboat's
                   circuit breaker for it (lifeboat_upstream_circuit_open)
  disk             free space on the data directory's, containerd's and
                   kubelet's filesystems against kubelet's thresholds
                   (nodefs.available 10%: pods are evicted; image GC at
                   85% used), and lifeboat's own floor on a shared one

--runtime auto checks containerd when its config or socket exists, and
CRI-O when /etc/crio or its socket does. In lifeboat's pod (kubectl exec
ds/lifeboat -c lifeboat -- lifeboat doctor) the chart sets the paths.

Every flag can also be set with LIFEBOAT_<FLAG> (upper case, - becomes _);
flags win.

Flags:
`

// doctorConfig is every setting of `lifeboat doctor`.
type doctorConfig struct {
	runtime                            string
	hostsDir, containerdConfig, socket string
	crioConfDir, crioDetect            string
	mirror, metrics, dataDir           string
	containerdRoot, kubeletRoot        string
	registries                         []nodeconfig.Target
	scope                              nodeScope
	wait                               time.Duration
}

func loadDoctorConfig(args []string, stdout io.Writer) (doctorConfig, error) {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	var c doctorConfig
	fs.StringVar(&c.runtime, "runtime", "auto", "containerd, crio or auto")
	fs.StringVar(&c.hostsDir, "hosts-dir", "/etc/containerd/certs.d", "containerd's registry host directory (its config_path)")
	fs.StringVar(&c.containerdConfig, "containerd-config", "/etc/containerd/config.toml", "containerd's config file")
	fs.StringVar(&c.socket, "containerd-socket", "/run/containerd/containerd.sock", "containerd's socket, asked which config_path it loaded (empty: not asked)")
	fs.StringVar(&c.crioConfDir, "crio-conf-dir", "/etc/containers/registries.conf.d", "CRI-O's registries.conf.d")
	fs.StringVar(&c.crioDetect, "crio-detect", "/etc/crio,/run/crio/crio.sock", "comma-separated host paths that show CRI-O is on this node (--runtime auto)")
	fs.StringVar(&c.mirror, "mirror", "http://127.0.0.1:5000", "lifeboat's registry API, as the runtime reaches it (serve's --listen)")
	fs.StringVar(&c.metrics, "metrics", "http://127.0.0.1:5090", "lifeboat's metrics listener (serve's --metrics-listen); empty: not asked")
	fs.StringVar(&c.dataDir, "data-dir", "/var/lib/lifeboat", "lifeboat's data directory, for the disk check (a host path)")
	fs.StringVar(&c.containerdRoot, "containerd-root", "/var/lib/containerd", "containerd's root (its image store), for the disk check")
	fs.StringVar(&c.kubeletRoot, "kubelet-root", "/var/lib/kubelet", "kubelet's root directory (nodefs), for the disk check")
	fs.DurationVar(&c.wait, "timeout", 5*time.Second, "bound on each network check")
	var registries repeated
	fs.Var(&registries, "registries", "comma-separated registries, NAME or NAME=SERVER_URL; repeatable\n(default: those serve mirrors by default: "+defaultRegistryNames()+")")
	addNodeScopeFlags(fs, &c.scope, "the runtime")
	if err := parseNodeFlags(fs, doctorUsage, args, stdout); err != nil {
		return c, err
	}
	if c.runtime != "auto" && c.runtime != "containerd" && c.runtime != "crio" {
		return c, fmt.Errorf("--runtime %q: must be containerd, crio or auto", c.runtime)
	}
	mirror, err := nodeconfig.ParseMirror(c.mirror)
	if err != nil {
		return c, fmt.Errorf("--mirror %q: %w", c.mirror, err)
	}
	c.mirror = mirror
	if c.registries, err = parseRegistries(registries); err != nil {
		return c, err
	}
	return c, nil
}

// doctor runs `lifeboat doctor`.
func doctor(ctx context.Context, args []string, stdout, _ io.Writer) error {
	c, err := loadDoctorConfig(args, stdout)
	if err != nil {
		return err
	}
	findings := c.run(ctx)
	for _, f := range findings {
		fmt.Fprintln(stdout, f)
	}
	if !nodeconfig.Healthy(findings) {
		return errDoctorFailed
	}
	return nil
}

// errDoctorFailed: a check failed; the lines printed say which.
var errDoctorFailed = errors.New("a check failed")

func (c doctorConfig) run(ctx context.Context) []nodeconfig.Finding {
	var out []nodeconfig.Finding
	ctd, crio := c.runtimes()
	if !ctd && !crio {
		out = append(out, nodeconfig.Finding{Status: nodeconfig.Fail, Check: "runtime",
			Detail: fmt.Sprintf("neither containerd (%s, %s) nor CRI-O (%s) found", c.containerdConfig, c.socket, c.crioDetect),
			Fix:    "run doctor on the node (or in lifeboat's pod), or name the paths with --containerd-config, --containerd-socket, --crio-detect"})
	}
	if ctd {
		out = append(out, c.containerdFindings(ctx)...)
	}
	if crio {
		out = append(out, nodeconfig.CRIO{Root: c.scope.root, ConfDir: c.crioConfDir, Mirror: c.mirror}.CheckCRIO(c.registries)...)
	}
	metrics, lifeboatFindings := c.lifeboatFindings(ctx)
	out = append(out, lifeboatFindings...)
	out = append(out, c.upstreamFindings(ctx, metrics)...)
	return append(out, c.diskFindings(metrics)...)
}

// runtimes says which runtimes to check.
func (c doctorConfig) runtimes() (containerd, crio bool) {
	switch c.runtime {
	case "containerd":
		return true, false
	case "crio":
		return false, true
	}
	containerd = present(c.scope.path(c.containerdConfig)) || (c.socket != "" && present(c.scope.path(c.socket)))
	for p := range strings.SplitSeq(c.crioDetect, ",") {
		crio = crio || (strings.TrimSpace(p) != "" && present(c.scope.path(strings.TrimSpace(p))))
	}
	return containerd, crio
}

func present(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// containerdFindings: the config file and hosts.toml files, then what the
// running containerd loaded.
func (c doctorConfig) containerdFindings(ctx context.Context) []nodeconfig.Finding {
	ctd := nodeconfig.Containerd{HostsDir: c.scope.path(c.hostsDir), Mirror: c.mirror}
	out := ctd.CheckContainerd(c.scope.path(c.containerdConfig), c.hostsDir, c.registries)
	f := nodeconfig.Finding{Check: "containerd loaded"}
	if c.socket == "" {
		f.Status, f.Detail = nodeconfig.Warn, "not checked (no --containerd-socket)"
		return append(out, f)
	}
	if !present(c.scope.path(c.socket)) {
		f.Status, f.Detail = nodeconfig.Warn, fmt.Sprintf("not checked: %s does not exist", c.socket)
		f.Fix = "run doctor as root on the node, or name the socket with --containerd-socket"
		return append(out, f)
	}
	loaded, version, err := loadedConfigPath(ctx, c.scope.path(c.socket))
	if err != nil {
		f.Status, f.Detail = nodeconfig.Warn, fmt.Sprintf("cannot ask containerd at %s: %v", c.socket, err)
		f.Fix = "run doctor as root (the socket is root's)"
		return append(out, f)
	}
	inFile, fileErr := nodeconfig.ContainerdConfigPath(c.scope.path(c.containerdConfig))
	switch {
	case !sameDir(loaded, c.hostsDir) && fileErr == nil && sameDir(inFile, c.hostsDir):
		f.Status = nodeconfig.Fail
		f.Detail = fmt.Sprintf("%s runs with config_path %q, not %q as %s now says: it was started before the file changed", version, loaded, c.hostsDir, c.containerdConfig)
		f.Fix = "restart containerd (systemctl restart containerd; running containers keep running)"
	case !sameDir(loaded, c.hostsDir):
		f.Status = nodeconfig.Fail
		f.Detail = fmt.Sprintf("%s runs with config_path %q, not %q: it reads none of lifeboat's hosts.toml", version, loaded, c.hostsDir)
		f.Fix = fmt.Sprintf("set config_path = %q in %s, then restart containerd", c.hostsDir, c.containerdConfig)
	default:
		f.Detail = fmt.Sprintf("%s runs with config_path %q", version, loaded)
	}
	return append(out, f)
}

// lifeboatFindings: lifeboat answers on the mirror address and is ready.
// It returns lifeboat's metrics (nil when not reachable) for the checks
// that follow.
func (c doctorConfig) lifeboatFindings(ctx context.Context) (map[string]float64, []nodeconfig.Finding) {
	var out []nodeconfig.Finding
	f := nodeconfig.Finding{Check: "lifeboat registry", Detail: c.mirror + "/v2/ answers"}
	if code, err := c.get(ctx, c.mirror+"/v2/", nil); err != nil || code != http.StatusOK {
		f.Status = nodeconfig.Fail
		f.Detail = fmt.Sprintf("%s/v2/: %s: the runtime falls back to each registry, with no cache", c.mirror, answer(code, err))
		f.Fix = "kubectl -n lifeboat get pods -o wide (is lifeboat's pod on this node running?), its logs; --mirror must be serve's --listen"
	}
	out = append(out, f)
	if c.metrics == "" {
		return nil, out
	}
	f = nodeconfig.Finding{Check: "lifeboat ready", Detail: c.metrics + "/readyz answers"}
	if code, err := c.get(ctx, c.metrics+"/readyz", nil); err != nil || code != http.StatusOK {
		f.Status, f.Detail = nodeconfig.Fail, fmt.Sprintf("%s/readyz: %s", c.metrics, answer(code, err))
		f.Fix = "lifeboat's log says why (a store being opened or rebuilt is not ready yet)"
	}
	out = append(out, f)
	metrics := map[string]float64{}
	if _, err := c.get(ctx, c.metrics+"/metrics", func(r io.Reader) { parseMetrics(r, metrics) }); err != nil {
		return nil, out
	}
	return metrics, out
}

func answer(code int, err error) string {
	if err != nil {
		return err.Error()
	}
	return strconv.Itoa(code) + " " + http.StatusText(code)
}

// get sends one GET, bounded by --timeout, and hands the body to read.
func (c doctorConfig) get(ctx context.Context, url string, read func(io.Reader)) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, c.wait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", "lifeboat-doctor/"+version)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if read != nil {
		read(io.LimitReader(resp.Body, 16<<20))
	}
	return resp.StatusCode, nil
}

// sampleLine is one sample of the Prometheus text format, labels kept raw.
var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)`)

// parseMetrics reads lifeboat's /metrics into "name{labels}" -> value.
func parseMetrics(r io.Reader, into map[string]float64) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := sampleLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if v, err := strconv.ParseFloat(m[3], 64); err == nil {
			into[m[1]+m[2]] = v
		}
	}
}

// upstreamFindings: each registry answers /v2/ from this node (any HTTP
// answer: 401 is what a registry says to an anonymous client), and
// lifeboat's circuit breaker for it is closed.
func (c doctorConfig) upstreamFindings(ctx context.Context, metrics map[string]float64) []nodeconfig.Finding {
	out := make([]nodeconfig.Finding, len(c.registries))
	var wg sync.WaitGroup
	for i, t := range c.registries {
		wg.Go(func() {
			f := nodeconfig.Finding{Check: "upstream " + t.Name}
			code, err := c.get(ctx, strings.TrimSuffix(t.Server, "/")+"/v2/", nil)
			reach := fmt.Sprintf("%s/v2/ answers %s", t.Server, answer(code, err))
			if err != nil || code >= 500 || code == http.StatusTooManyRequests {
				f.Status = nodeconfig.Warn
				reach = fmt.Sprintf("%s/v2/: %s: images lifeboat holds still start (tags served stale), others fail", t.Server, answer(code, err))
				f.Fix = "check the node's route, DNS and proxy to " + t.Server + "; pin what pods need with prefetch"
			}
			open, known := metrics[fmt.Sprintf("lifeboat_upstream_circuit_open{registry=%q}", t.Name)]
			switch {
			case metrics == nil:
			case !known:
				f.Status = max(f.Status, nodeconfig.Warn)
				reach += "; lifeboat does not mirror it"
				f.Fix = "add it to serve's --upstream (the chart's registries or extraUpstreams), or leave it out of --registries"
			case open == 1:
				f.Status = max(f.Status, nodeconfig.Warn)
				reach += "; lifeboat's circuit breaker is open (it found the registry unavailable)"
				if f.Fix == "" {
					f.Fix = "the registry is back for this node: the breaker closes at lifeboat's next probe (within breaker.maxBackoff)"
				}
			default:
				reach += "; lifeboat's circuit closed"
			}
			f.Detail = reach
			out[i] = f
		})
	}
	wg.Wait()
	return out
}

// kubelet's defaults: pods are evicted below 10% free on nodefs (and
// imagefs, 15% there), and image garbage collection starts at 85% used.
const (
	kubeletEvictFree = 0.10
	kubeletImageGC   = 0.85
)

// diskFindings: one per filesystem among the data directory's,
// containerd's root's and kubelet's root's.
func (c doctorConfig) diskFindings(metrics map[string]float64) []nodeconfig.Finding {
	type fsUse struct {
		paths       []string
		free, total uint64
	}
	var order []uint64
	byDev := map[uint64]*fsUse{}
	var out []nodeconfig.Finding
	for _, p := range []string{c.dataDir, c.containerdRoot, c.kubeletRoot} {
		if p == "" {
			continue
		}
		dev, free, total, err := diskUse(c.scope.path(p))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			out = append(out, nodeconfig.Finding{Status: nodeconfig.Warn, Check: "disk " + p, Detail: err.Error()})
			continue
		}
		if byDev[dev] == nil {
			byDev[dev] = &fsUse{free: free, total: total}
			order = append(order, dev)
		}
		byDev[dev].paths = append(byDev[dev].paths, p)
	}
	for _, dev := range order {
		u := byDev[dev]
		f := nodeconfig.Finding{Check: "disk " + strings.Join(u.paths, ", ")}
		freeFrac := float64(u.free) / float64(u.total)
		f.Detail = fmt.Sprintf("%.0f%% free (%s of %s)", 100*freeFrac, sizeString(u.free), sizeString(u.total))
		switch {
		case freeFrac < kubeletEvictFree:
			f.Status, f.Detail = nodeconfig.Fail, f.Detail+": below kubelet's eviction threshold (nodefs.available 10%): pods are being evicted"
			f.Fix = "free space; lower lifeboat's maxSize or raise minFreeDisk (lifeboat gc --dry-run shows what would go)"
		case 1-freeFrac >= kubeletImageGC:
			f.Status, f.Detail = nodeconfig.Warn, f.Detail+": past kubelet's image GC threshold (85% used): kubelet is deleting images"
			f.Fix = "free space, or give lifeboat's cache a disk of its own (dataDir.hostPath)"
		}
		if shared := len(u.paths) > 1 && u.paths[0] == c.dataDir; shared && metrics != nil {
			floor := metrics["lifeboat_cache_min_free_disk_bytes"]
			if floor > 0 && floor/float64(u.total) < 1-kubeletImageGC {
				f.Status = max(f.Status, nodeconfig.Warn)
				f.Detail += fmt.Sprintf("; lifeboat's free-disk floor (%s) is below kubelet's image GC threshold on this shared filesystem: kubelet deletes images and evicts pods before lifeboat evicts anything", sizeString(uint64(floor)))
				f.Fix = "raise minFreeDisk to 25% or more, or give lifeboat's cache a disk of its own"
			}
		}
		out = append(out, f)
	}
	return out
}

// sizeString is a byte count in GiB or MiB, for people.
func sizeString(n uint64) string {
	if n >= 1<<30 {
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
}

// diskUse is the device, free bytes (for unprivileged users, as kubelet
// counts them) and size of the filesystem holding p.
func diskUse(p string) (dev, free, total uint64, err error) {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return 0, 0, 0, &os.PathError{Op: "stat", Path: p, Err: err}
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(p, &fs); err != nil {
		return 0, 0, 0, &os.PathError{Op: "statfs", Path: p, Err: err}
	}
	return st.Dev, fs.Bavail * uint64(fs.Bsize), fs.Blocks * uint64(fs.Bsize), nil
}
