package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/lifeboat-dev/lifeboat/proxy"
)

// defaultUpstreams are mirrored when neither flags, env nor file name any.
var defaultUpstreams = []upstreamConfig{
	{Name: "docker.io", URL: "https://registry-1.docker.io"},
	{Name: "ghcr.io", URL: "https://ghcr.io"},
	{Name: "quay.io", URL: "https://quay.io"},
	{Name: "registry.k8s.io", URL: "https://registry.k8s.io"},
	{Name: "gcr.io", URL: "https://gcr.io"},
	{Name: "mcr.microsoft.com", URL: "https://mcr.microsoft.com"},
	{Name: "public.ecr.aws", URL: "https://public.ecr.aws"},
}

// serveConfig is every setting of `lifeboat serve` and the admin commands,
// flat. settingsTable says where each is read from and its default.
type serveConfig struct {
	ConfigFile      string
	Listen          string
	MetricsListen   string
	AdminListen     string
	AdminURL        string // the admin commands': the running lifeboat's admin API
	DataDir         string
	DefaultRegistry string
	DockerConfig    string
	// ProviderConfig and ProviderBinDir are kubelet's credential provider
	// plugins; CredentialTimeout bounds each plugin or helper run.
	ProviderConfig    string
	ProviderBinDir    string
	CredentialTimeout time.Duration
	LogLevel          string
	LogFormat         string
	upstreamSettings
	MaxBlobSize           int64
	DiskReserve           int64
	MaxConcurrentFills    int
	MaxConcurrentRequests int
	WriteStall            time.Duration
	FillTimeout           time.Duration
	Upstreams             []upstreamConfig

	MaxSize          int64
	MinFreeDisk      diskFloor
	Eviction         evictionConfig
	Prefetch         []prefetchConfig
	PrefetchInterval time.Duration
	ContainerdSocket string
	NodeCheck        nodeCheckConfig
	peerSettings     // peers.go
}

// nodeCheckConfig is what serve checks of the node's runtime configuration
// for lifeboat_node_config_ok: the cheap part of lifeboat doctor.
type nodeCheckConfig struct {
	ContainerdHostsDir, ContainerdConfig, CRIOConfDir, HostRoot string
	OnlyIfPresent                                               bool
	Interval                                                    time.Duration
}

// upstreamSettings are the settings an upstream entry may override; the
// top-level ones are every upstream's defaults.
type upstreamSettings struct {
	TagTTL               time.Duration
	MaxStaleness         time.Duration
	ServeStaleOnNotFound bool
	Timeouts             timeoutsConfig
	Breaker              breakerConfig
	PrivateContent       proxy.PrivateContent
	PrivateDuringOutage  proxy.PrivateOutage
}

type timeoutsConfig struct {
	Dial, TLSHandshake, ResponseHeader, Revalidate, Request, BodyStall time.Duration
}

type breakerConfig struct {
	Failures            int
	Backoff, MaxBackoff time.Duration
}

type evictionConfig struct {
	Interval, KeepRecent, KeepDuringOutage time.Duration
}

// upstreamConfig is one mirrored registry. Once loaded, its
// upstreamSettings are the top-level ones with its overrides applied.
type upstreamConfig struct {
	Name               string
	URL                string
	CAFile             string
	InsecureSkipVerify bool
	// TokenRealms are the hosts besides the registry that may receive its
	// credentials; nil: upstream.DefaultTokenRealms.
	TokenRealms []string
	upstreamSettings
	// overrides are the entry's own values of top-level settings, by config
	// key, as written: checked when the file is read, applied by
	// resolveUpstreams once every source of the top-level ones is.
	overrides map[string]string
}

type prefetchConfig struct {
	Ref       string
	Platforms []string
}

// defaultDockerConfig is $DOCKER_CONFIG/config.json or ~/.docker/config.json
// if either exists, else none (anonymous pulls).
func defaultDockerConfig() string {
	var candidates []string
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		candidates = append(candidates, filepath.Join(d, "config.json"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, ".docker", "config.json"))
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
			return c
		}
	}
	return ""
}

// parseUpstreams reads NAME=URL[,NAME=URL...].
func parseUpstreams(v string) ([]upstreamConfig, error) {
	var out []upstreamConfig
	for _, item := range strings.Split(v, ",") {
		name, u, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || name == "" || u == "" {
			return nil, fmt.Errorf("%q is not NAME=URL", item)
		}
		out = append(out, upstreamConfig{Name: name, URL: u})
	}
	return out, nil
}

// upstreamList writes upstreams as parseUpstreams reads them.
func upstreamList(ups []upstreamConfig) string {
	items := make([]string, 0, len(ups))
	for _, u := range ups {
		items = append(items, u.Name+"="+u.URL)
	}
	return strings.Join(items, ",")
}

const serveUsage = `Usage: lifeboat serve [flags]

Serve the OCI pull API from the local cache, fetching from upstream registries
when they answer and serving what is cached when they do not.
Precedence: flags > LIFEBOAT_* environment > --config file > defaults.

Flags:
`

