package nodeconfig

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// placed is a [[registry]] in the effective configuration, with its file.
type placed struct {
	registryEntry
	file string
}

// effective is the registries configuration as containers/image ends up
// with it once lifeboat's drop-in is in place: files in order, a later
// entry replacing an earlier one of the same prefix, the last
// unqualified-search-registries and short-name-mode set.
type effective struct {
	registries              map[string]placed
	search                  []string
	searchFrom              string
	shortNameMode, modeFrom string
}

func effectiveConf(entries []dropEntry, files []confFile, dropIn string) effective {
	eff := effective{registries: map[string]placed{}}
	add := func(f confFile) {
		for _, e := range f.entries {
			eff.registries[e.Prefix] = placed{e, f.path}
		}
		if f.search != nil {
			eff.search, eff.searchFrom = *f.search, f.path
		}
		if f.shortNameMode != "" {
			eff.shortNameMode, eff.modeFrom = f.shortNameMode, f.path
		}
	}
	ours := confFile{path: dropIn}
	for _, e := range entries {
		ours.entries = append(ours.entries, e.registryEntry)
	}
	added := false
	for _, f := range files {
		if f.later && !added {
			add(ours)
			added = true
		}
		add(f)
	}
	if !added {
		add(ours)
	}
	return eff
}

// warnings name the settings that keep pulls of targets from lifeboat, or
// from anywhere: a blocked registry, a more specific prefix without
// lifeboat's mirror, a wildcard prefix that wins over lifeboat's entry,
// short names resolved through registries lifeboat does not mirror.
func (c CRIO) warnings(targets []Target, entries []dropEntry, files []confFile) []string {
	dropIn := filepath.Join(c.ConfDir, CRIODropIn)
	eff := effectiveConf(entries, files, dropIn)
	var out []string
	mirrored := map[string]bool{}
	for _, e := range entries {
		mirrored[e.Prefix] = true
		if e.Blocked {
			out = append(out, fmt.Sprintf("%s is blocked (blocked = true, from %s): CRI-O refuses its images, through lifeboat or not", e.Prefix, e.mergedFrom))
		}
	}
	prefixes := make([]string, 0, len(eff.registries))
	for p := range eff.registries {
		prefixes = append(prefixes, p)
	}
	slices.Sort(prefixes)
	for _, t := range targets {
		for _, p := range prefixes {
			r := eff.registries[p]
			switch {
			case r.file == dropIn:
			case strings.HasPrefix(p, t.Name+"/") && !c.hasLifeboat(r.registryEntry):
				out = append(out, fmt.Sprintf("%s: [[registry]] prefix %q is more specific than %s, so its images are pulled without lifeboat: "+
					"add a [[registry.mirror]] with location = %q to it", r.file, p, t.Name, c.mirrorLocation(t.Name)+strings.TrimPrefix(p, t.Name)))
			case wildcardWins(p, t.Name):
				out = append(out, fmt.Sprintf("%s: [[registry]] prefix %q wins over lifeboat's %s (containers/image takes the first of the longest), "+
					"so %s is pulled without lifeboat", r.file, p, t.Name, t.Name))
			}
		}
	}
	var unmirrored []string
	for _, s := range eff.search {
		if !mirrored[s] {
			unmirrored = append(unmirrored, s)
		}
	}
	if len(unmirrored) > 0 {
		out = append(out, fmt.Sprintf("%s: unqualified-search-registries lists %s, which lifeboat does not mirror: "+
			"an image named without its registry (alpine) is looked for there without lifeboat; name images in full (docker.io/library/alpine)",
			eff.searchFrom, strings.Join(unmirrored, ", ")))
	}
	if eff.shortNameMode == "enforcing" && len(eff.search) > 1 {
		out = append(out, fmt.Sprintf("%s: short-name-mode = \"enforcing\" with several unqualified-search-registries: CRI-O tries them in order "+
			"regardless, but podman and skopeo without a terminal refuse an image named without its registry", eff.modeFrom))
	}
	return out
}

// hasLifeboat reports whether an entry already mirrors through lifeboat.
func (c CRIO) hasLifeboat(e registryEntry) bool {
	host := c.mirrorLocation("")
	return slices.ContainsFunc(e.Mirrors, func(m mirrorEntry) bool { return strings.HasPrefix(m.Location, host) })
}

// wildcardWins reports whether a *.example.com prefix matches name and is
// at least as long: containers/image then picks it (sorted first, and the
// first of the longest wins).
func wildcardWins(prefix, name string) bool {
	domain, ok := strings.CutPrefix(prefix, "*")
	return ok && strings.HasSuffix(name, domain) && len(prefix) >= len(name)
}
