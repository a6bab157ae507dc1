package main

import (
	"debug/buildinfo"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"

	cdx "github.com/CycloneDX/cyclonedx-go"
)

// writeSBOM writes a CycloneDX SBOM of lifeboat at version from the build
// information Go records in each binary: the modules linked into it (the
// module graph as built, each at its version and go.sum hash), the Go
// toolchain and standard library, and the build settings. Every binary must
// be built from the same modules, one SBOM serving them all; each is listed
// with its SHA-256 and its own settings (GOARCH, ...), so the SBOM names the
// very files it describes. revision is the source's commit, if known.
func writeSBOM(file, version, revision string, binaries []string) error {
	if len(binaries) == 0 {
		return errors.New("no binaries")
	}
	infos := make([]*debug.BuildInfo, len(binaries))
	for i, bin := range binaries {
		bi, err := buildinfo.ReadFile(bin)
		if err != nil {
			return err
		}
		if i > 0 && !sameModules(infos[0], bi) {
			return fmt.Errorf("%s and %s were built from different modules", binaries[0], bin)
		}
		infos[i] = bi
	}
	common := commonSettings(infos)
	files := make([]cdx.Component, len(binaries))
	for i, bin := range binaries {
		sum, err := sumFile(bin)
		if err != nil {
			return err
		}
		var props []cdx.Property
		for _, s := range infos[i].Settings {
			if _, ok := common[s.Key]; !ok {
				props = append(props, cdx.Property{Name: "lifeboat:build:" + s.Key, Value: s.Value})
			}
		}
		files[i] = cdx.Component{
			Type: cdx.ComponentTypeFile, Name: filepath.Base(bin), Properties: &props,
			Hashes: &[]cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: fmt.Sprintf("%x", sum.sum)}},
		}
	}
	info := infos[0]
	props := []cdx.Property{{Name: "lifeboat:go:version", Value: info.GoVersion}}
	if revision != "" {
		props = append(props, cdx.Property{Name: "lifeboat:source:revision", Value: revision})
	}
	for _, s := range info.Settings {
		if _, ok := common[s.Key]; ok {
			props = append(props, cdx.Property{Name: "lifeboat:build:" + s.Key, Value: s.Value})
		}
	}
	app := cdx.Component{
		Type: cdx.ComponentTypeApplication, Name: info.Main.Path, Version: "v" + version,
		PackageURL: purl(info.Main.Path, "v"+version),
		Licenses:   &cdx.Licenses{{License: &cdx.License{ID: "Apache-2.0"}}},
		Properties: &props,
		Components: &files,
	}
	app.BOMRef = app.PackageURL
	bom := cdx.NewBOM()
	bom.Metadata = &cdx.Metadata{
		Component: &app,
		Tools: &cdx.ToolsChoice{Components: &[]cdx.Component{{
			Type: cdx.ComponentTypeApplication, Name: "lifeboat release (make release)",
			Description: "reads the Go build information of the released binaries",
		}}},
	}
	comps := []cdx.Component{stdlib(info.GoVersion)}
	for _, m := range info.Deps {
		comps = append(comps, moduleComponent(m))
	}
	refs := make([]string, 0, len(comps))
	for _, c := range comps {
		refs = append(refs, c.BOMRef)
	}
	bom.Components = &comps
	// Go records which modules are linked, not which requires which: the
	// application depends on each.
	bom.Dependencies = &[]cdx.Dependency{{Ref: app.BOMRef, Dependencies: &refs}}

	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := cdx.NewBOMEncoder(f, cdx.BOMFileFormatJSON).SetPretty(true).EncodeVersion(bom, cdx.SpecVersion1_6); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// commonSettings are the build settings every binary has with one value.
func commonSettings(infos []*debug.BuildInfo) map[string]string {
	common := map[string]string{}
	for _, s := range infos[0].Settings {
		common[s.Key] = s.Value
	}
	for _, bi := range infos[1:] {
		have := map[string]string{}
		for _, s := range bi.Settings {
			have[s.Key] = s.Value
		}
		for k, v := range common {
			if w, ok := have[k]; !ok || w != v {
				delete(common, k)
			}
		}
	}
	return common
}

// sameModules: the same main module and dependencies, at the same versions.
func sameModules(a, b *debug.BuildInfo) bool {
	key := func(bi *debug.BuildInfo) []string {
		out := []string{bi.GoVersion, bi.Main.Path}
		for _, m := range bi.Deps {
			out = append(out, moduleKey(m))
		}
		return out
	}
	return slices.Equal(key(a), key(b))
}

func moduleKey(m *debug.Module) string {
	k := m.Path + "@" + m.Version
	if m.Replace != nil {
		k += "=>" + moduleKey(m.Replace)
	}
	return k
}

// moduleComponent is one linked module; a replaced module is listed as
// what was built (the replacement), naming what it replaces.
func moduleComponent(m *debug.Module) cdx.Component {
	built := m
	var props []cdx.Property
	if m.Replace != nil {
		built = m.Replace
		props = append(props, cdx.Property{Name: "lifeboat:go:replaces", Value: m.Path + "@" + m.Version})
	}
	c := cdx.Component{
		Type: cdx.ComponentTypeLibrary, Name: built.Path, Version: built.Version,
		PackageURL: purl(built.Path, built.Version), Scope: cdx.ScopeRequired,
	}
	c.BOMRef = c.PackageURL
	if h, ok := strings.CutPrefix(built.Sum, "h1:"); ok {
		// go.sum's h1: is the SHA-256 of the module's file list and file
		// hashes (golang.org/x/mod/sumdb/dirhash), checkable against the
		// Go checksum database.
		if raw, err := base64.StdEncoding.DecodeString(h); err == nil {
			c.Hashes = &[]cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: fmt.Sprintf("%x", raw)}}
		}
		props = append(props, cdx.Property{Name: "lifeboat:go:sum", Value: built.Sum})
	}
	if len(props) > 0 {
		c.Properties = &props
	}
	return c
}

// stdlib is the Go standard library the binaries were built with, as
// vulnerability scanners look it up.
func stdlib(goVersion string) cdx.Component {
	v, _, _ := strings.Cut(strings.TrimPrefix(goVersion, "go"), " ")
	c := cdx.Component{Type: cdx.ComponentTypeLibrary, Name: "stdlib", Version: v, PackageURL: "pkg:golang/stdlib@" + v, Scope: cdx.ScopeRequired}
	c.BOMRef = c.PackageURL
	return c
}

func purl(path, version string) string {
	return "pkg:golang/" + path + "@" + version + "?type=module"
}
