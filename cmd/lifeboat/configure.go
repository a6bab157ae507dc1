package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// configureConfig is every setting of `lifeboat configure-containerd`.
type configureConfig struct {
	HostsDir         string
	Mirror           string
	Registries       []registryTarget
	Remove           bool
	Force            bool
	DialTimeout      time.Duration
	ContainerdConfig string
}

// registryTarget is one registry containerd should reach through lifeboat:
// the name containerd pulls it by and its real endpoint, containerd's
// fallback.
type registryTarget struct {
	Name, Server string
}

const configureUsage = `Usage: lifeboat configure-containerd [flags]

Point containerd at lifeboat: for each registry, write
<hosts-dir>/<registry>/hosts.toml naming lifeboat (--mirror) as the first
host, with capabilities pull and resolve and a dial_timeout, and the
registry itself as server, containerd's fallback whenever lifeboat is
unreachable or answers an error. A file written by lifeboat starts with
"# Written by lifeboat configure-containerd".

An existing hosts.toml that lifeboat did not write is kept: it is backed up
to hosts.toml.lifeboat-backup (never overwriting an earlier backup) and
merged: lifeboat's host comes first, then the file's own hosts, text and
order unchanged, and its own server stays the fallback. A file that cannot
be merged (not valid TOML, or hosts not written as [host."..."] tables) is
refused; --force replaces it, or any existing file, with lifeboat's own
(still backing it up first). Running it again changes nothing.

--remove undoes it: it restores the backup, byte for byte, or removes
lifeboat's file (and the registry's directory if lifeboat created it and it
is empty). Files lifeboat did not write are left alone.

It also reads the containerd config file and warns when containerd will not
read --hosts-dir: config_path unset, pointing elsewhere, or a
colon-separated list (containerd 2.x pulls ignore every hosts.toml then).
Warnings do not fail the command; restart containerd after fixing its config.

--registries takes registry names (docker.io, ghcr.io: the real registry
is https://<name>, or registry-1.docker.io for docker.io) or NAME=SERVER_URL
to name the fallback (localhost:5001=http://localhost:5001).

Every flag can also be set with LIFEBOAT_<FLAG> (upper case, - becomes _);
flags win.

Flags:
`

// configureContainerd runs `lifeboat configure-containerd`.
func configureContainerd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadConfigureConfig(args, stdout)
	if err != nil {
		return err
	}
	if !cfg.Remove && cfg.ContainerdConfig != "" {
		for _, w := range checkContainerdConfig(cfg.ContainerdConfig, cfg.HostsDir) {
			fmt.Fprintf(stderr, "lifeboat configure-containerd: warning: %s\n", w)
		}
	}
	for _, r := range cfg.Registries {
		var msg string
		if cfg.Remove {
			msg, err = cfg.removeHosts(r)
		} else {
			for _, w := range shadowingDirs(cfg.HostsDir, r.Name) {
				fmt.Fprintf(stderr, "lifeboat configure-containerd: warning: %s\n", w)
			}
			msg, err = cfg.writeHosts(r)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", r.Name, err)
		}
		fmt.Fprintf(stdout, "%s: %s\n", r.Name, msg)
	}
	return nil
}

