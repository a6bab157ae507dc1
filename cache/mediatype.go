package cache

import (
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
)

// The manifest media types lifeboat stores and serves (the ones upstream is
// asked for). Docker schema 1 is not among them: its digest is not the
// digest of its bytes.
const (
	mediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"

	// mediaTypeDockerConfig is the config of a Docker v2 image manifest.
	mediaTypeDockerConfig = "application/vnd.docker.container.image.v1+json"
)

// isIndexMediaType says whether mt is one of the index types; known says
// whether it is a manifest type lifeboat serves at all.
func isIndexMediaType(mt string) (index, known bool) {
	switch mt {
	case mediaTypeOCIIndex, mediaTypeDockerList:
		return true, true
	case mediaTypeOCIManifest, mediaTypeDockerManifest:
		return false, true
	}
	return false, false
}

// ParseManifest returns the digests a manifest or index refers to (an
// index's child manifests; an image manifest's layers, then its config)
// and its media type as its bytes establish it: the mediaType they declare,
// which must be one lifeboat serves and agree with their shape (an index
// has manifests, an image manifest has config and layers), or, when they
// declare none (OCI allows that), the OCI type of their shape. Bytes of
// neither shape, of both, or declaring another shape or an unknown type are
// an error. The media type returned is always one of the four manifest
// types lifeboat serves.
func ParseManifest(body []byte) ([]digest.Digest, string, error) {
	return ParseManifestAs(body, "")
}

// ParseManifestAs is ParseManifest for bytes that came with a Content-Type
// (upstream's claim, unverified). The claim is taken only for bytes that
// declare no media type, and only when it is consistent with them: a type
// of their shape, and for a Docker v2 type, Docker v2 descriptors (a Docker
// config; Docker v2 child manifests). Otherwise it is ignored: a
// Content-Type is never an error, only bytes are.
func ParseManifestAs(body []byte, contentType string) ([]digest.Digest, string, error) {
	p, err := parseManifest(body)
	if err != nil {
		return nil, "", err
	}
	return p.refs, p.mediaType(contentType), nil
}

// parsedManifest is what a manifest's bytes say about it.
type parsedManifest struct {
	refs     []digest.Digest
	declared string // the mediaType field; "" when absent
	index    bool   // shaped like an index (else like an image manifest)
	docker   bool   // its descriptors are Docker v2 ones
}

// mediaType is the media type of the bytes, hint (a Content-Type) deciding
// only what the bytes leave open.
func (p parsedManifest) mediaType(hint string) string {
	switch {
	case p.declared != "":
		return p.declared
	case p.accepts(hint):
		return hint
	case p.index:
		return mediaTypeOCIIndex
	}
	return mediaTypeOCIManifest
}

// accepts says whether mt is consistent with the bytes.
func (p parsedManifest) accepts(mt string) bool {
	if p.declared != "" {
		return mt == p.declared
	}
	switch mt {
	case mediaTypeOCIIndex:
		return p.index
	case mediaTypeOCIManifest:
		return !p.index
	case mediaTypeDockerList:
		return p.index && p.docker
	case mediaTypeDockerManifest:
		return !p.index && p.docker
	}
	return false
}

type descriptor struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
}

// parseManifest reads a manifest's bytes. Its top-level keys are matched
// exactly (encoding/json would also take "MediaType" for "mediaType", which
// another client's parser would not).
func parseManifest(body []byte) (parsedManifest, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return parsedManifest{}, fmt.Errorf("not a manifest: %w", err)
	}
	var version int
	var p parsedManifest
	var config *descriptor
	var layers, children []descriptor
	fields := []struct {
		key string
		dst any
	}{{"schemaVersion", &version}, {"mediaType", &p.declared}, {"config", &config}, {"layers", &layers}, {"manifests", &children}}
	for _, f := range fields {
		if raw, ok := top[f.key]; ok {
			if err := json.Unmarshal(raw, f.dst); err != nil {
				return parsedManifest{}, fmt.Errorf("not a manifest: %s: %w", f.key, err)
			}
		}
	}
	if version != 2 {
		return parsedManifest{}, fmt.Errorf("not a manifest: schemaVersion %d", version)
	}
	_, hasConfig := top["config"]
	_, hasLayers := top["layers"]
	_, p.index = top["manifests"]
	switch {
	case p.index && (hasConfig || hasLayers):
		return parsedManifest{}, fmt.Errorf("not a manifest: both an index (manifests) and an image manifest (config, layers)")
	case !p.index && !(hasConfig && hasLayers):
		return parsedManifest{}, fmt.Errorf("not a manifest: neither an index (manifests) nor an image manifest (config and layers)")
	}
	if p.declared != "" {
		index, known := isIndexMediaType(p.declared)
		if !known {
			return parsedManifest{}, fmt.Errorf("manifest declares media type %q, which lifeboat does not serve", p.declared)
		}
		if index != p.index {
			return parsedManifest{}, fmt.Errorf("manifest declares media type %s but is shaped like %s", p.declared, shape(p.index))
		}
	}
	all := children
	if !p.index {
		all = append(layers, descriptorOrZero(config))
		p.docker = config != nil && config.MediaType == mediaTypeDockerConfig
	} else {
		p.docker = len(children) > 0
		for _, c := range children {
			p.docker = p.docker && c.MediaType == mediaTypeDockerManifest
		}
	}
	for _, d := range all {
		if d.Digest.Validate() != nil {
			return parsedManifest{}, fmt.Errorf("invalid digest %q in manifest", d.Digest)
		}
		p.refs = append(p.refs, d.Digest)
	}
	return p, nil
}

func shape(index bool) string {
	if index {
		return "an index"
	}
	return "an image manifest"
}

// descriptorOrZero is *d, or a descriptor with no digest (which then fails
// validation) for a config that is null.
func descriptorOrZero(d *descriptor) descriptor {
	if d == nil {
		return descriptor{}
	}
	return *d
}
