package registry

import (
	"encoding/json"
	"net/http"

	"github.com/lifeboat-dev/lifeboat/proxy"
	"github.com/opencontainers/go-digest"
)

// referrers answers GET /v2/<name>/referrers/<digest> (OCI 1.1): the image
// index of the manifests whose subject is digest, filtered by the
// artifactType query parameter when there is one (and then saying so in
// OCI-Filters-Applied).
func (h *handler) referrers(w http.ResponseWriter, r *http.Request, registry string, rt route) (proxy.Source, error) {
	ans, err := h.p.Referrers(r.Context(), registry, rt.name, digest.Digest(rt.ref))
	if err != nil {
		return "", err
	}
	body := ans.Body
	hdr := w.Header()
	if at := r.URL.Query().Get("artifactType"); at != "" {
		if body, err = filterArtifactType(body, at); err != nil {
			return "", err
		}
		hdr.Set("OCI-Filters-Applied", "artifactType")
	}
	hdr.Set("Content-Type", ociIndex)
	hdr.Set(CacheHeader, string(ans.Source))
	serveBytes(w, r, body)
	return ans.Source, nil
}

const ociIndex = "application/vnd.oci.image.index.v1+json"

// filterArtifactType returns index with only the descriptors of
// artifactType in its manifests; every other field is kept as it was.
func filterArtifactType(index []byte, artifactType string) ([]byte, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(index, &doc); err != nil {
		return nil, err
	}
	var all []json.RawMessage
	if raw, ok := doc["manifests"]; ok {
		if err := json.Unmarshal(raw, &all); err != nil {
			return nil, err
		}
	}
	kept := []json.RawMessage{}
	for _, d := range all {
		var desc struct {
			ArtifactType string `json:"artifactType"`
		}
		if err := json.Unmarshal(d, &desc); err != nil {
			return nil, err
		}
		if desc.ArtifactType == artifactType {
			kept = append(kept, d)
		}
	}
	raw, err := json.Marshal(kept)
	if err != nil {
		return nil, err
	}
	doc["manifests"] = raw
	return json.Marshal(doc)
}
