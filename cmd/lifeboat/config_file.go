package main

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// readConfigFile applies the --config file at path to c. The file is read
// as a tree of YAML nodes and walked against the settings table, so that an
// error names the file, the line and the key, and an unknown key is one.
func readConfigFile(path string, rows []setting, c *serveConfig) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		// "yaml: line 3: did not find expected key" becomes "path:3: ...".
		if rest, ok := strings.CutPrefix(err.Error(), "yaml: line "); ok {
			return fmt.Errorf("%s:%s", path, rest)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // an empty file
	}
	d := fileDecoder{file: path, rows: rows}
	leaves := map[string]leaf{}
	for _, r := range rows {
		switch {
		case r.key == "":
		case r.list != nil:
			leaves[r.key] = func(v *yaml.Node) error { return r.list(d, c, v) }
		default:
			leaves[r.key] = scalar(func(s string) error { return r.set(c, s) })
		}
	}
	return d.mapping(doc.Content[0], "", leaves)
}

// fileDecoder walks one config file.
type fileDecoder struct {
	file string
	rows []setting
}

// fileError is a config file error: where, and which key.
type fileError struct {
	file string
	line int
	key  string
	err  error
}

func (e *fileError) Error() string {
	if e.key == "" {
		return fmt.Sprintf("%s:%d: %v", e.file, e.line, e.err)
	}
	return fmt.Sprintf("%s:%d: %s: %v", e.file, e.line, e.key, e.err)
}

func (e *fileError) Unwrap() error { return e.err }

// at places err at n's line under key, unless a nested entry placed it.
func (d fileDecoder) at(n *yaml.Node, key string, err error) error {
	if _, ok := errors.AsType[*fileError](err); ok {
		return err
	}
	return &fileError{file: d.file, line: n.Line, key: key, err: err}
}

// leaf decodes the value of one key.
type leaf func(v *yaml.Node) error

// mapping decodes mapping n by leaves, keyed by dotted path from n. A key
// some leaves lie below is a section, decoded in turn; any other key is an
// error. name is n's own path in errors ("" at the top, "upstreams[1]").
func (d fileDecoder) mapping(n *yaml.Node, name string, leaves map[string]leaf) error {
	return d.section(n, name, "", leaves)
}

func (d fileDecoder) section(n *yaml.Node, name, prefix string, leaves map[string]leaf) error {
	n = deref(n)
	switch {
	case isNull(n):
		return nil
	case n.Kind != yaml.MappingNode && name == "" && prefix == "":
		return d.at(n, "", fmt.Errorf("the file must be a mapping of settings, not a %s", kind(n)))
	case n.Kind != yaml.MappingNode:
		return d.at(n, strings.TrimSuffix(join(name, prefix), "."), fmt.Errorf("must be a mapping of %s, not a %s", keysBelow(leaves, prefix), kind(n)))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		path := prefix + k.Value
		shown := join(name, path)
		if seen[k.Value] {
			return d.at(k, shown, errors.New("set twice"))
		}
		seen[k.Value] = true
		switch l := leaves[path]; {
		case l != nil:
			if err := l(v); err != nil {
				return d.at(v, shown, err)
			}
		case keysBelow(leaves, path+".") != "":
			if err := d.section(v, name, path+".", leaves); err != nil {
				return err
			}
		default:
			return d.at(k, shown, errors.New("unknown key"))
		}
	}
	return nil
}

// scalar is the leaf of a one-value setting; a key with no value (null)
// leaves the setting as it was.
func scalar(set func(string) error) leaf {
	return func(v *yaml.Node) error {
		switch v = deref(v); {
		case isNull(v):
			return nil
		case v.Kind != yaml.ScalarNode:
			return fmt.Errorf("must be a single value, not a %s", kind(v))
		}
		return set(v.Value)
	}
}

// list is the entries of a list value; null is none.
func (d fileDecoder) list(n *yaml.Node) ([]*yaml.Node, error) {
	n = deref(n)
	switch {
	case isNull(n):
		return nil, nil
	case n.Kind != yaml.SequenceNode:
		return nil, fmt.Errorf("must be a list, not a %s", kind(n))
	}
	return n.Content, nil
}

