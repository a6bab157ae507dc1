package registry

import (
	"errors"
	"fmt"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// kind is what a request path asks for.
type kind string

const (
	kindBase      kind = "base"
	kindManifest  kind = "manifest"
	kindBlob      kind = "blob"
	kindTags      kind = "tags"
	kindUnsupport kind = "unsupported" // catalog, uploads: not served by a pull-through cache
	kindReferrers kind = "referrers"   // the referrers API (OCI 1.1)
)

// route is a request path parsed once into what it names.
type route struct {
	kind kind
	// registry is the mirrored registry named by the path's first
	// component (CRI-O's mirrors: /v2/docker.io/library/alpine/...), and
	// prefix that component as written (docker.io, localhost_5001). Both
	// are empty when the path names no registry: ns= or the default
	// registry decides.
	registry, prefix string
	name             string // repository at that registry, e.g. library/alpine
	ref              string // tag or digest (manifests), digest (blobs, referrers)
}

// requested is the repository as the client named it, prefix included.
func (r route) requested() string {
	if r.prefix == "" {
		return r.name
	}
	return r.prefix + "/" + r.name
}

var (
	errNameInvalid   = errors.New("invalid repository name")
	errDigestInvalid = errors.New("invalid digest")
	errTagInvalid    = errors.New("invalid tag")
	errNotFound      = errors.New("no such endpoint")
)

// parsePath parses a /v2/ API path. Repository names contain slashes, so the
// path is split on its last /manifests/, /blobs/ or /tags/list. mirrored
// says whether a registry name is mirrored; with it, a name's first
// component may name the registry (see splitPrefix); nil: the whole name is
// the repository (the client chose the registry with ns=).
func parsePath(p string, mirrored func(registry string) bool) (route, error) {
	if p == "/v2" || p == "/v2/" {
		return route{kind: kindBase}, nil
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return route{}, errNotFound
	}
	if rest == "_catalog" {
		return route{kind: kindUnsupport}, nil
	}
	var r route
	switch {
	case strings.HasSuffix(rest, "/tags/list"):
		r = route{kind: kindTags, name: strings.TrimSuffix(rest, "/tags/list")}
	case strings.Contains(rest, "/blobs/uploads"):
		i := strings.LastIndex(rest, "/blobs/uploads")
		r = route{kind: kindUnsupport, name: rest[:i]}
	case strings.Contains(rest, "/manifests/"):
		i := strings.LastIndex(rest, "/manifests/")
		r = route{kind: kindManifest, name: rest[:i], ref: rest[i+len("/manifests/"):]}
	case strings.Contains(rest, "/blobs/"):
		i := strings.LastIndex(rest, "/blobs/")
		r = route{kind: kindBlob, name: rest[:i], ref: rest[i+len("/blobs/"):]}
	case strings.Contains(rest, "/referrers/"):
		i := strings.LastIndex(rest, "/referrers/")
		r = route{kind: kindReferrers, name: rest[:i], ref: rest[i+len("/referrers/"):]}
	default:
		return route{}, errNotFound
	}
	r.registry, r.prefix, r.name = splitPrefix(r.name, mirrored)
	if err := validateName(r.name); err != nil {
		return route{}, err
	}
	switch r.kind {
	case kindBlob, kindReferrers:
		if err := parseDigest(r.ref); err != nil {
			return route{}, fmt.Errorf("%w %q: %v", errDigestInvalid, r.ref, err)
		}
	case kindManifest:
		if strings.Contains(r.ref, ":") {
			if err := parseDigest(r.ref); err != nil {
				return route{}, fmt.Errorf("%w %q: %v", errDigestInvalid, r.ref, err)
			}
		} else if !validTag(r.ref) {
			return route{}, fmt.Errorf("%w %q", errTagInvalid, r.ref)
		}
	}
	return r, nil
}

// splitPrefix finds the registry a repository name starts with. CRI-O (any
// containers/image client) has no ns=: its mirror location is lifeboat's
// host plus a path, which replaces the registry in the reference, so
// docker.io/library/alpine through the mirror 127.0.0.1:5000/docker.io is
// asked for as /v2/docker.io/library/alpine/....
//
// The rule: when the first component of name names a mirrored registry and
// at least one component follows, that registry serves the rest. Otherwise
// the whole name is the repository (at ns=, or the default registry), as it
// always was. So a repository of the default registry whose first component
// spells a mirrored registry (a registry.internal repository called
// docker.io/library/alpine, asked for without ns=) is reached with its own
// registry as the prefix (/v2/registry.internal/docker.io/library/alpine)
// or with ns=; only one prefix is ever taken off. An unknown first
// component is part of the repository, never a registry to open.
//
// A reference path component cannot hold ':', so a registry with a port is
// written with '_' for its ':' (localhost:5001 as localhost_5001; a host
// name cannot hold '_', so this never collides with another registry). The
// verbatim form is taken too, for clients that write raw paths.
func splitPrefix(name string, mirrored func(string) bool) (registry, prefix, rest string) {
	first, rest, ok := strings.Cut(name, "/")
	if mirrored == nil || !ok || rest == "" {
		return "", "", name
	}
	registry = prefixRegistry(first)
	if registry == "" || !mirrored(registry) {
		return "", "", name
	}
	return registry, first, rest
}

// prefixRegistry is the registry name a path component spells: itself, or
// host:port for host_port. "" when it cannot be one.
func prefixRegistry(c string) string {
	if len(c) > maxRegistryName {
		return ""
	}
	if i := strings.LastIndexByte(c, '_'); i > 0 && isPort(c[i+1:]) {
		return c[:i] + ":" + c[i+1:]
	}
	return c
}

// maxRegistryName bounds the first component looked up as a registry (a
// DNS name is at most 253 bytes; a port and its separator add 6).
const maxRegistryName = 259

func isPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// validateName checks a repository path (no registry host) against the
// distribution grammar: lower-case alphanumeric components separated by
// '.', '_', '__' or dashes, joined by '/', at most 255 bytes in all. Written
// out by hand: it runs on every request, and the regular expressions of
// github.com/distribution/reference were a tenth of a cached answer's CPU.
// FuzzNameGrammar holds it to reference's regular expressions.
func validateName(name string) error {
	if !validRepositoryPath(name) {
		return fmt.Errorf("%w %q", errNameInvalid, name)
	}
	return nil
}

func validRepositoryPath(s string) bool {
	if s == "" || len(s) > reference.RepositoryNameTotalLengthMax {
		return false
	}
	for {
		c, rest, more := strings.Cut(s, "/")
		if !validComponent(c) {
			return false
		}
		if !more {
			return true
		}
		s = rest
	}
}

// validComponent: [a-z0-9]+ runs joined by exactly ".", "_", "__", or one
// or more "-".
func validComponent(c string) bool {
	if c == "" || !lowerAlnum(c[0]) || !lowerAlnum(c[len(c)-1]) {
		return false
	}
	for i := 0; i < len(c); {
		if lowerAlnum(c[i]) {
			i++
			continue
		}
		j := i
		for j < len(c) && !lowerAlnum(c[j]) {
			j++
		}
		switch sep := c[i:j]; {
		case sep == "." || sep == "_" || sep == "__":
		case strings.Trim(sep, "-") == "":
		default:
			return false
		}
		i = j
	}
	return true
}

func lowerAlnum(b byte) bool { return 'a' <= b && b <= 'z' || '0' <= b && b <= '9' }

// validTag is the distribution grammar for a tag: [\w][\w.-]{0,127}.
func validTag(t string) bool {
	if t == "" || len(t) > 128 || t[0] == '.' || t[0] == '-' {
		return false
	}
	for i := 0; i < len(t); i++ {
		b := t[i]
		if !(lowerAlnum(b) || 'A' <= b && b <= 'Z' || b == '_' || b == '.' || b == '-') {
			return false
		}
	}
	return true
}

// parseDigest is digest.Parse with a fast path for the form nearly every
// request carries, sha256 and 64 lower-case hex digits.
func parseDigest(s string) error {
	if hex, ok := strings.CutPrefix(s, "sha256:"); ok && len(hex) == 64 {
		i := 0
		for i < len(hex) && ('0' <= hex[i] && hex[i] <= '9' || 'a' <= hex[i] && hex[i] <= 'f') {
			i++
		}
		if i == len(hex) {
			return nil
		}
	}
	_, err := digest.Parse(s)
	return err
}
