package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/opencontainers/go-digest"
)

// emptyReferrers is the answer for a subject nothing refers to: an empty
// image index, as a registry with the referrers API sends it.
var emptyReferrers = []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)

// errNoReferrersAPI: upstream does not serve the referrers API.
var errNoReferrersAPI = errors.New("upstream has no referrers API")

// referrersTag is the cache's tag row for subject's referrers list: a name
// no tag can have ("/" is outside the tag grammar), so no client reaches it
// as a tag, and the row goes with its index at eviction like any tag's.
func referrersTag(subject digest.Digest) string {
	return "referrers/" + subject.Algorithm().String() + "-" + subject.Encoded()
}

// fallbackTag is the OCI 1.1 referrers tag schema's tag for subject:
// <alg>-<hex>, where clients of a registry without the referrers API find
// (and push) the index of subject's referrers.
func fallbackTag(subject digest.Digest) string {
	return subject.Algorithm().String() + "-" + subject.Encoded()
}

// Referrers answers the referrers API (OCI 1.1) for subject in repo of
// registry: an image index of the manifests that name subject as their
// subject, unfiltered (the registry package applies artifactType). The
// list is mutable, like a tag: it is fetched from upstream (concurrent
// requests share one GET), cached, answered from the cache within the
// tag TTL, and served stale while upstream is unavailable. When upstream
// has no referrers API, the referrers tag schema's tag (sha256-<hex>) is
// resolved instead, as an ordinary tag (cached, revalidated, served
// stale); when that does not exist either, nothing refers to subject and
// the answer is an empty index.
func (p *Proxy) Referrers(ctx context.Context, registry, repo string, subject digest.Digest) (*Manifest, error) {
	m, err := p.mirror(registry)
	if err != nil {
		return nil, err
	}
	repo = m.Client.RepoPath(repo)
	// A private repository's referrers are as private as its manifests:
	// under PrivateVerify the client is sent to the registry while it
	// answers, and the outage policy decides otherwise (verifyPrivate
	// checks the subject; an outage answer it allows goes on below).
	if _, err, done := p.verifyPrivate(ctx, m, repo, subject.String()); done && err != nil {
		return nil, err
	}
	key := cache.TagKey{Registry: m.name, Repo: repo, Tag: referrersTag(subject)}
	timeouts := m.Client.Timeouts()
	var cached *Manifest
	var confirmed time.Time
	if t, err := p.store.GetTag(key); err == nil {
		if cm, err := p.manifest(t.Digest); err == nil {
			cached = &Manifest{Digest: cm.Digest, MediaType: cm.MediaType, Body: cm.Body, Source: Hit}
			confirmed = t.Confirmed
			if m.TagTTL > 0 && p.now().Sub(t.Confirmed) < m.TagTTL {
				return cached, nil
			}
		}
	}
	budget := timeouts.Request
	if cached != nil {
		budget = timeouts.Revalidate
	}
	fresh, err := p.shared(ctx, m.name, key.String(), budget, func(ctx context.Context) (*Manifest, error) {
		return p.fetchReferrers(ctx, m, key, subject)
	})
	switch {
	case err == nil:
		fresh.Source = Miss
		if cached != nil && cached.Digest == fresh.Digest {
			fresh.Source = Hit
		}
		return fresh, nil
	case errors.Is(err, errNoReferrersAPI):
		ans, err := p.referrersFromTag(ctx, m, repo, subject)
		if err == nil && ans.Source != Stale {
			// Remembered under the API's row too, so that an outage
			// answers what upstream last said, an empty list included.
			err = p.keepReferrers(key, ans)
		}
		return ans, err
	case cached != nil:
		return p.staleOr(ctx, m, key, cached, confirmed, err)
	}
	// Nothing cached under the API, and upstream unavailable: the
	// fallback tag, if cached (upstream had no API), is served stale.
	if ans, ferr := p.referrersFromTag(ctx, m, repo, subject); ferr == nil && ans.Source == Stale {
		return ans, nil
	}
	return nil, err
}

// fetchReferrers GETs subject's referrers list and stores it, as a
// manifest (an image index, by its own digest) and a tag row naming it.
func (p *Proxy) fetchReferrers(ctx context.Context, m *mirror, key cache.TagKey, subject digest.Digest) (*Manifest, error) {
	fm, err := m.Client.GetReferrers(ctx, key.Repo, subject.String())
	var ue *upstream.Error
	if errors.As(err, &ue) && (ue.Reason == upstream.ReasonNotFound || ue.Status == http.StatusBadRequest || ue.Status == http.StatusNotAcceptable) {
		return nil, errNoReferrersAPI // what OCI 1.1 clients take for "no API" too
	}
	if err != nil {
		p.upstreamFailed(m.name, key.Repo, "referrers "+subject.String(), err)
		return nil, err
	}
	if fm.MediaType != upstream.OCIIndex {
		return nil, errNoReferrersAPI
	}
	refs, mediaType, err := cache.ParseManifestAs(fm.Body, fm.MediaType)
	if err != nil || mediaType != upstream.OCIIndex {
		return nil, &upstream.Error{Registry: m.name, Reason: upstream.ReasonBadResponse,
			Err: fmt.Errorf("referrers of %s from %s: not an image index (%s): %v", subject, m.name, mediaType, err)}
	}
	ans := &Manifest{Digest: digest.FromBytes(fm.Body), MediaType: mediaType, Body: fm.Body}
	if _, err := p.store.PutManifest(cache.Manifest{Digest: ans.Digest, MediaType: mediaType, Body: fm.Body, Refs: refs}); err != nil {
		return nil, fmt.Errorf("store referrers of %s: %w", key.Repo, err)
	}
	return ans, p.keepReferrers(key, ans)
}

// keepReferrers records ans (stored already, unless it is the empty list)
// as upstream's current referrers list for key.
func (p *Proxy) keepReferrers(key cache.TagKey, ans *Manifest) error {
	if _, err := p.manifest(ans.Digest); err != nil && ans.Digest == digest.FromBytes(emptyReferrers) {
		if _, err := p.store.PutManifest(cache.Manifest{Digest: ans.Digest, MediaType: ans.MediaType, Body: ans.Body}); err != nil {
			return fmt.Errorf("store referrers of %s: %w", key.Repo, err)
		}
	}
	return p.store.PutTag(key, cache.Tag{Digest: ans.Digest, MediaType: ans.MediaType, Confirmed: p.now()})
}

// referrersFromTag answers from the referrers tag schema: the fallback
// tag's index, resolved like any tag, or an empty index when upstream says
// the tag does not exist.
func (p *Proxy) referrersFromTag(ctx context.Context, m *mirror, repo string, subject digest.Digest) (*Manifest, error) {
	ans, err := p.manifestByTag(ctx, m, repo, fallbackTag(subject))
	var ue *upstream.Error
	if errors.As(err, &ue) && ue.Reason == upstream.ReasonNotFound {
		return &Manifest{Digest: digest.FromBytes(emptyReferrers), MediaType: upstream.OCIIndex, Body: emptyReferrers, Source: Miss}, nil
	}
	return ans, err
}
