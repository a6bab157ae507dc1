package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// manifestMediaTypes is the Accept list for manifests: every format lifeboat
// stores and serves unchanged. Docker schema 1 is not among them: its digest
// is not the digest of its bytes.
var manifestMediaTypes = []string{
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}

var manifestAccept = strings.Join(manifestMediaTypes, ", ")

func manifestHeader() http.Header {
	return http.Header{"Accept": {manifestAccept}}
}

// ErrTooLarge is returned when upstream content exceeds a limit.
var ErrTooLarge = errors.New("upstream content exceeds the size limit")

// MaxManifestSize bounds a manifest read into memory (distribution's limit).
const MaxManifestSize = 4 << 20

// HeadManifest asks upstream which digest ref resolves to. The digest is ""
// when upstream does not say.
func (c *Client) HeadManifest(ctx context.Context, repo, ref string) (string, error) {
	resp, err := c.do(ctx, repo, http.MethodHead, c.url(repo, "manifests", ref), manifestHeader())
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return resp.Header.Get("Docker-Content-Digest"), nil
}

// Manifest is a manifest as upstream sent it, unverified.
type Manifest struct {
	Body []byte
	// MediaType is upstream's Content-Type, parameters dropped.
	MediaType string
	// Digest is upstream's Docker-Content-Digest, if it sent one.
	Digest string
	// Header is the whole response header (a peer's X-Lifeboat-Confirmed).
	Header http.Header
}

// GetManifest fetches a manifest by tag or digest, at most MaxManifestSize
// bytes.
func (c *Client) GetManifest(ctx context.Context, repo, ref string) (Manifest, error) {
	return c.getDocument(ctx, repo, "manifests", ref, manifestHeader())
}

// OCIIndex is the media type of an OCI image index: what the referrers API
// answers.
const OCIIndex = "application/vnd.oci.image.index.v1+json"

// GetReferrers fetches the referrers API's list (OCI 1.1) of the manifests
// that name dgst as their subject, unfiltered: an image index, at most
// MaxManifestSize bytes. A registry without the API answers 404 (some 400
// or 406, or something other than an index: the caller checks MediaType).
func (c *Client) GetReferrers(ctx context.Context, repo, dgst string) (Manifest, error) {
	return c.getDocument(ctx, repo, "referrers", dgst, http.Header{"Accept": {OCIIndex}})
}

// getDocument GETs /v2/<repo>/<kind>/<ref>, a manifest-sized JSON document.
func (c *Client) getDocument(ctx context.Context, repo, kind, ref string, header http.Header) (Manifest, error) {
	resp, err := c.do(ctx, repo, http.MethodGet, c.url(repo, kind, ref), header)
	if err != nil {
		return Manifest{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		return Manifest{}, c.classify(err)
	}
	if len(body) > MaxManifestSize {
		return Manifest{}, &Error{Registry: c.cfg.Name, Reason: ReasonBadResponse, Err: fmt.Errorf("%s %s/%s:%s: %w (%d bytes)", strings.TrimSuffix(kind, "s"), c.cfg.Name, repo, ref, ErrTooLarge, MaxManifestSize)}
	}
	mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	return Manifest{Body: body, MediaType: strings.TrimSpace(mt), Digest: resp.Header.Get("Docker-Content-Digest"), Header: resp.Header}, nil
}

// HeadBlob returns the blob's size as upstream announces it (-1 if unsaid).
func (c *Client) HeadBlob(ctx context.Context, repo, dgst string) (int64, error) {
	resp, err := c.do(ctx, repo, http.MethodHead, c.url(repo, "blobs", dgst), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.ContentLength, nil
}
