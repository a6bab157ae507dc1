package main

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"time"

	"github.com/lifeboat-dev/lifeboat/nodeconfig"
	"github.com/prometheus/client_golang/prometheus"
)

// nodeChecker repeats the cheap checks of lifeboat doctor (the runtime's
// config points at lifeboat's files, and they are lifeboat's, lifeboat
// first) and exports the outcome as lifeboat_node_config_ok. A node whose
// runtime bypasses lifeboat looks healthy from everywhere else: lifeboat
// is up, its metrics scraped, and it is simply never asked.
type nodeChecker struct {
	cfg     nodeCheckConfig
	mirror  string
	targets []nodeconfig.Target
	ok      prometheus.Gauge
	log     *slog.Logger
	last    []nodeconfig.Finding
}

// newNodeChecker returns nil when no check is configured.
func newNodeChecker(cfg serveConfig, listen string, reg prometheus.Registerer, log *slog.Logger) *nodeChecker {
	nc := cfg.NodeCheck
	if nc.ContainerdHostsDir == "" && nc.CRIOConfDir == "" {
		return nil
	}
	targets := make([]nodeconfig.Target, 0, len(cfg.Upstreams))
	for _, u := range cfg.Upstreams {
		targets = append(targets, nodeconfig.Target{Name: u.Name, Server: u.URL})
	}
	c := &nodeChecker{cfg: nc, mirror: mirrorURL(listen), targets: targets, log: log,
		ok: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lifeboat_node_config_ok",
			Help: "1 while this node's runtime configuration sends pulls to lifeboat (its config points at lifeboat's hosts.toml or drop-in, lifeboat first, for every upstream); 0: the runtime bypasses lifeboat (lifeboat doctor says why).",
		})}
	if reg != nil {
		reg.MustRegister(c.ok)
	}
	return c
}

// mirrorURL is lifeboat's URL as the runtime on this node reaches it: the
// registry listener, a wildcard address reached on loopback.
func mirrorURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// check runs the checks once, sets the gauge, and logs the findings when
// they changed (all of them the first time: the chart's record of what
// lifeboat doctor would say at start).
func (c *nodeChecker) check() {
	var findings []nodeconfig.Finding
	under := func(p string) string {
		if c.cfg.HostRoot == "" || p == "" {
			return p
		}
		return filepath.Join(c.cfg.HostRoot, p)
	}
	skip := func(paths ...string) bool {
		if !c.cfg.OnlyIfPresent {
			return false
		}
		return !slices.ContainsFunc(paths, func(p string) bool { return p != "" && present(under(p)) })
	}
	if d := c.cfg.ContainerdHostsDir; d != "" && !skip(d, c.cfg.ContainerdConfig) {
		ctd := nodeconfig.Containerd{HostsDir: under(d), Mirror: c.mirror}
		findings = append(findings, ctd.CheckContainerd(under(c.cfg.ContainerdConfig), d, c.targets)...)
	}
	if d := c.cfg.CRIOConfDir; d != "" && !skip(d) {
		findings = append(findings, nodeconfig.CRIO{Root: c.cfg.HostRoot, ConfDir: d, Mirror: c.mirror}.CheckCRIO(c.targets)...)
	}
	ok := nodeconfig.Healthy(findings)
	c.ok.Set(map[bool]float64{true: 1}[ok])
	if slices.Equal(findings, c.last) {
		return
	}
	c.last = findings
	for _, f := range findings {
		level := map[nodeconfig.Status]slog.Level{nodeconfig.OK: slog.LevelInfo, nodeconfig.Warn: slog.LevelWarn, nodeconfig.Fail: slog.LevelError}[f.Status]
		c.log.Log(context.Background(), level, "node check", "status", f.Status.String(), "check", f.Check, "detail", f.Detail, "fix", f.Fix)
	}
	if !ok {
		c.log.Error("this node's runtime bypasses lifeboat for some registries; lifeboat doctor explains", "lifeboat_node_config_ok", 0)
	}
}

// run checks at once, then every interval until ctx ends.
func (c *nodeChecker) run(ctx context.Context) {
	c.check()
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.check()
		}
	}
}
