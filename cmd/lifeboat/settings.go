package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lifeboat-dev/lifeboat/proxy"
	"go.yaml.in/yaml/v3"
)

// setting is one row of the settings table: a setting declared once, with
// the flag, LIFEBOAT_* environment variable and config file key it is read
// from, its default and its help. set parses a value the same way whichever
// of those it comes from, the default included.
type setting struct {
	flag string // flag name, and env var LIFEBOAT_<FLAG>; "" for a config-file-only setting
	key  string // dotted key in the --config file; "" for a flag-and-env-only setting
	def  string // default, in the flag's syntax
	help string // a `backquoted` word names the flag's value in --help
	set  func(c *serveConfig, v string) error
	// list decodes the key's value in the file instead of set, for the
	// settings that are lists of entries.
	list func(d fileDecoder, c *serveConfig, n *yaml.Node) error
	// repeatable flags may be given more than once; the values are joined
	// with commas, as in the env var.
	repeatable bool
	// perUpstream says whether an upstream entry in the file may override
	// the setting for that upstream.
	perUpstream upstreamOverride
	adminOnly   bool // a setting of the admin commands, not of serve
}

type upstreamOverride int

const (
	notPerUpstream upstreamOverride = iota
	// perUpstreamValue: the entry's value wins, zero included.
	perUpstreamValue
	// perUpstreamNonZero: the entry's value wins unless it is zero; zero
	// keeps the top-level value (the proxy's default where that is zero too).
	perUpstreamNonZero
)

// defaultAdminListen is serve's --admin-listen default, which is also
// where the admin commands look for a running lifeboat.
const defaultAdminListen = "127.0.0.1:5091"

