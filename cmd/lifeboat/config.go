package main

import (
	"encoding/json"
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
	"github.com/lifeboat-dev/lifeboat/maintenance"
	"github.com/lifeboat-dev/lifeboat/proxy"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"sigs.k8s.io/yaml"
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

// serveConfig is every setting of `lifeboat serve`, flat. The YAML file
// (--config) uses the json names; flags and LIFEBOAT_* env vars override it.
type serveConfig struct {
	Listen               string           `json:"listen"`
	MetricsListen        string           `json:"metricsListen"`
	AdminListen          string           `json:"adminListen"`
	DataDir              string           `json:"dataDir"`
	DefaultRegistry      string           `json:"defaultRegistry"`
	DockerConfig         string           `json:"dockerConfig"`
	LogLevel             string           `json:"logLevel"`
	LogFormat            string           `json:"logFormat"`
	TagTTL               duration         `json:"tagTTL"`
	MaxStaleness         duration         `json:"maxStaleness"`
	ServeStaleOnNotFound bool             `json:"serveStaleOnNotFound"`
	MaxBlobSize          int64            `json:"maxBlobSize"`
	MaxConcurrentFills   int              `json:"maxConcurrentFills"`
	Timeouts             timeoutsConfig   `json:"timeouts"`
	Breaker              breakerConfig    `json:"breaker"`
	Upstreams            []upstreamConfig `json:"upstreams"`

	MaxSize          byteSize                   `json:"maxSize"`
	MinFreeDisk      diskFloor                  `json:"minFreeDisk"`
	Eviction         evictionConfig             `json:"eviction"`
	Prefetch         []maintenance.PrefetchItem `json:"prefetch"`
	PrefetchInterval duration                   `json:"prefetchInterval"`
	ContainerdSocket string                     `json:"containerdSocket"`
}

type evictionConfig struct {
	Interval         duration `json:"interval"`
	KeepRecent       duration `json:"keepRecent"`
	KeepDuringOutage duration `json:"keepDuringOutage"`
}

func (c serveConfig) evictionOptions() maintenance.EvictionOptions {
	return maintenance.EvictionOptions{
		MaxSize: int64(c.MaxSize), MinFree: c.MinFreeDisk.Bytes, MinFreeFraction: c.MinFreeDisk.Fraction,
		Interval: time.Duration(c.Eviction.Interval), KeepRecent: time.Duration(c.Eviction.KeepRecent),
		KeepDuringOutage: time.Duration(c.Eviction.KeepDuringOutage),
	}
}

type breakerConfig struct {
	Failures   int      `json:"failures"`
	Backoff    duration `json:"backoff"`
	MaxBackoff duration `json:"maxBackoff"`
}

// upstreamConfig is one mirrored registry. Zero fields inherit the
// top-level settings.
type upstreamConfig struct {
	Name                 string         `json:"name"`
	URL                  string         `json:"url"`
	TagTTL               *duration      `json:"tagTTL,omitempty"`
	Timeouts             timeoutsConfig `json:"timeouts"`
	Breaker              breakerConfig  `json:"breaker"`
	MaxStaleness         *duration      `json:"maxStaleness,omitempty"`
	ServeStaleOnNotFound *bool          `json:"serveStaleOnNotFound,omitempty"`
	CAFile               string         `json:"caFile,omitempty"`
	InsecureSkipVerify   bool           `json:"insecureSkipVerify,omitempty"`
}

type timeoutsConfig struct {
	Dial           duration `json:"dial"`
	TLSHandshake   duration `json:"tlsHandshake"`
	ResponseHeader duration `json:"responseHeader"`
	Revalidate     duration `json:"revalidate"`
	Request        duration `json:"request"`
	BodyStall      duration `json:"bodyStall"`
}

func (t timeoutsConfig) upstream() upstream.Timeouts {
	return upstream.Timeouts{
		Dial: time.Duration(t.Dial), TLSHandshake: time.Duration(t.TLSHandshake),
		ResponseHeader: time.Duration(t.ResponseHeader), Revalidate: time.Duration(t.Revalidate),
		Request: time.Duration(t.Request), BodyStall: time.Duration(t.BodyStall),
	}
}

// merged fills zero fields of t from def.
func (t timeoutsConfig) merged(def timeoutsConfig) timeoutsConfig {
	for _, f := range []struct{ dst, def *duration }{
		{&t.Dial, &def.Dial}, {&t.TLSHandshake, &def.TLSHandshake}, {&t.ResponseHeader, &def.ResponseHeader},
		{&t.Revalidate, &def.Revalidate}, {&t.Request, &def.Request}, {&t.BodyStall, &def.BodyStall},
	} {
		if *f.dst == 0 {
			*f.dst = *f.def
		}
	}
	return t
}

// duration is a time.Duration written as "1.5s" in YAML.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"1.5s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

func (d duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func defaultServeConfig() serveConfig {
	return serveConfig{
		Listen:          "127.0.0.1:5000",
		MetricsListen:   "127.0.0.1:9090",
		AdminListen:     "127.0.0.1:9091",
		DataDir:         "./lifeboat-data",
		DefaultRegistry: "docker.io",
		DockerConfig:    defaultDockerConfig(),
		LogLevel:        "info",
		LogFormat:       "text",
		MinFreeDisk:     diskFloor{Fraction: 0.10},
	}
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

// setting is one flag, with its env var and how it lands in the config.
type setting struct {
	name, usage string
	apply       func(c *serveConfig, v string) error
}

func envName(flagName string) string {
	return "LIFEBOAT_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func serveSettings() []setting {
	str := func(f func(c *serveConfig) *string) func(*serveConfig, string) error {
		return func(c *serveConfig, v string) error { *f(c) = v; return nil }
	}
	return []setting{
		{"listen", "address of the registry API (containerd's mirror endpoint)", str(func(c *serveConfig) *string { return &c.Listen })},
		{"metrics-listen", "address of /metrics, /healthz and /readyz", str(func(c *serveConfig) *string { return &c.MetricsListen })},
		{"admin-listen", "address of the admin API used by ls, gc, verify and prefetch; keep it on loopback", str(func(c *serveConfig) *string { return &c.AdminListen })},
		{"data-dir", "directory holding blob files and index.db", str(func(c *serveConfig) *string { return &c.DataDir })},
		{"default-registry", "registry for requests without ns= (must be an upstream)", str(func(c *serveConfig) *string { return &c.DefaultRegistry })},
		{"docker-config", "docker config.json (or .dockerconfigjson) with upstream credentials; empty: anonymous", str(func(c *serveConfig) *string { return &c.DockerConfig })},
		{"log-level", "debug, info, warn or error", str(func(c *serveConfig) *string { return &c.LogLevel })},
		{"log-format", "text or json", str(func(c *serveConfig) *string { return &c.LogFormat })},
		{"max-size", "cap on the bytes cached (e.g. 50GiB); least recently used images are evicted past it (0: no cap)", func(c *serveConfig, v string) error {
			n, err := parseSize(v)
			c.MaxSize = byteSize(n)
			return err
		}},
		{"min-free-disk", "free space to keep on the data directory's filesystem, as a percentage (10%) or a size (20GiB) (0: none)", func(c *serveConfig, v string) error {
			f, err := parseDiskFloor(v)
			c.MinFreeDisk = f
			return err
		}},
		{"containerd-socket", "containerd's socket: images containerd holds (CRI ListImages) are pinned, never evicted (empty: off)", str(func(c *serveConfig) *string { return &c.ContainerdSocket })},
		{"tag-ttl", "skip revalidating a tag upstream confirmed less than this ago (0: always revalidate)", func(c *serveConfig, v string) error {
			d, err := time.ParseDuration(v)
			c.TagTTL = duration(d)
			return err
		}},
		{"upstream", "NAME=URL of a mirrored registry; repeatable, or comma-separated in the env var; replaces the default set", func(c *serveConfig, v string) error {
			c.Upstreams = nil
			for _, item := range strings.Split(v, ",") {
				name, u, ok := strings.Cut(strings.TrimSpace(item), "=")
				if !ok || name == "" || u == "" {
					return fmt.Errorf("%q is not NAME=URL", item)
				}
				c.Upstreams = append(c.Upstreams, upstreamConfig{Name: name, URL: u})
			}
			return nil
		}},
	}
}

// repeated collects a repeatable flag as one comma-separated value.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

// loadServeConfig resolves defaults < config file < env < flags.
func loadServeConfig(args []string, stderr io.Writer) (serveConfig, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML file with the same settings and per-registry ones (env "+envName("config")+")")
	settings := serveSettings()
	def := defaultServeConfig()
	defaults := map[string]string{
		"listen": def.Listen, "metrics-listen": def.MetricsListen, "admin-listen": def.AdminListen, "data-dir": def.DataDir,
		"default-registry": def.DefaultRegistry, "docker-config": def.DockerConfig,
		"log-level": def.LogLevel, "log-format": def.LogFormat, "tag-ttl": "0s",
		"max-size": "0", "min-free-disk": "10%", "containerd-socket": "",
	}
	values := map[string]*string{}
	var upstreams repeated
	for _, s := range settings {
		usage := s.usage + " (env " + envName(s.name) + ")"
		if s.name == "upstream" {
			fs.Var(&upstreams, s.name, usage+"\n(default: docker.io, ghcr.io, quay.io, registry.k8s.io, gcr.io, mcr.microsoft.com, public.ecr.aws at their https endpoints)")
			continue
		}
		values[s.name] = fs.String(s.name, defaults[s.name], usage)
	}
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: lifeboat serve [flags]

Serve the OCI pull API from the local cache, fetching from upstream registries
when they answer and serving what is cached when they do not.
Precedence: flags > LIFEBOAT_* environment > --config file > defaults.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return serveConfig{}, err
	}
	if fs.NArg() > 0 {
		return serveConfig{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	cfg := def
	if *configPath == "" {
		*configPath = os.Getenv(envName("config"))
	}
	if *configPath != "" {
		raw, err := os.ReadFile(*configPath)
		if err != nil {
			return serveConfig{}, fmt.Errorf("read config: %w", err)
		}
		if err := yaml.UnmarshalStrict(raw, &cfg); err != nil {
			return serveConfig{}, fmt.Errorf("config %s: %w", *configPath, err)
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, s := range settings {
		var v string
		switch {
		case set[s.name] && s.name == "upstream":
			v = upstreams.String()
		case set[s.name]:
			v = *values[s.name]
		default:
			env, ok := os.LookupEnv(envName(s.name))
			if !ok {
				continue
			}
			v = env
		}
		if err := s.apply(&cfg, v); err != nil {
			return serveConfig{}, fmt.Errorf("--%s: %w", s.name, err)
		}
	}
	if len(cfg.Upstreams) == 0 {
		cfg.Upstreams = slices.Clone(defaultUpstreams)
	}
	return cfg, cfg.validate()
}

func (c serveConfig) validate() error {
	var errs []error
	for _, a := range []struct{ name, addr string }{{"listen", c.Listen}, {"metrics-listen", c.MetricsListen}, {"admin-listen", c.AdminListen}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: %w", a.name, a.addr, err))
		}
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
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
	if !seen[c.DefaultRegistry] {
		errs = append(errs, fmt.Errorf("--default-registry %q is not among the upstreams", c.DefaultRegistry))
	}
	return errors.Join(errs...)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: must be debug, info, warn or error", s)
	}
	return l, nil
}

// orDefault is *v if set, else def.
func orDefault[T any](v *T, def T) T {
	if v != nil {
		return *v
	}
	return def
}

// mirrorConfig is one mirrored registry as the config resolves it: its
// client's settings and the proxy's policy for it (Client left nil).
type mirrorConfig struct {
	upstream.Config
	proxy.Upstream
}

// proxyUpstreams turns the config into the mirrored registries; zero
// per-registry fields inherit the top-level ones.
func (c serveConfig) proxyUpstreams() []mirrorConfig {
	out := make([]mirrorConfig, 0, len(c.Upstreams))
	for _, u := range c.Upstreams {
		breaker := u.Breaker
		if breaker.Failures == 0 {
			breaker.Failures = c.Breaker.Failures
		}
		if breaker.Backoff == 0 {
			breaker.Backoff = c.Breaker.Backoff
		}
		if breaker.MaxBackoff == 0 {
			breaker.MaxBackoff = c.Breaker.MaxBackoff
		}
		out = append(out, mirrorConfig{
			Config: upstream.Config{
				Name: u.Name, URL: u.URL,
				Timeouts: u.Timeouts.merged(c.Timeouts).upstream(),
				Breaker: upstream.BreakerConfig{
					Failures: breaker.Failures, Backoff: time.Duration(breaker.Backoff), MaxBackoff: time.Duration(breaker.MaxBackoff),
				},
				CAFile:             u.CAFile,
				InsecureSkipVerify: u.InsecureSkipVerify,
			},
			Upstream: proxy.Upstream{
				TagTTL:               time.Duration(orDefault(u.TagTTL, c.TagTTL)),
				MaxStaleness:         time.Duration(orDefault(u.MaxStaleness, c.MaxStaleness)),
				ServeStaleOnNotFound: orDefault(u.ServeStaleOnNotFound, c.ServeStaleOnNotFound),
				MaxConcurrentFills:   c.MaxConcurrentFills,
			},
		})
	}
	return out
}