// loadServeConfig resolves defaults < config file < env < flags.
func loadServeConfig(args []string, stderr io.Writer) (serveConfig, error) {
	rows := settingsTable()
	rows = slices.DeleteFunc(rows, func(r setting) bool { return r.adminOnly })
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	flags := bindSettings(fs, rows, true)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), serveUsage)
		fs.PrintDefaults()
		printFileOnly(fs.Output(), rows)
	}
	if err := fs.Parse(args); err != nil {
		return serveConfig{}, err
	}
	if fs.NArg() > 0 {
		return serveConfig{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg, err := withDefaults(rows)
	if err != nil {
		return serveConfig{}, err
	}
	if path, _, _ := flags.lookup("config"); path != "" {
		if err := readConfigFile(path, rows, &cfg); err != nil {
			return serveConfig{}, err
		}
	}
	if err := flags.apply(&cfg); err != nil {
		return serveConfig{}, err
	}
	if err := cfg.resolveUpstreams(rows); err != nil {
		return serveConfig{}, err
	}
	cfg.DefaultRegistry = cfg.defaultRegistry()
	return cfg, cfg.validate()
}

// defaultRegistry is the one named, else docker.io when it is mirrored,
// else the only upstream (so `--upstream NAME=URL` alone works); else ""
// (validate then says how to choose).
func (c serveConfig) defaultRegistry() string {
	if c.DefaultRegistry != "" {
		return c.DefaultRegistry
	}
	for _, u := range c.Upstreams {
		if u.Name == "docker.io" {
			return u.Name
		}
	}
	if len(c.Upstreams) == 1 {
		return c.Upstreams[0].Name
	}
	return ""
}

// resolveUpstreams gives each upstream the top-level settings with its own
// overrides applied, by the same rows that set the top-level ones.
func (c *serveConfig) resolveUpstreams(rows []setting) error {
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		eff := *c
		for _, r := range rows {
			if v, ok := u.overrides[r.key]; ok && r.perUpstream != notPerUpstream {
				if err := r.set(&eff, v); err != nil {
					return fmt.Errorf("upstream %s: %s: %w", u.Name, r.key, err)
				}
			}
		}
		u.upstreamSettings = eff.upstreamSettings
	}
	return nil
}

func (c serveConfig) validate() error {
	var errs []error
	listeners := []listenAddr{{"listen", c.Listen}, {"metrics-listen", c.MetricsListen}, {"admin-listen", c.AdminListen}}
	for _, a := range listeners {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: %w", a.flag, a.addr, err))
		}
	}
	if c.PeerListen != "" {
		listeners = append(listeners, listenAddr{"peer-listen", c.PeerListen})
	}
	errs = append(errs, sharedListenAddrs(listeners)...)
	errs = append(errs, c.validatePeers()...)
	if c.DataDir == "" {
		errs = append(errs, errEmptyDataDir)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: must be text or json", c.LogFormat))
	}
	seen := map[string]bool{}
	for _, u := range c.Upstreams {
		if u.Name == "" || strings.ContainsAny(u.Name, "/ ") {
			errs = append(errs, fmt.Errorf("upstream name %q: must be a registry host, e.g. docker.io or localhost:5001", u.Name))
		}
		if seen[u.Name] {
			errs = append(errs, fmt.Errorf("upstream %s configured twice", u.Name))
		}
		seen[u.Name] = true
	}
	for _, item := range c.Prefetch {
		named, err := reference.ParseNormalizedNamed(item.Ref)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("prefetch %q: %w", item.Ref, err))
		case !seen[reference.Domain(named)]:
			errs = append(errs, fmt.Errorf("prefetch %q: registry %s is not among the upstreams", item.Ref, reference.Domain(named)))
		}
	}
	if c.ProviderConfig != "" && c.ProviderBinDir == "" {
		errs = append(errs, errors.New("--image-credential-provider-config needs --image-credential-provider-bin-dir"))
	}
	if !seen[c.DefaultRegistry] {
		var names []string
		for _, u := range c.Upstreams {
			names = append(names, u.Name)
		}
		what := fmt.Sprintf("--default-registry %q is not among the upstreams", c.DefaultRegistry)
		if c.DefaultRegistry == "" {
			what = "no --default-registry, and docker.io is not among the upstreams"
		}
		errs = append(errs, fmt.Errorf("%s: set --default-registry to one of %s", what, strings.Join(names, ", ")))
	}
	return errors.Join(errs...)
}

var errEmptyDataDir = errors.New("--data-dir must not be empty")

// listenAddr is one of serve's listeners: its flag and its address.
type listenAddr struct{ flag, addr string }

// sharedListenAddrs refuses two listeners on one address, so a port set
// twice by mistake is named at start rather than left to whichever bind
// fails. A wildcard host ("", 0.0.0.0, ::) takes its port on every address,
// so it shares with any host; port 0 (a free port of the kernel's choice)
// never does.
func sharedListenAddrs(ls []listenAddr) []error {
	var errs []error
	for i, a := range ls {
		hostA, portA, err := net.SplitHostPort(a.addr)
		if err != nil || portA == "0" {
			continue
		}
		for _, b := range ls[i+1:] {
			hostB, portB, err := net.SplitHostPort(b.addr)
			if err != nil || portB != portA {
				continue
			}
			if hostA == hostB || wildcardHost(hostA) || wildcardHost(hostB) {
				errs = append(errs, fmt.Errorf("--%s %q and --%s %q share an address: give each listener its own port", a.flag, a.addr, b.flag, b.addr))
			}
		}
	}
	return errs
}

func wildcardHost(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: must be debug, info, warn or error", s)
	}
	return l, nil
}