// settingsTable is every setting of serve and the admin commands.
func settingsTable() []setting {
	return append([]setting{
		{flag: "config", help: "serve's YAML config `file`: these settings, settings only the file has, and per-registry ones (see lifeboat serve --help)",
			set: field(parseText, func(c *serveConfig) *string { return &c.ConfigFile })},
		{flag: "listen", key: "listen", def: "127.0.0.1:5000", help: "`address` of the registry API (containerd's mirror endpoint)",
			set: field(parseText, func(c *serveConfig) *string { return &c.Listen })},
		{flag: "metrics-listen", key: "metricsListen", def: "127.0.0.1:5090", help: "`address` of /metrics, /healthz and /readyz",
			set: field(parseText, func(c *serveConfig) *string { return &c.MetricsListen })},
		{flag: "admin-listen", key: "adminListen", def: defaultAdminListen, help: "`address` of the admin API used by ls, gc, verify and prefetch; keep it on loopback",
			set: field(parseText, func(c *serveConfig) *string { return &c.AdminListen })},
		{flag: "data-dir", key: "dataDir", def: "./lifeboat-data", help: "`directory` holding blob files and index.db",
			set: field(parseText, func(c *serveConfig) *string { return &c.DataDir })},
		{flag: "admin", adminOnly: true, def: "http://" + defaultAdminListen, help: "admin `URL` (serve's --admin-listen) of the lifeboat that holds the data directory",
			set: field(parseText, func(c *serveConfig) *string { return &c.AdminURL })},
		{flag: "upstream", key: "upstreams", def: upstreamList(defaultUpstreams), repeatable: true,
			help: "`NAME=URL` of a mirrored registry; repeatable, or comma-separated in the env var; replaces the default set",
			set:  field(parseUpstreams, func(c *serveConfig) *[]upstreamConfig { return &c.Upstreams }), list: decodeUpstreams},
		{flag: "default-registry", key: "defaultRegistry", def: "", help: "`registry` for requests without ns= (must be an upstream; empty: docker.io when it is mirrored, else the only upstream)",
			set: field(parseText, func(c *serveConfig) *string { return &c.DefaultRegistry })},
		{flag: "docker-config", key: "dockerConfig", def: defaultDockerConfig(), help: "docker config.json (or .dockerconfigjson) `file` with upstream credentials; empty: anonymous",
			set: field(parseText, func(c *serveConfig) *string { return &c.DockerConfig })},
		{flag: "image-credential-provider-config", key: "imageCredentialProviderConfig", help: "kubelet CredentialProviderConfig `file` (kubelet.config.k8s.io/v1): the node's credential provider plugins, asked before the docker config; empty: none",
			set: field(parseText, func(c *serveConfig) *string { return &c.ProviderConfig })},
		{flag: "image-credential-provider-bin-dir", key: "imageCredentialProviderBinDir", help: "`directory` holding the credential provider plugins the config names",
			set: field(parseText, func(c *serveConfig) *string { return &c.ProviderBinDir })},
		{key: "credentialTimeout", def: "5s", help: "bound on each credential provider plugin or docker credential helper run; one that fails or hangs is an auth-unavailable upstream failure",
			set: field(time.ParseDuration, func(c *serveConfig) *time.Duration { return &c.CredentialTimeout })},
		{key: "privateContent", def: "shared", perUpstream: perUpstreamValue, help: "shared: what lifeboat fetched of a private repository is served to every client; verify: its manifests and tag lists are answered 401 while upstream is reachable, so the runtime asks the registry with the pod's credentials",
			set: field(parsePrivateContent, func(c *serveConfig) *proxy.PrivateContent { return &c.PrivateContent })},
		{key: "privateDuringOutage", def: "serve", perUpstream: perUpstreamValue, help: "under privateContent verify, while upstream is unavailable: serve the cached copy (counted, logged) or deny it",
			set: field(parsePrivateOutage, func(c *serveConfig) *proxy.PrivateOutage { return &c.PrivateDuringOutage })},
		{flag: "log-level", key: "logLevel", def: "info", help: "`level`: debug, info, warn or error (debug adds a line per request sent upstream)",
			set: field(parseText, func(c *serveConfig) *string { return &c.LogLevel })},
		{flag: "log-format", key: "logFormat", def: "text", help: "`format`: text or json",
			set: field(parseText, func(c *serveConfig) *string { return &c.LogFormat })},
		{flag: "tag-ttl", key: "tagTTL", def: "0s", perUpstream: perUpstreamValue, help: "skip revalidating a tag upstream confirmed less than this `duration` ago (0: always revalidate)",
			set: field(time.ParseDuration, func(c *serveConfig) *time.Duration { return &c.TagTTL })},
		{key: "maxStaleness", def: "0s", perUpstream: perUpstreamValue, help: "never serve a tag stale once upstream last confirmed it longer ago than this (0: no limit)",
			set: field(time.ParseDuration, func(c *serveConfig) *time.Duration { return &c.MaxStaleness })},
		{key: "serveStaleOnNotFound", def: "false", perUpstream: perUpstreamValue, help: "serve a cached tag stale when upstream says 404",
			set: field(parseBool, func(c *serveConfig) *bool { return &c.ServeStaleOnNotFound })},
		{flag: "max-blob-size", key: "maxBlobSize", def: "20GiB", help: "larger blobs are refused, announced or not: bytes, or a `size` like 5GiB (0: no limit)",
			set: field(parseSize, func(c *serveConfig) *int64 { return &c.MaxBlobSize })},
		{flag: "disk-reserve", key: "diskReserve", def: "1GiB", help: "a download is refused unless the data directory's filesystem keeps this `size` free after it (0: no check)",
			set: field(parseSize, func(c *serveConfig) *int64 { return &c.DiskReserve })},
		{key: "maxConcurrentFills", def: "16", help: "blob downloads per upstream at once; a miss waits for a slot at most the request timeout, then gets 503",
			set: field(positiveInt, func(c *serveConfig) *int { return &c.MaxConcurrentFills })},
		{key: "maxConcurrentRequests", def: "32", help: "manifest, tag and blob HEAD requests per upstream at once; past it a request waits at most its budget, then gets 503 (or a stale tag)",
			set: field(positiveInt, func(c *serveConfig) *int { return &c.MaxConcurrentRequests })},
		{key: "fillTimeout", def: "6h", help: "a blob download (which belongs to no client) is abandoned past this long, whatever its progress",
			set: field(positiveDuration, func(c *serveConfig) *time.Duration { return &c.FillTimeout })},
		{flag: "write-stall", key: "writeStall", def: "30s", help: "a client that accepts no bytes of an answer for this long is disconnected",
			set: field(positiveDuration, func(c *serveConfig) *time.Duration { return &c.WriteStall })},
		timeout("dial", "TCP connect", func(t *timeoutsConfig) *time.Duration { return &t.Dial }),
		timeout("tlsHandshake", "TLS handshake", func(t *timeoutsConfig) *time.Duration { return &t.TLSHandshake }),
		timeout("responseHeader", "wait for response headers", func(t *timeoutsConfig) *time.Duration { return &t.ResponseHeader }),
		timeout("revalidate", "whole budget, auth included, to check a cached tag; then it is served stale", func(t *timeoutsConfig) *time.Duration { return &t.Revalidate }),
		timeout("request", "whole budget for a manifest or tag list nothing cached can answer", func(t *timeoutsConfig) *time.Duration { return &t.Request }),
		timeout("bodyStall", "a blob download with no progress for this long is abandoned", func(t *timeoutsConfig) *time.Duration { return &t.BodyStall }),
		{key: "breaker.failures", def: "0", perUpstream: perUpstreamNonZero, help: "consecutive unavailable answers that open an upstream's circuit (0: the built-in default)",
			set: field(strconv.Atoi, func(c *serveConfig) *int { return &c.Breaker.Failures })},
		{key: "breaker.backoff", def: "0s", perUpstream: perUpstreamNonZero, help: "the circuit stays open this long before one probe; doubles per failed probe (0: the built-in default)",
			set: field(time.ParseDuration, func(c *serveConfig) *time.Duration { return &c.Breaker.Backoff })},
		{key: "breaker.maxBackoff", def: "0s", perUpstream: perUpstreamNonZero, help: "cap on the backoff and on an upstream's Retry-After (0: the built-in default)",
			set: field(time.ParseDuration, func(c *serveConfig) *time.Duration { return &c.Breaker.MaxBackoff })},
		{flag: "max-size", key: "maxSize", def: "0", help: "`cap` on the bytes cached (e.g. 50GiB); least recently used images are evicted past it (0: no cap)",
			set: field(parseSize, func(c *serveConfig) *int64 { return &c.MaxSize })},
		{flag: "min-free-disk", key: "minFreeDisk", def: "10%", help: "free `space` to keep on the data directory's filesystem, as a percentage (10%) or a size (20GiB) (0: none)",
			set: field(parseDiskFloor, func(c *serveConfig) *diskFloor { return &c.MinFreeDisk })},
		{key: "eviction.interval", def: "0s", help: "how often the cache limits are checked (0: the built-in default)",
			set: field(time.ParseDuration, func(c *serveConfig) *time.Duration { return &c.Eviction.Interval })},
		{key: "eviction.keepRecent", def: "0s", help: "never evict what was accessed this recently: it is being pulled (0: the built-in default)",
			set: field(time.ParseDuration, func(c *serveConfig) *time.Duration { return &c.Eviction.KeepRecent })},
		{key: "eviction.keepDuringOutage", def: "0s", help: "while any upstream's circuit is open, never evict what was accessed this recently (0: the built-in default)",
			set: field(time.ParseDuration, func(c *serveConfig) *time.Duration { return &c.Eviction.KeepDuringOutage })},
		{key: "prefetch", help: "images fetched at start and every prefetchInterval, and pinned: a list of {ref, platforms}", list: decodePrefetch},
		{key: "prefetchInterval", def: "0s", help: "how often the prefetch list is fetched again (0: the built-in default)",
			set: field(time.ParseDuration, func(c *serveConfig) *time.Duration { return &c.PrefetchInterval })},
		{flag: "containerd-socket", key: "containerdSocket", help: "containerd's `socket`: images containerd holds (CRI ListImages) are pinned, never evicted (empty: off)",
			set: field(parseText, func(c *serveConfig) *string { return &c.ContainerdSocket })},
		{flag: "check-containerd-hosts-dir", key: "nodeCheck.containerdHostsDir", help: "containerd's hosts `directory` (config_path): checked every nodeCheck.interval to hold lifeboat's hosts.toml for each upstream, for lifeboat_node_config_ok (empty: not checked)",
			set: field(parseText, func(c *serveConfig) *string { return &c.NodeCheck.ContainerdHostsDir })},
		{flag: "check-containerd-config", key: "nodeCheck.containerdConfig", help: "containerd's config `file`: checked to point config_path at --check-containerd-hosts-dir (empty: not checked)",
			set: field(parseText, func(c *serveConfig) *string { return &c.NodeCheck.ContainerdConfig })},
		{flag: "check-crio-conf-dir", key: "nodeCheck.crioConfDir", help: "CRI-O's registries.conf.d `directory`: checked to hold lifeboat's drop-in naming it first for each upstream (empty: not checked)",
			set: field(parseText, func(c *serveConfig) *string { return &c.NodeCheck.CRIOConfDir })},
		{flag: "check-host-root", key: "nodeCheck.hostRoot", help: "the host's root `directory` as lifeboat sees it: the checked paths are host paths under it (empty: /)",
			set: field(parseText, func(c *serveConfig) *string { return &c.NodeCheck.HostRoot })},
		{key: "nodeCheck.onlyIfPresent", def: "false", help: "check a runtime only when its config is on the node (containerd's config file or hosts directory, CRI-O's registries.conf.d): the chart's runtime auto",
			set: field(strconv.ParseBool, func(c *serveConfig) *bool { return &c.NodeCheck.OnlyIfPresent })},
		{key: "nodeCheck.interval", def: "1m", help: "how often the node's runtime configuration is checked",
			set: field(positiveDuration, func(c *serveConfig) *time.Duration { return &c.NodeCheck.Interval })},
	}, peerRows()...) // peers.go
}