// decodeUpstreams reads the upstreams list. An entry's keys are its own
// (name, url, caFile, insecureSkipVerify, tokenRealms) and the top-level settings an
// upstream may override, checked by the same rows.
func decodeUpstreams(d fileDecoder, c *serveConfig, n *yaml.Node) error {
	items, err := d.list(n)
	if err != nil || len(items) == 0 {
		return err // an empty list names none: the default set stays
	}
	ups := make([]upstreamConfig, len(items))
	for i, item := range items {
		u := &ups[i]
		u.overrides = map[string]string{}
		leaves := map[string]leaf{
			"name":               scalar(func(s string) error { u.Name = s; return nil }),
			"url":                scalar(func(s string) error { u.URL = s; return nil }),
			"caFile":             scalar(func(s string) error { u.CAFile = s; return nil }),
			"insecureSkipVerify": scalar(func(s string) (err error) { u.InsecureSkipVerify, err = parseBool(s); return err }),
			"tokenRealms":        d.strings(fmt.Sprintf("upstreams[%d].tokenRealms", i), "host or host:port", &u.TokenRealms),
		}
		for _, r := range d.rows {
			if r.perUpstream != notPerUpstream {
				leaves[r.key] = scalar(func(s string) error { return r.override(u, s) })
			}
		}
		name := fmt.Sprintf("upstreams[%d]", i)
		if err := d.mapping(item, name, leaves); err != nil {
			return err
		}
		if u.Name == "" || u.URL == "" {
			return d.at(item, name, errors.New("needs a name and a url"))
		}
	}
	c.Upstreams = ups
	return nil
}

// override records an upstream entry's own value of a top-level setting,
// parsed now (for the error's line) and applied by resolveUpstreams.
func (r setting) override(u *upstreamConfig, v string) error {
	var scratch serveConfig
	if err := r.set(&scratch, v); err != nil {
		return err
	}
	if r.perUpstream == perUpstreamNonZero && reflect.DeepEqual(scratch, serveConfig{}) {
		return nil // zero: the top-level value stays
	}
	u.overrides[r.key] = v
	return nil
}

// decodePrefetch reads the prefetch list: entries of ref and platforms.
func decodePrefetch(d fileDecoder, c *serveConfig, n *yaml.Node) error {
	items, err := d.list(n)
	if err != nil {
		return err
	}
	c.Prefetch = make([]prefetchConfig, len(items))
	for i, item := range items {
		p := &c.Prefetch[i]
		leaves := map[string]leaf{
			"ref":       scalar(func(s string) error { p.Ref = s; return nil }),
			"platforms": d.strings(fmt.Sprintf("prefetch[%d].platforms", i), "os/arch[/variant]", &p.Platforms),
		}
		name := fmt.Sprintf("prefetch[%d]", i)
		if err := d.mapping(item, name, leaves); err != nil {
			return err
		}
		if p.Ref == "" {
			return d.at(item, name, errors.New("needs a ref"))
		}
	}
	return nil
}

// strings reads a list of strings into dst; a list given, even empty,
// leaves dst non-nil (an empty list means none, not the defaults).
func (d fileDecoder) strings(key, what string, dst *[]string) leaf {
	return func(v *yaml.Node) error {
		vals, err := d.list(v)
		*dst = []string{}
		for _, s := range vals {
			if s.Kind != yaml.ScalarNode {
				return d.at(s, key, fmt.Errorf("must be %s, not a %s", what, kind(s)))
			}
			*dst = append(*dst, s.Value)
		}
		return err
	}
}

// deref follows an alias (*name) to the value it names.
func deref(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode {
		return n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

func kind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "single value"
}

// keysBelow lists the keys of leaves below prefix, the next level only:
// what a section may hold.
func keysBelow(leaves map[string]leaf, prefix string) string {
	var keys []string
	for k := range leaves {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			next, _, _ := strings.Cut(rest, ".")
			if !slices.Contains(keys, next) {
				keys = append(keys, next)
			}
		}
	}
	slices.Sort(keys)
	return strings.Join(keys, ", ")
}

func join(name, key string) string {
	if name == "" {
		return key
	}
	return name + "." + key
}
