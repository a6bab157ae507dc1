package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/lifeboat-dev/lifeboat/nodeconfig"
)

// configureConfig is every setting of `lifeboat configure-containerd`.
type configureConfig struct {
	Containerd nodeconfig.Containerd
	Registries []nodeconfig.Target
	Remove     bool
	// ContainerdConfig is where to read containerd's config (under
	// --host-root), and hostsDir the host path it should name.
	ContainerdConfig, hostsDir string
	scope                      nodeScope
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

--host-root and --only-if-present are for a container with the host's root
mounted somewhere (the chart's runtime: auto): paths are host paths under
--host-root, and nothing is written unless one of the listed paths (the
containerd socket, its config file) exists.

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
	c := cfg.Containerd
	if found, why := cfg.scope.found(); !found && !cfg.Remove {
		fmt.Fprintf(stdout, "containerd is not on this node (%s): nothing to do\n", why)
		return nil
	}
	if !cfg.Remove && cfg.ContainerdConfig != "" {
		printWarnings(stderr, "configure-containerd", nodeconfig.CheckContainerdConfig(cfg.ContainerdConfig, cfg.hostsDir))
	}
	for _, r := range cfg.Registries {
		var msg string
		if cfg.Remove {
			msg, err = c.Remove(r)
		} else {
			printWarnings(stderr, "configure-containerd", c.CheckShadowing(r))
			msg, err = c.Apply(r)
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
	var scope nodeScope
	hostsDir := fs.String("hosts-dir", "/etc/containerd/certs.d", "containerd's registry host directory (its config_path)")
	mirror := fs.String("mirror", "http://127.0.0.1:5000", "lifeboat's URL, as containerd reaches it (serve's --listen)")
	var registries repeated
	fs.Var(&registries, "registries", "comma-separated registries, NAME or NAME=SERVER_URL; repeatable\n(default: those serve mirrors by default: "+defaultRegistryNames()+")")
	remove := fs.Bool("remove", false, "undo: restore the backed-up hosts.toml, or remove lifeboat's")
	force := fs.Bool("force", false, "replace an existing hosts.toml instead of merging with it (it is still backed up)")
	dialTimeout := fs.Duration("dial-timeout", time.Second, "containerd 2.x gives up connecting to lifeboat after this and uses the next host (0: containerd's default, 30s; 1.x ignores it)")
	containerdConfig := fs.String("containerd-config", "/etc/containerd/config.toml", "containerd's config file, checked for config_path (empty: no check)")
	addNodeScopeFlags(fs, &scope, "containerd")
	if err := parseNodeFlags(fs, configureUsage, args, stdout); err != nil {
		return configureConfig{}, err
	}

	cfg := configureConfig{
		Containerd: nodeconfig.Containerd{Force: *force, DialTimeout: *dialTimeout},
		Remove:     *remove, scope: scope,
	}
	c := &cfg.Containerd
	var err error
	if c.Mirror, err = nodeconfig.ParseMirror(*mirror); err != nil {
		return configureConfig{}, fmt.Errorf("--mirror %q: %w", *mirror, err)
	}
	if *hostsDir == "" {
		return configureConfig{}, errors.New("--hosts-dir must not be empty")
	}
	if cfg.hostsDir, err = filepath.Abs(*hostsDir); err != nil {
		return configureConfig{}, fmt.Errorf("--hosts-dir: %w", err)
	}
	c.HostsDir, cfg.ContainerdConfig = scope.path(cfg.hostsDir), scope.path(*containerdConfig)
	if c.DialTimeout < 0 {
		return configureConfig{}, fmt.Errorf("--dial-timeout %s: must not be negative", c.DialTimeout)
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

// defaultTargets are serve's default upstreams: the registries configured
// when --registries names none, and the servers of those it names bare.
func defaultTargets() []nodeconfig.Target {
	out := make([]nodeconfig.Target, 0, len(defaultUpstreams))
	for _, u := range defaultUpstreams {
		out = append(out, nodeconfig.Target{Name: u.Name, Server: u.URL})
	}
	return out
}

// parseRegistries turns NAME and NAME=SERVER_URL entries (comma-separated,
// possibly repeated) into targets; no entries means the default upstreams.
func parseRegistries(entries []string) ([]nodeconfig.Target, error) {
	known := defaultTargets()
	if len(entries) == 0 {
		return known, nil
	}
	var out []nodeconfig.Target
	seen := map[string]bool{}
	for _, entry := range entries {
		for item := range strings.SplitSeq(entry, ",") {
			item = strings.TrimSpace(item)
			// Only valid names are seen, so a name seen before is a
			// duplicate whatever follows its "=".
			if name, _, _ := strings.Cut(item, "="); seen[name] {
				return nil, fmt.Errorf("--registries: %s named twice", name)
			}
			t, err := nodeconfig.ParseTarget(item, known)
			if err != nil {
				return nil, fmt.Errorf("--registries %q: %w", item, err)
			}
			seen[t.Name] = true
			out = append(out, t)
		}
	}
	return out, nil
}
