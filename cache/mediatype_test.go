package cache

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

var (
	cfgDigest   = digest.FromString("config")
	layerDigest = digest.FromString("layer")
	childDigest = digest.FromString("child")
)

// imageBody is an image manifest; mediaType "" leaves the field out.
func imageBody(mediaType, configType string) []byte {
	return []byte(fmt.Sprintf(`{"schemaVersion":2,%s"config":{"mediaType":%q,"digest":%q},"layers":[{"digest":%q}]}`,
		field(mediaType), configType, cfgDigest, layerDigest))
}

// indexBody is an index of one child of childType.
func indexBody(mediaType, childType string) []byte {
	return []byte(fmt.Sprintf(`{"schemaVersion":2,%s"manifests":[{"mediaType":%q,"digest":%q}]}`, field(mediaType), childType, childDigest))
}

func field(mediaType string) string {
	if mediaType == "" {
		return ""
	}
	return fmt.Sprintf(`"mediaType":%q,`, mediaType)
}

func TestParseManifestTakesTheTypeFromTheBytes(t *testing.T) {
	t.Parallel()
	imageRefs := []digest.Digest{layerDigest, cfgDigest}
	indexRefs := []digest.Digest{childDigest}
	for _, tc := range []struct {
		name        string
		body        []byte
		contentType string
		want        string
		refs        []digest.Digest
	}{
		{"declared index, header says image manifest", indexBody(mediaTypeOCIIndex, mediaTypeOCIManifest), mediaTypeOCIManifest, mediaTypeOCIIndex, indexRefs},
		{"declared docker list, header says OCI index", indexBody(mediaTypeDockerList, mediaTypeDockerManifest), mediaTypeOCIIndex, mediaTypeDockerList, indexRefs},
		{"declared image manifest, header says index", imageBody(mediaTypeOCIManifest, "application/vnd.oci.image.config.v1+json"), mediaTypeOCIIndex, mediaTypeOCIManifest, imageRefs},
		{"undeclared index, header says image manifest", indexBody("", mediaTypeOCIManifest), mediaTypeDockerManifest, mediaTypeOCIIndex, indexRefs},
		{"undeclared index, no header", indexBody("", mediaTypeOCIManifest), "", mediaTypeOCIIndex, indexRefs},
		{"undeclared index, docker list header, OCI children", indexBody("", mediaTypeOCIManifest), mediaTypeDockerList, mediaTypeOCIIndex, indexRefs},
		{"undeclared index, docker list header, docker children", indexBody("", mediaTypeDockerManifest), mediaTypeDockerList, mediaTypeDockerList, indexRefs},
		{"undeclared image, docker header, docker config", imageBody("", mediaTypeDockerConfig), mediaTypeDockerManifest, mediaTypeDockerManifest, imageRefs},
		{"undeclared image, docker header, OCI config", imageBody("", "application/vnd.oci.image.config.v1+json"), mediaTypeDockerManifest, mediaTypeOCIManifest, imageRefs},
		{"undeclared image, unknown header", imageBody("", mediaTypeDockerConfig), "text/plain", mediaTypeOCIManifest, imageRefs},
		{"a case variant of mediaType is not mediaType", []byte(strings.Replace(string(indexBody("", mediaTypeOCIManifest)), "{", `{"MediaType":"`+mediaTypeOCIManifest+`",`, 1)), "", mediaTypeOCIIndex, indexRefs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			refs, mt, err := ParseManifestAs(tc.body, tc.contentType)
			require.NoError(t, err)
			assert.Equal(t, tc.want, mt)
			assert.Equal(t, tc.refs, refs)
		})
	}
}

func TestParseManifestRefusesInvalidBytes(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"not json":                     `<html>`,
		"schema 1":                     `{"schemaVersion":1,"fsLayers":[]}`,
		"no shape":                     `{"schemaVersion":2,"mediaType":"` + mediaTypeOCIManifest + `"}`,
		"config without layers":        `{"schemaVersion":2,"config":{"digest":"` + cfgDigest.String() + `"}}`,
		"both shapes":                  `{"schemaVersion":2,"manifests":[],"config":{"digest":"` + cfgDigest.String() + `"},"layers":[]}`,
		"declares index, is image":     string(imageBody(mediaTypeOCIIndex, "")),
		"declares docker v2, is index": string(indexBody(mediaTypeDockerManifest, "")),
		"unknown media type":           string(imageBody("application/vnd.oci.artifact.manifest.v1+json", "")),
		"invalid digest":               `{"schemaVersion":2,"manifests":[{"digest":"sha256:../../etc/passwd"}]}`,
		"null config":                  `{"schemaVersion":2,"config":null,"layers":[]}`,
		"mediaType not a string":       `{"schemaVersion":2,"mediaType":2,"manifests":[]}`,
	} {
		_, mt, err := ParseManifestAs([]byte(body), mediaTypeOCIIndex)
		assert.Error(t, err, name)
		assert.Empty(t, mt, name)
	}
}

// TestPutManifestKeepsTheFirstVerifiedType: the same bytes stored again
// with another (consistent) hint keep the type first recorded, and a
// caller's type the bytes contradict is never recorded.
func TestPutManifestKeepsTheFirstVerifiedType(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	body := imageBody("", mediaTypeDockerConfig) // either image type fits
	m := Manifest{Digest: digest.FromBytes(body), MediaType: mediaTypeDockerManifest, Body: body, Refs: []digest.Digest{layerDigest, cfgDigest}}
	got, err := s.PutManifest(m)
	require.NoError(t, err)
	assert.Equal(t, mediaTypeDockerManifest, got.MediaType)

	m.MediaType = mediaTypeOCIManifest
	got, err = s.PutManifest(m)
	require.NoError(t, err)
	assert.Equal(t, mediaTypeDockerManifest, got.MediaType, "a second registry cannot change it")
	stored, err := s.GetManifest(m.Digest)
	require.NoError(t, err)
	assert.Equal(t, mediaTypeDockerManifest, stored.MediaType)

	idx := indexBody(mediaTypeOCIIndex, mediaTypeOCIManifest)
	got, err = s.PutManifest(Manifest{Digest: digest.FromBytes(idx), MediaType: mediaTypeOCIManifest, Body: idx})
	require.NoError(t, err)
	assert.Equal(t, mediaTypeOCIIndex, got.MediaType, "the bytes, not the caller, say what they are")
}

// TestARecordTheBytesContradictIsCorrected: a record written before types
// came from the bytes (upstream's Content-Type) is not served, and the
// next store of the digest replaces it.
func TestARecordTheBytesContradictIsCorrected(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	body := indexBody(mediaTypeOCIIndex, mediaTypeOCIManifest)
	m := Manifest{Digest: digest.FromBytes(body), MediaType: mediaTypeOCIIndex, Body: body, Refs: []digest.Digest{childDigest}}
	_, err := s.PutManifest(m)
	require.NoError(t, err)
	poison := func(tx *bolt.Tx) error {
		return putJSON(tx, bucketManifests, m.Digest.String(), manifestRecord{MediaType: mediaTypeOCIManifest, Refs: m.Refs})
	}
	require.NoError(t, s.db.Update(poison))

	got, err := s.GetManifest(m.Digest)
	require.NoError(t, err)
	assert.Equal(t, mediaTypeOCIIndex, got.MediaType, "served as what the bytes say")
	got, err = s.PutManifest(m)
	require.NoError(t, err)
	assert.Equal(t, mediaTypeOCIIndex, got.MediaType)
	var rec manifestRecord
	require.NoError(t, s.getJSON(bucketManifests, m.Digest.String(), &rec))
	assert.Equal(t, mediaTypeOCIIndex, rec.MediaType, "and the record is corrected")
}

// FuzzParseManifest: no input panics, and a media type returned is one
// lifeboat serves, agrees with what the bytes declare and is consistent
// with the references returned (an index's are its children; an image
// manifest's its layers, then its config).
func FuzzParseManifest(f *testing.F) {
	for _, seed := range [][]byte{
		indexBody(mediaTypeOCIIndex, mediaTypeOCIManifest), indexBody("", mediaTypeDockerManifest),
		imageBody(mediaTypeDockerManifest, mediaTypeDockerConfig), imageBody("", ""),
		[]byte(`{"schemaVersion":2,"manifests":null}`), []byte(`{"schemaVersion":2,"config":{},"layers":null}`),
	} {
		f.Add(seed, "")
		f.Add(seed, mediaTypeDockerList)
		f.Add(seed, mediaTypeDockerManifest)
	}
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		refs, mt, err := ParseManifestAs(body, contentType)
		if err != nil {
			if mt != "" || refs != nil {
				t.Fatalf("an error with a media type %q or references %v", mt, refs)
			}
			return
		}
		index, known := isIndexMediaType(mt)
		if !known {
			t.Fatalf("media type %q is not one lifeboat serves", mt)
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal(body, &top); err != nil {
			t.Fatalf("accepted bytes that are not a JSON object: %v", err)
		}
		var declared string
		_ = json.Unmarshal(top["mediaType"], &declared)
		if declared != "" && declared != mt {
			t.Fatalf("bytes declare %q, returned %q", declared, mt)
		}
		var want []digest.Digest
		if index {
			var children []descriptor
			_ = json.Unmarshal(top["manifests"], &children)
			_, hasConfig := top["config"]
			if _, ok := top["manifests"]; !ok || hasConfig {
				t.Fatalf("%s for bytes not shaped like an index", mt)
			}
			for _, c := range children {
				want = append(want, c.Digest)
			}
		} else {
			var layers []descriptor
			var config descriptor
			_ = json.Unmarshal(top["layers"], &layers)
			_ = json.Unmarshal(top["config"], &config)
			_, hasManifests := top["manifests"]
			if _, ok := top["config"]; !ok || hasManifests {
				t.Fatalf("%s for bytes not shaped like an image manifest", mt)
			}
			for _, l := range layers {
				want = append(want, l.Digest)
			}
			want = append(want, config.Digest)
		}
		if !slices.Equal(want, refs) {
			t.Fatalf("%s: references %v, the bytes name %v", mt, refs, want)
		}
		for _, r := range refs {
			if r.Validate() != nil {
				t.Fatalf("invalid reference %q returned", r)
			}
		}
	})
}