// loadConfigureConfig resolves defaults < LIFEBOAT_* env < flags. --help
// prints to stdout; errors are left to the caller, one line each.
func loadConfigureConfig(args []string, stdout io.Writer) (configureConfig, error) {
	fs := flag.NewFlagSet("configure-containerd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	hostsDir := fs.String("hosts-dir", "/etc/containerd/certs.d", "containerd's registry host directory (its config_path)")
	mirror := fs.String("mirror", "http://127.0.0.1:5000", "lifeboat's URL, as containerd reaches it (serve's --listen)")
	var registries repeated
	fs.Var(&registries, "registries", "comma-separated registries, NAME or NAME=SERVER_URL; repeatable\n(default: those serve mirrors by default: "+defaultRegistryNames()+")")
	remove := fs.Bool("remove", false, "undo: restore the backed-up hosts.toml, or remove lifeboat's")
	force := fs.Bool("force", false, "replace an existing hosts.toml instead of merging with it (it is still backed up)")
	dialTimeout := fs.Duration("dial-timeout", time.Second, "containerd 2.x gives up connecting to lifeboat after this and uses the next host (0: containerd's default, 30s; 1.x ignores it)")
	containerdConfig := fs.String("containerd-config", "/etc/containerd/config.toml", "containerd's config file, checked for config_path (empty: no check)")
	fs.VisitAll(func(f *flag.Flag) { f.Usage += " (env " + envName(f.Name) + ")" })
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), configureUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
		}
		return configureConfig{}, err
	}
	if fs.NArg() > 0 {
		return configureConfig{}, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := os.LookupEnv(envName(f.Name))
		if set[f.Name] || !ok || envErr != nil {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)
		}
	})
	if envErr != nil {
		return configureConfig{}, envErr
	}

	cfg := configureConfig{
		HostsDir: *hostsDir, Remove: *remove, Force: *force,
		DialTimeout: *dialTimeout, ContainerdConfig: *containerdConfig,
	}
	var err error
	if cfg.Mirror, err = parseMirror(*mirror); err != nil {
		return configureConfig{}, err
	}
	if cfg.HostsDir == "" {
		return configureConfig{}, errors.New("--hosts-dir must not be empty")
	}
	if cfg.HostsDir, err = filepath.Abs(cfg.HostsDir); err != nil {
		return configureConfig{}, fmt.Errorf("--hosts-dir: %w", err)
	}
	if cfg.DialTimeout < 0 {
		return configureConfig{}, fmt.Errorf("--dial-timeout %s: must not be negative", cfg.DialTimeout)
	}
	if cfg.Registries, err = parseRegistries(registries); err != nil {
		return configureConfig{}, err
	}
	return cfg, nil
}

func defaultRegistryNames() string {
	names := make([]string, 0, len(defaultUpstreams))
	for _, u := range defaultUpstreams {
		names = append(names, u.Name)
	}
	return strings.Join(names, ",")
}

// parseMirror checks lifeboat's URL: http or https, a host, no path.
func parseMirror(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("--mirror %q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("--mirror %q: must be an http or https URL with a host, e.g. http://127.0.0.1:5000", s)
	}
	if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("--mirror %q: must be scheme://host[:port] only (lifeboat serves /v2/ at its root)", s)
	}
	return u.Scheme + "://" + u.Host, nil
}

// registryName is a registry host as containerd names its directory:
// docker.io, registry.example.com, localhost:5001.
var registryName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?$`)

// parseRegistries turns NAME and NAME=SERVER_URL entries (comma-separated,
// possibly repeated) into targets; no entries means the default upstreams.
func parseRegistries(entries []string) ([]registryTarget, error) {
	if len(entries) == 0 {
		out := make([]registryTarget, 0, len(defaultUpstreams))
		for _, u := range defaultUpstreams {
			out = append(out, registryTarget{Name: u.Name, Server: u.URL})
		}
		return out, nil
	}
	var out []registryTarget
	seen := map[string]bool{}
	for _, entry := range entries {
		for item := range strings.SplitSeq(entry, ",") {
			item = strings.TrimSpace(item)
			name, server, hasServer := strings.Cut(item, "=")
			if err := checkRegistryName(name); err != nil {
				return nil, fmt.Errorf("--registries %q: %w", item, err)
			}
			if seen[name] {
				return nil, fmt.Errorf("--registries: %s named twice", name)
			}
			seen[name] = true
			if !hasServer {
				server = defaultServer(name)
			} else if err := checkServer(server); err != nil {
				return nil, fmt.Errorf("--registries %q: %w", item, err)
			}
			out = append(out, registryTarget{Name: name, Server: server})
		}
	}
	return out, nil
}

func checkRegistryName(name string) error {
	switch {
	case name == "":
		return errors.New("empty registry name")
	case name == "." || name == "..":
		return fmt.Errorf("registry name %q is not a registry host", name)
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("registry name %q must not contain '/': it is a host such as docker.io, not a repository", name)
	case !registryName.MatchString(name):
		return fmt.Errorf("registry name %q must be a registry host, e.g. docker.io or localhost:5001", name)
	}
	return nil
}

func checkServer(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("server %q must be an http or https URL, e.g. https://registry.example.com", s)
	}
	return nil
}

// defaultServer is the real registry behind a name: serve's default
// upstream of that name, else https://<name>.
func defaultServer(name string) string {
	for _, u := range defaultUpstreams {
		if u.Name == name {
			return u.URL
		}
	}
	return "https://" + name
}