// timeout is the row of one of the timeouts every upstream inherits.
func timeout(name, help string, ptr func(*timeoutsConfig) *time.Duration) setting {
	return setting{key: "timeouts." + name, def: "0s", perUpstream: perUpstreamNonZero, help: help + " (0: the built-in default)",
		set: field(time.ParseDuration, func(c *serveConfig) *time.Duration { return ptr(&c.Timeouts) })}
}

// field makes a row's set: parse the text, then store the value. A value
// that does not parse leaves the config as it was.
func field[T any](parse func(string) (T, error), ptr func(*serveConfig) *T) func(*serveConfig, string) error {
	return func(c *serveConfig, v string) error {
		x, err := parse(v)
		if err != nil {
			return err
		}
		*ptr(c) = x
		return nil
	}
}

func parseText(s string) (string, error) { return s, nil }

func positiveInt(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err == nil && n <= 0 {
		err = fmt.Errorf("%d: must be at least 1", n)
	}
	return n, err
}

func positiveDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err == nil && d <= 0 {
		err = fmt.Errorf("%s: must be positive", d)
	}
	return d, err
}

func parsePrivateContent(s string) (proxy.PrivateContent, error) {
	if v := proxy.PrivateContent(s); v == proxy.PrivateShared || v == proxy.PrivateVerify {
		return v, nil
	}
	return "", fmt.Errorf("%q: must be shared or verify", s)
}

