package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/lifeboat-dev/lifeboat/nodeconfig"
)

// configureCRIOConfig is every setting of `lifeboat configure-crio`.
type configureCRIOConfig struct {
	CRIO       nodeconfig.CRIO
	Registries []nodeconfig.Target
	Remove     bool
	Reload     bool
	scope      nodeScope
}

const configureCRIOUsage = `Usage: lifeboat configure-crio [flags]

Point CRI-O (and podman, skopeo, buildah: containers/image) at lifeboat:
write the drop-in <conf-dir>/50-lifeboat.conf with, for each registry, a
[[registry]] whose first mirror is lifeboat at <mirror host>/<registry>
(a registry with a port as host_port: localhost_5001), pull-from-mirror
"all". CRI-O tries lifeboat first and the registry itself whenever lifeboat
is unreachable or answers an error. A file written by lifeboat starts with
"# Written by lifeboat configure-crio".

A drop-in's [[registry]] replaces the one with the same prefix that
registries.conf or an earlier drop-in has: such an entry is merged into
lifeboat's (its location and settings kept, its mirrors after lifeboat's;
--force: lifeboat's own instead). A later drop-in with the same prefix
would replace lifeboat's: that is refused. A 50-lifeboat.conf lifeboat did
not write is refused; --force backs it up (50-lifeboat.conf.lifeboat-backup)
and replaces it. Running it again changes nothing.

--remove undoes it: it restores the backup, byte for byte, or removes
lifeboat's drop-in. It warns about settings that keep pulls from lifeboat:
a blocked registry, a more specific prefix without lifeboat's mirror,
short names resolved through registries lifeboat does not mirror.

CRI-O reads the registries again on SIGHUP: after a change, --reload sends
it to every process named crio (this needs the host's PID namespace), or
warns. Without it, set auto_reload_registries = true in crio.conf's
[crio.image], or run systemctl reload crio.

--registries takes registry names (docker.io, ghcr.io) or NAME=SERVER_URL
(an http:// server makes the registry insecure = true).

Every flag can also be set with LIFEBOAT_<FLAG> (upper case, - becomes _);
flags win.

Flags:
`

// configureCRIO runs `lifeboat configure-crio`.
func configureCRIO(_ context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadConfigureCRIOConfig(args, stdout)
	if err != nil {
		return err
	}
	var rep nodeconfig.CRIOReport
	if cfg.Remove {
		rep, err = cfg.CRIO.Remove()
	} else {
		if found, why := cfg.scope.found(); !found {
			fmt.Fprintf(stdout, "CRI-O is not on this node (%s): nothing to do\n", why)
			return nil
		}
		rep, err = cfg.CRIO.Apply(cfg.Registries)
	}
	if err != nil {
		return err
	}
	for _, l := range rep.Lines {
		fmt.Fprintln(stdout, l)
	}
	printWarnings(stderr, "configure-crio", rep.Warnings)
	if !rep.Changed || !cfg.Reload {
		return nil
	}
	return reportReload(stdout, stderr, "/proc")
}

// reportReload sends SIGHUP to the crio processes in proc and says so; no
// crio is a warning, not a failure (CRI-O may not run yet, or the command
// may not see the host's processes).
func reportReload(stdout, stderr io.Writer, proc string) error {
	msg, err := nodeconfig.ReloadCRIO(proc)
	if errors.Is(err, nodeconfig.ErrNoCRIO) {
		printWarnings(stderr, "configure-crio", []string{err.Error() + ": CRI-O reads the change when it restarts, or on " +
			"systemctl reload crio; with auto_reload_registries = true in crio.conf's [crio.image] it reads it at once"})
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, msg)
	return nil
}

// loadConfigureCRIOConfig resolves defaults < LIFEBOAT_* env < flags.
func loadConfigureCRIOConfig(args []string, stdout io.Writer) (configureCRIOConfig, error) {
	fs := flag.NewFlagSet("configure-crio", flag.ContinueOnError)
	var cfg configureCRIOConfig
	confDir := fs.String("conf-dir", "/etc/containers/registries.conf.d", "the registries.conf.d directory CRI-O reads")
	registriesConf := fs.String("registries-conf", "/etc/containers/registries.conf", "the main registries.conf, read for entries to merge and settings to warn about (empty: none)")
	mirror := fs.String("mirror", "http://127.0.0.1:5000", "lifeboat's URL, as CRI-O reaches it (serve's --listen)")
	var registries repeated
	fs.Var(&registries, "registries", "comma-separated registries, NAME or NAME=SERVER_URL; repeatable\n(default: those serve mirrors by default: "+defaultRegistryNames()+")")
	fs.BoolVar(&cfg.Remove, "remove", false, "undo: restore the backed-up drop-in, or remove lifeboat's")
	fs.BoolVar(&cfg.CRIO.Force, "force", false, "write lifeboat's own entries without merging, and replace a 50-lifeboat.conf lifeboat did not write (it is backed up first)")
	fs.BoolVar(&cfg.Reload, "reload", true, "after a change, send SIGHUP to crio so that it reads the registries again")
	addNodeScopeFlags(fs, &cfg.scope, "CRI-O")
	if err := parseNodeFlags(fs, configureCRIOUsage, args, stdout); err != nil {
		return configureCRIOConfig{}, err
	}
	var err error
	if cfg.CRIO.Mirror, err = nodeconfig.ParseMirror(*mirror); err != nil {
		return configureCRIOConfig{}, fmt.Errorf("--mirror %q: %w", *mirror, err)
	}
	if *confDir == "" {
		return configureCRIOConfig{}, errors.New("--conf-dir must not be empty")
	}
	if *confDir, err = filepath.Abs(*confDir); err != nil {
		return configureCRIOConfig{}, fmt.Errorf("--conf-dir: %w", err)
	}
	cfg.CRIO.Root, cfg.CRIO.ConfDir, cfg.CRIO.RegistriesConf = cfg.scope.root, *confDir, *registriesConf
	if cfg.Registries, err = parseRegistries(registries); err != nil {
		return configureCRIOConfig{}, err
	}
	return cfg, nil
}
