package nodeconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// The head of the drop-in lifeboat writes. The first line marks the file as
// lifeboat's.
const (
	crioHeader    = "# Written by lifeboat configure-crio; `lifeboat configure-crio --remove` undoes it."
	crioExplained = "# CRI-O (and podman, skopeo, buildah) tries each registry's mirrors in order, then\n" +
		"# the registry itself: lifeboat first, and the registry when lifeboat is\n" +
		"# unreachable or answers an error. A [[registry]] here replaces the one with the\n" +
		"# same prefix in registries.conf or an earlier drop-in."
)

func isCRIOLifeboats(b []byte) bool {
	return bytes.HasPrefix(b, []byte(strings.SplitN(crioHeader, ";", 2)[0]))
}

// registryEntry is a [[registry]] of registries.conf (format v2), with
// every key containers/image reads.
type registryEntry struct {
	Prefix             string        `toml:"prefix"`
	Location           string        `toml:"location"`
	Insecure           bool          `toml:"insecure"`
	Blocked            bool          `toml:"blocked"`
	MirrorByDigestOnly bool          `toml:"mirror-by-digest-only"`
	Mirrors            []mirrorEntry `toml:"mirror"`
}

type mirrorEntry struct {
	Location       string `toml:"location"`
	Insecure       bool   `toml:"insecure"`
	PullFromMirror string `toml:"pull-from-mirror"`
}

// registriesFile is what lifeboat reads of a registries.conf or drop-in.
type registriesFile struct {
	Registries                  []registryEntry `toml:"registry"`
	UnqualifiedSearchRegistries *[]string       `toml:"unqualified-search-registries"`
	ShortNameMode               string          `toml:"short-name-mode"`
	// Format v1, still read in registries.conf itself.
	V1 struct {
		Search   v1List `toml:"search"`
		Insecure v1List `toml:"insecure"`
		Block    v1List `toml:"block"`
	} `toml:"registries"`
}

type v1List struct {
	Registries []string `toml:"registries"`
}

// confFile is one file of the registries configuration, as containers/image
// takes it: prefixes defaulted to locations, the first entry of a prefix.
type confFile struct {
	path          string
	entries       []registryEntry
	search        *[]string // nil: not set here
	shortNameMode string
	later         bool // read after lifeboat's drop-in
}