func parsePrivateOutage(s string) (proxy.PrivateOutage, error) {
	if v := proxy.PrivateOutage(s); v == proxy.OutageServe || v == proxy.OutageDeny {
		return v, nil
	}
	return "", fmt.Errorf("%q: must be serve or deny", s)
}

// parseBool takes what flag and YAML 1.1 take: true, false, 1, 0, yes, no, on, off.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "yes", "y", "on":
		return true, nil
	case "no", "n", "off":
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("%q is not true or false", s)
	}
	return b, nil
}

// settingsNamed is the rows whose flag is in names, in the table's order.
func settingsNamed(rows []setting, names ...string) []setting {
	var out []setting
	for _, r := range rows {
		if slices.Contains(names, r.flag) {
			out = append(out, r)
		}
	}
	return out
}

func envName(flagName string) string {
	return "LIFEBOAT_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// withDefaults is a config holding the rows' defaults.
func withDefaults(rows []setting) (serveConfig, error) {
	var c serveConfig
	for _, r := range rows {
		if r.def == "" {
			continue
		}
		if err := r.set(&c, r.def); err != nil {
			return serveConfig{}, fmt.Errorf("the default of %s: %w", r.name(), err)
		}
	}
	return c, nil
}

// name is how errors and --help call the setting.
func (r setting) name() string {
	if r.flag != "" {
		return "--" + r.flag
	}
	return r.key
}

// usage is the flag's help with where else the setting is read from.
func (r setting) usage(readsFile bool) string {
	u := r.help + " (env " + envName(r.flag)
	if readsFile && r.key != "" {
		u += ", config " + r.key
	}
	return u + ")"
}

// settingFlags are rows bound to a flag set. Flags only record their text;
// apply parses it after the file is read, for flags > env > file > defaults.
type settingFlags struct {
	rows []setting
	vals map[string]*flagValue // by flag name
}

// bindSettings makes a flag of each row that has one; readsFile says
// whether the command reads the rows' keys from a --config file too.
func bindSettings(fs *flag.FlagSet, rows []setting, readsFile bool) settingFlags {
	b := settingFlags{rows: rows, vals: map[string]*flagValue{}}
	for _, r := range rows {
		if r.flag == "" {
			continue
		}
		v := &flagValue{repeatable: r.repeatable}
		b.vals[r.flag] = v
		fs.Var(v, r.flag, r.usage(readsFile))
		fs.Lookup(r.flag).DefValue = r.def
	}
	return b
}

// lookup is a setting's text from its flag, else from its env var, and
// which of the two it came from; ok is false when neither is set.
func (b settingFlags) lookup(flagName string) (v, from string, ok bool) {
	if f := b.vals[flagName]; f != nil && f.set {
		return f.String(), "--" + flagName, true
	}
	v, ok = os.LookupEnv(envName(flagName))
	return v, envName(flagName), ok
}

// apply sets every setting given by a flag or an env var.
func (b settingFlags) apply(c *serveConfig) error {
	for _, r := range b.rows {
		if r.flag == "" {
			continue
		}
		if v, from, ok := b.lookup(r.flag); ok {
			if err := r.set(c, v); err != nil {
				return fmt.Errorf("%s: %w", from, err)
			}
		}
	}
	return nil
}

// printFileOnly lists the rows that have a config file key but no flag.
func printFileOnly(w io.Writer, rows []setting) {
	fmt.Fprint(w, "\nIn the --config file only (dotted keys are nested):\n")
	for _, r := range rows {
		if r.flag != "" || r.key == "" {
			continue
		}
		def := ""
		if r.def != "" {
			def = " (default " + r.def + ")"
		}
		fmt.Fprintf(w, "  %s\n    \t%s%s\n", r.key, r.help, def)
	}
	var own []string
	for _, r := range rows {
		if r.perUpstream != notPerUpstream {
			own = append(own, r.key)
		}
	}
	fmt.Fprintf(w, "\nAn upstreams entry takes name, url, caFile, insecureSkipVerify and tokenRealms, and may\noverride for itself: %s.\n", strings.Join(own, ", "))
}

// flagValue records a setting's flag text; the row parses it.
type flagValue struct {
	vals       repeated
	repeatable bool
	set        bool
}

func (f *flagValue) String() string { return f.vals.String() }

func (f *flagValue) Set(v string) error {
	if !f.repeatable {
		f.vals = nil
	}
	f.set = true
	return f.vals.Set(v)
}

// repeated collects a repeatable flag as one comma-separated value.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }
