package nodeconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Status is how a check came out.
type Status int

const (
	// OK: the runtime uses lifeboat as configured.
	OK Status = iota
	// Warn: pulls still go through lifeboat, but something is off.
	Warn
	// Fail: the runtime bypasses lifeboat (or lifeboat cannot help it).
	Fail
)

func (s Status) String() string {
	return [...]string{"OK", "WARN", "FAIL"}[s]
}

// Finding is the result of one check, written for the node's operator:
// what was checked, what was found, and, unless OK, what to do.
type Finding struct {
	Status Status
	Check  string // "containerd config", "docker.io hosts.toml", ...
	Detail string
	Fix    string
}

func (f Finding) String() string {
	s := fmt.Sprintf("%-4s %s: %s", f.Status, f.Check, f.Detail)
	if f.Fix != "" && f.Status != OK {
		s += "; fix: " + f.Fix
	}
	return s
}

// Healthy reports whether no finding failed.
func Healthy(findings []Finding) bool {
	return !slices.ContainsFunc(findings, func(f Finding) bool { return f.Status == Fail })
}

// CheckContainerd checks, without asking containerd, that containerd sends
// the targets' pulls to lifeboat: configFile (if set) points config_path at
// HostsDir, and each target's hosts.toml is lifeboat's, with Mirror as the
// first host. hostsDir is HostsDir as containerd names it (they differ when
// the host's root is mounted elsewhere); "" means HostsDir. These are the
// checks `serve` repeats for lifeboat_node_config_ok: they read a few small
// files and ask nobody.
func (c Containerd) CheckContainerd(configFile, hostsDir string, targets []Target) []Finding {
	if hostsDir == "" {
		hostsDir = c.HostsDir
	}
	out := []Finding{checkConfigFile(configFile, hostsDir)}
	for _, t := range targets {
		out = append(out, c.checkHosts(t))
		for _, w := range c.CheckShadowing(t) {
			out = append(out, Finding{Status: Fail, Check: t.Name + " hosts.toml", Detail: w, Fix: "remove that directory"})
		}
	}
	return out
}

// checkConfigFile checks that containerd's config file points config_path
// at hostsDir.
func checkConfigFile(configFile, hostsDir string) Finding {
	f := Finding{Check: "containerd config"}
	if configFile == "" {
		f.Status, f.Detail = Warn, "not checked (no containerd config file given)"
		return f
	}
	path, err := ContainerdConfigPath(configFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.Status = Fail
	case err != nil:
		f.Status, f.Detail = Warn, fmt.Sprintf("cannot read it: %v", err)
		return f
	}
	if ws := CheckContainerdConfig(configFile, hostsDir); len(ws) > 0 {
		f.Status, f.Detail = Fail, strings.Join(ws, "; ")
		f.Fix = "containerd reads config_path only at start: restart it after the change"
		return f
	}
	f.Detail = fmt.Sprintf("%s sets config_path = %s", configFile, tomlString(path))
	return f
}

// checkHosts checks one registry's hosts.toml: there, lifeboat's, and
// lifeboat first.
func (c Containerd) checkHosts(t Target) Finding {
	f := Finding{Check: t.Name + " hosts.toml", Fix: "run lifeboat configure-containerd (or restart lifeboat's pod on this node)"}
	file := filepath.Join(c.HostsDir, t.Name, hostsFile)
	b, err := os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.Status, f.Detail = Fail, file+" does not exist: containerd pulls "+t.Name+" without lifeboat"
		return f
	case err != nil:
		f.Status, f.Detail = Fail, err.Error()
		return f
	case !isLifeboats(b):
		f.Status, f.Detail = Fail, file+" was not written by lifeboat"
		f.Fix = "run lifeboat configure-containerd, which merges it (backing it up first)"
		return f
	}
	hosts, err := hostOrder(b)
	if err != nil {
		f.Status, f.Detail = Fail, fmt.Sprintf("%s: containerd cannot read it: %v", file, err)
		return f
	}
	if len(hosts) == 0 || strings.TrimRight(hosts[0], "/") != c.Mirror {
		f.Status, f.Detail = Fail, fmt.Sprintf("%s does not name lifeboat (%s) as the first host (hosts: %s)", file, c.Mirror, strings.Join(hosts, ", "))
		f.Fix = "run lifeboat configure-containerd --mirror " + c.Mirror
		return f
	}
	f.Detail = fmt.Sprintf("%s is lifeboat's, %s first", file, c.Mirror)
	return f
}

// CheckCRIO checks, without asking CRI-O, that the drop-in is lifeboat's
// and makes Mirror the first mirror of each target.
func (c CRIO) CheckCRIO(targets []Target) []Finding {
	file := filepath.Join(c.ConfDir, CRIODropIn)
	f := Finding{Check: "CRI-O drop-in", Fix: "run lifeboat configure-crio (or restart lifeboat's pod on this node)"}
	b, err := os.ReadFile(c.at(file))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.Status, f.Detail = Fail, file+" does not exist: CRI-O pulls without lifeboat"
		return []Finding{f}
	case err != nil:
		f.Status, f.Detail = Fail, err.Error()
		return []Finding{f}
	case !isCRIOLifeboats(b):
		f.Status, f.Detail = Fail, file+" was not written by lifeboat"
		return []Finding{f}
	}
	var rf registriesFile
	if err := toml.Unmarshal(b, &rf); err != nil {
		f.Status, f.Detail = Fail, fmt.Sprintf("%s: CRI-O cannot read it: %v", file, tomlError(err))
		return []Finding{f}
	}
	f.Detail = file + " is lifeboat's"
	out := []Finding{f}
	for _, t := range targets {
		g := Finding{Check: t.Name + " mirror", Fix: f.Fix}
		want := c.mirrorLocation(t.Name)
		i := slices.IndexFunc(rf.Registries, func(e registryEntry) bool { return e.Prefix == t.Name || (e.Prefix == "" && e.Location == t.Name) })
		switch {
		case i < 0:
			g.Status, g.Detail = Fail, fmt.Sprintf("%s has no [[registry]] for %s", file, t.Name)
		case len(rf.Registries[i].Mirrors) == 0 || strings.TrimRight(rf.Registries[i].Mirrors[0].Location, "/") != want:
			g.Status, g.Detail = Fail, fmt.Sprintf("%s: the first mirror of %s is not %s", file, t.Name, want)
		default:
			g.Detail = fmt.Sprintf("%s first", want)
		}
		out = append(out, g)
	}
	return out
}