// readOthers reads registries.conf and every drop-in but lifeboat's, in the
// order containers/image reads them.
func (c CRIO) readOthers() ([]confFile, error) {
	var files []confFile
	if c.RegistriesConf != "" {
		files = append(files, confFile{path: c.RegistriesConf})
	}
	dir, err := os.ReadDir(c.at(c.ConfDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range dir { // sorted by name, as containers/image walks it
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".conf") && e.Name() != CRIODropIn {
			files = append(files, confFile{path: filepath.Join(c.ConfDir, e.Name()), later: e.Name() > CRIODropIn})
		}
	}
	read := files[:0]
	for _, f := range files {
		p := f.path
		raw, err := os.ReadFile(c.at(p))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var rf registriesFile
		if err := toml.Unmarshal(raw, &rf); err != nil {
			return nil, fmt.Errorf("cannot read %s: %w", p, tomlError(err))
		}
		f.search, f.shortNameMode = rf.UnqualifiedSearchRegistries, rf.ShortNameMode
		f.entries = normalizeEntries(append(rf.Registries, v1Entries(rf)...))
		if rf.V1.Search.Registries != nil {
			f.search = &rf.V1.Search.Registries
		}
		read = append(read, f)
	}
	return read, nil
}

// v1Entries are the [[registry]] entries a format v1 file amounts to.
func v1Entries(rf registriesFile) []registryEntry {
	var out []registryEntry
	at := func(loc string) *registryEntry {
		loc = strings.TrimRight(loc, "/")
		for i := range out {
			if out[i].Location == loc {
				return &out[i]
			}
		}
		out = append(out, registryEntry{Prefix: loc, Location: loc})
		return &out[len(out)-1]
	}
	for _, r := range rf.V1.Block.Registries {
		at(r).Blocked = true
	}
	for _, r := range rf.V1.Insecure.Registries {
		at(r).Insecure = true
	}
	return out
}

// normalizeEntries defaults prefixes to locations, trims trailing slashes,
// and keeps the first entry of each prefix (containers/image ignores the
// others).
func normalizeEntries(in []registryEntry) []registryEntry {
	var out []registryEntry
	for _, e := range in {
		e.Location = strings.TrimRight(e.Location, "/")
		e.Prefix = strings.TrimRight(e.Prefix, "/")
		if e.Prefix == "" {
			e.Prefix = e.Location
		}
		if !slices.ContainsFunc(out, func(o registryEntry) bool { return o.Prefix == e.Prefix }) {
			out = append(out, e)
		}
	}
	return out
}

// dropEntry is one [[registry]] of lifeboat's drop-in.
type dropEntry struct {
	registryEntry
	mergedFrom  string // the file whose entry for the prefix was merged, "" if none
	digestOnly  bool   // that entry's mirror-by-digest-only, moved onto its mirrors
	lifeboatsAt string // lifeboat's mirror location
}

// entries are lifeboat's [[registry]] entries for targets: its own, or
// merged with the entry an earlier file has for the prefix. An entry of a
// later drop-in would replace lifeboat's: refused.
func (c CRIO) entries(targets []Target, files []confFile) ([]dropEntry, CRIOReport, error) {
	var (
		out       []dropEntry
		rep       CRIOReport
		conflicts []string
	)
	for _, t := range targets {
		d := dropEntry{lifeboatsAt: c.mirrorLocation(t.Name)}
		lifeboat := mirrorEntry{Location: d.lifeboatsAt, Insecure: strings.HasPrefix(c.Mirror, "http://"), PullFromMirror: "all"}
		var earlier *registryEntry
		for _, f := range files {
			i := slices.IndexFunc(f.entries, func(e registryEntry) bool { return e.Prefix == t.Name })
			switch {
			case i < 0:
			case f.later:
				conflicts = append(conflicts, fmt.Sprintf("%s, read after %s, has its own [[registry]] for %s, which replaces lifeboat's: "+
					"add the mirror location = %q to it first, or leave %s out of --registries", f.path, CRIODropIn, t.Name, d.lifeboatsAt, t.Name))
			default:
				earlier, d.mergedFrom = &f.entries[i], f.path
			}
		}
		if earlier == nil || c.Force {
			d.mergedFrom = ""
			d.registryEntry = registryEntry{Prefix: t.Name, Location: t.Name, Insecure: strings.HasPrefix(t.Server, "http://")}
			d.Mirrors = []mirrorEntry{lifeboat}
			out = append(out, d)
			continue
		}
		d.registryEntry = *earlier
		d.Mirrors = []mirrorEntry{lifeboat}
		for _, m := range earlier.Mirrors {
			if strings.TrimRight(m.Location, "/") == d.lifeboatsAt {
				continue // lifeboat's own, from a hand-made entry
			}
			if earlier.MirrorByDigestOnly && m.PullFromMirror == "" {
				// The same meaning, said per mirror: the registry-wide
				// flag would keep lifeboat from tag pulls, and
				// containers/image refuses it beside pull-from-mirror.
				m.PullFromMirror = "digest-only"
			}
			d.Mirrors = append(d.Mirrors, m)
		}
		d.digestOnly, d.MirrorByDigestOnly = earlier.MirrorByDigestOnly, false
		rep.Lines = append(rep.Lines, fmt.Sprintf("%s: merged with its [[registry]] in %s", t.Name, d.mergedFrom))
		out = append(out, d)
	}
	if len(conflicts) > 0 {
		return nil, CRIOReport{}, errors.New(strings.Join(conflicts, "; "))
	}
	return out, rep, nil
}

// mirrorLocation is lifeboat's mirror for a registry: lifeboat's host and
// the registry as a path prefix, ':' written '_' (a reference path cannot
// hold ':'); lifeboat's registry package reads it back.
func (c CRIO) mirrorLocation(registry string) string {
	host := c.Mirror[strings.Index(c.Mirror, "://")+3:]
	return host + "/" + strings.Replace(registry, ":", "_", 1)
}

// checkPrefixName refuses a registry name that cannot be a path prefix.
func checkPrefixName(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if strings.ToLower(name) != name {
		return fmt.Errorf("registry name %q: CRI-O sends it to lifeboat as a path prefix, which cannot hold upper case: write it in lower case", name)
	}
	return nil
}

// render is lifeboat's drop-in.
func (c CRIO) render(entries []dropEntry, createdDir bool) []byte {
	var b bytes.Buffer
	b.WriteString(crioHeader + "\n" + crioExplained + "\n")
	if createdDir {
		b.WriteString(createdDirLine + "\n")
	}
	for _, e := range entries {
		b.WriteString("\n")
		if e.mergedFrom != "" {
			fmt.Fprintf(&b, "# Merged with the [[registry]] for %s in %s:\n# lifeboat's mirror first, then that entry's own.\n", e.Prefix, e.mergedFrom)
			if e.digestOnly {
				b.WriteString("# Its mirror-by-digest-only = true is pull-from-mirror = \"digest-only\" on its own\n# mirrors here, so that lifeboat serves tags too.\n")
			}
		}
		fmt.Fprintf(&b, "[[registry]]\nprefix = %s\nlocation = %s\n", tomlString(e.Prefix), tomlString(e.Location))
		writeBool(&b, "", "insecure", e.Insecure)
		writeBool(&b, "", "blocked", e.Blocked)
		for _, m := range e.Mirrors {
			fmt.Fprintf(&b, "\n  [[registry.mirror]]\n  location = %s\n", tomlString(m.Location))
			writeBool(&b, "  ", "insecure", m.Insecure)
			if m.PullFromMirror != "" {
				fmt.Fprintf(&b, "  pull-from-mirror = %s\n", tomlString(m.PullFromMirror))
			}
		}
	}
	return b.Bytes()
}

func writeBool(b *bytes.Buffer, indent, key string, v bool) {
	if v {
		fmt.Fprintf(b, "%s%s = true\n", indent, key)
	}
}
