package nodeconfig

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// The contents of a hosts.toml lifeboat writes. The first line marks the
// file as lifeboat's; the other marker lines record what --remove must do.
const (
	hostsHeader    = "# Written by lifeboat configure-containerd; `lifeboat configure-containerd --remove` undoes it."
	hostsExplained = "# containerd tries lifeboat first, and server, the registry itself, when lifeboat\n# is unreachable or answers an error."
	createdDirLine = "# lifeboat created this directory: --remove deletes it once it is empty."
	mergedLine     = "# Merged: lifeboat's host, then the original's (kept in hosts.toml.lifeboat-backup)."
)

// isLifeboats reports whether a hosts.toml was written by lifeboat.
func isLifeboats(b []byte) bool {
	return bytes.HasPrefix(b, []byte(strings.SplitN(hostsHeader, ";", 2)[0]))
}

// hasMarker reports whether one of lifeboat's marker lines is in the
// file's leading comment block.
func hasMarker(b []byte, marker string) bool {
	for line := range strings.Lines(string(b)) {
		line = strings.TrimRight(line, "\r\n")
		if line == marker {
			return true
		}
		if !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return false
}

// renderHosts is lifeboat's own hosts.toml for a registry.
func (c Containerd) renderHosts(t Target, createdDir bool) []byte {
	var b bytes.Buffer
	b.WriteString(hostsHeader + "\n" + hostsExplained + "\n")
	if createdDir {
		b.WriteString(createdDirLine + "\n")
	}
	fmt.Fprintf(&b, "server = %s\n\n", tomlString(t.Server))
	c.writeHostTable(&b)
	return b.Bytes()
}

// writeHostTable is lifeboat's own [host] table.
func (c Containerd) writeHostTable(b *bytes.Buffer) {
	fmt.Fprintf(b, "[host.%s]\n  capabilities = [\"pull\", \"resolve\"]\n", tomlString(c.Mirror))
	if c.DialTimeout > 0 {
		// containerd 2.x parses it with time.ParseDuration, and ignores
		// the whole file if that fails; 1.x ignores the key.
		fmt.Fprintf(b, "  dial_timeout = %s\n", tomlString(c.DialTimeout.String()))
	}
}

// mergeHosts is lifeboat's host followed by an existing hosts.toml: its
// top-level keys (server and the settings that go with it) first, then
// lifeboat's [host] table, then the original's tables, as the original
// text, in its order. A table the original has for the mirror itself is
// dropped (lifeboat's replaces it). The result is a function of orig, t and
// c only, so a second run writes the same bytes.
func (c Containerd) mergeHosts(orig []byte, t Target) ([]byte, error) {
	doc, err := splitHosts(orig, c.Mirror)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(hostsHeader + "\n" + hostsExplained + "\n" + mergedLine + "\n")
	if !doc.hasServer {
		fmt.Fprintf(&b, "server = %s\n", tomlString(t.Server))
	}
	b.Write(doc.root)
	if len(doc.root) > 0 && !bytes.HasSuffix(doc.root, []byte("\n")) {
		b.WriteString("\n")
	}
	b.WriteString("\n")
	c.writeHostTable(&b)
	if rest := bytes.TrimLeft(doc.rest, "\r\n"); len(rest) > 0 {
		b.WriteString("\n")
		b.Write(rest)
		if !bytes.HasSuffix(rest, []byte("\n")) {
			b.WriteString("\n")
		}
	}
	// What containerd will make of it: valid TOML, lifeboat first.
	hosts, err := hostOrder(b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("merged file does not parse (%w)", err)
	}
	if len(hosts) == 0 || hosts[0] != c.Mirror {
		return nil, fmt.Errorf("merged file does not list %s first", c.Mirror)
	}
	return b.Bytes(), nil
}

// splitHosts is an existing hosts.toml cut where lifeboat's table goes.
type splitDoc struct {
	root      []byte // top-level key/values and the comments among them
	rest      []byte // everything from the first table on
	hasServer bool
}

func splitHosts(b []byte, mirror string) (splitDoc, error) {
	var check map[string]any
	if err := toml.Unmarshal(b, &check); err != nil {
		return splitDoc{}, tomlError(err)
	}
	type table struct {
		start  int
		mirror bool
	}
	var (
		doc     splitDoc
		rootEnd int
		tables  []table
		p       unstable.Parser
	)
	p.Reset(b)
	for p.NextExpression() {
		e := p.Expression()
		var parts []string
		keyAt := 0
		for it := e.Key(); it.Next(); {
			if len(parts) == 0 {
				keyAt = int(it.Node().Raw.Offset)
			}
			parts = append(parts, string(it.Node().Data))
		}
		if len(parts) == 0 {
			continue
		}
		switch e.Kind {
		case unstable.KeyValue:
			if len(tables) > 0 {
				continue // a key of a table
			}
			if parts[0] == "host" {
				return splitDoc{}, errors.New(`its hosts are not written as [host."..."] tables`)
			}
			if len(parts) == 1 && parts[0] == "server" {
				doc.hasServer = true
			}
			rootEnd = lineEnd(b, int(e.Raw.Offset+e.Raw.Length))
		case unstable.Table, unstable.ArrayTable:
			if parts[0] == "host" && (e.Kind == unstable.ArrayTable || len(parts) < 2) {
				return splitDoc{}, errors.New(`its hosts are not written as [host."..."] tables`)
			}
			isMirror := parts[0] == "host" && strings.TrimRight(parts[1], "/") == mirror
			tables = append(tables, table{start: lineStart(b, keyAt), mirror: isMirror})
		}
	}
	if err := p.Error(); err != nil {
		return splitDoc{}, err
	}
	doc.root = b[:rootEnd]
	var rest bytes.Buffer
	pos := rootEnd
	for i, t := range tables {
		if !t.mirror {
			continue
		}
		rest.Write(b[pos:t.start])
		pos = len(b)
		if i+1 < len(tables) {
			pos = tables[i+1].start
		}
	}
	rest.Write(b[pos:])
	doc.rest = rest.Bytes()
	return doc, nil
}

// hostOrder is the hosts of a hosts.toml in the order containerd tries
// them (the order of their tables), after checking the file decodes.
func hostOrder(b []byte) ([]string, error) {
	var check map[string]any
	if err := toml.Unmarshal(b, &check); err != nil {
		return nil, tomlError(err)
	}
	var p unstable.Parser
	p.Reset(b)
	var hosts []string
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind != unstable.Table {
			continue
		}
		var parts []string
		for it := e.Key(); it.Next(); {
			parts = append(parts, string(it.Node().Data))
		}
		if len(parts) >= 2 && parts[0] == "host" && (len(hosts) == 0 || hosts[len(hosts)-1] != parts[1]) {
			hosts = append(hosts, parts[1])
		}
	}
	return hosts, p.Error()
}

// lineStart is the offset of the start of the line holding offset i.
func lineStart(b []byte, i int) int {
	return bytes.LastIndexByte(b[:i], '\n') + 1
}

// lineEnd is the offset just past the newline ending the line holding
// offset i, or len(b).
func lineEnd(b []byte, i int) int {
	if n := bytes.IndexByte(b[i:], '\n'); n >= 0 {
		return i + n + 1
	}
	return len(b)
}

// tomlError is a TOML decoding error on one line, with its position.
func tomlError(err error) error {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return fmt.Errorf("not valid TOML: line %d, column %d: %s", row, col, strings.TrimPrefix(de.Error(), "toml: "))
	}
	return fmt.Errorf("not valid TOML: %w", err)
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
