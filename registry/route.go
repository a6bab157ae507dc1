package registry

import (
	"errors"
	"fmt"
	"regexp"
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
	kindReferrers kind = "referrers"   // not served: 404, so clients fall back to the tag schema (OCI 1.1)
)

// route is a request path parsed once into what it names.
type route struct {
	kind kind
	name string // repository, e.g. library/alpine
	ref  string // tag or digest (manifests), digest (blobs)
}

var (
	errNameInvalid   = errors.New("invalid repository name")
	errDigestInvalid = errors.New("invalid digest")
	errTagInvalid    = errors.New("invalid tag")
	errNotFound      = errors.New("no such endpoint")
)

// parsePath parses a /v2/ API path. Repository names contain slashes, so the
// path is split on its last /manifests/, /blobs/ or /tags/list.
func parsePath(p string) (route, error) {
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
		r = route{kind: kindReferrers, name: rest[:i]}
	default:
		return route{}, errNotFound
	}
	named, err := validateName(r.name)
	if err != nil {
		return route{}, err
	}
	switch r.kind {
	case kindBlob:
		if _, err := digest.Parse(r.ref); err != nil {
			return route{}, fmt.Errorf("%w %q: %v", errDigestInvalid, r.ref, err)
		}
	case kindManifest:
		if strings.Contains(r.ref, ":") {
			if _, err := digest.Parse(r.ref); err != nil {
				return route{}, fmt.Errorf("%w %q: %v", errDigestInvalid, r.ref, err)
			}
		} else if _, err := reference.WithTag(named, r.ref); err != nil {
			return route{}, fmt.Errorf("%w %q", errTagInvalid, r.ref)
		}
	}
	return r, nil
}

// repositoryPath is the distribution grammar for a repository path without a
// registry host: lower-case alphanumeric components separated by '.', '_',
// '__' or dashes, joined by '/'.
var repositoryPath = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)

// validateName checks a repository path (no registry host) against the
// distribution grammar: lower-case components separated by slashes, at most
// 255 characters, no "..", no empty component.
func validateName(name string) (reference.Named, error) {
	if len(name) > reference.RepositoryNameTotalLengthMax || !repositoryPath.MatchString(name) {
		return nil, fmt.Errorf("%w %q", errNameInvalid, name)
	}
	named, err := reference.WithName(name)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", errNameInvalid, name, err)
	}
	return named, nil
}
