package proxy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/opencontainers/go-digest"
)

// Manifest is a manifest answer: the exact bytes, digest and media type
// upstream sent.
type Manifest struct {
	Digest    digest.Digest
	MediaType string
	Body      []byte
	Source    Source
}

// Manifest resolves ref (a tag or a digest) in repo of registry.
func (p *Proxy) Manifest(ctx context.Context, registry, repo, ref string) (*Manifest, error) {
	up, err := p.upstream(registry)
	if err != nil {
		return nil, err
	}
	repo = up.repoPath(repo)
	if d, err := digest.Parse(ref); err == nil {
		return p.manifestByDigest(ctx, up, repo, d)
	}
	return p.manifestByTag(ctx, up, repo, ref)
}

func (p *Proxy) manifestByDigest(ctx context.Context, up *upstream, repo string, d digest.Digest) (*Manifest, error) {
	m, err := p.store.GetManifest(d)
	if err == nil {
		return &Manifest{Digest: d, MediaType: m.MediaType, Body: m.Body, Source: Hit}, nil
	}
	if !errors.Is(err, cache.ErrNotFound) && !errors.Is(err, cache.ErrDigestMismatch) {
		return nil, err
	}
	if errors.Is(err, cache.ErrDigestMismatch) {
		p.log.Error("cached manifest is corrupt on disk; fetching it again", "digest", d, "error", err)
	}
	ctx, cancel := context.WithTimeout(ctx, up.cfg.Timeouts.Request)
	defer cancel()
	fm, err := p.fetchManifest(ctx, up, repo, d.String(), d)
	if err != nil {
		return nil, err
	}
	fm.Source = Miss
	return fm, nil
}

// fetchManifest GETs ref and stores it. want, if set, is the digest the
// bytes must match; otherwise they must match what upstream announced.
func (p *Proxy) fetchManifest(ctx context.Context, up *upstream, repo, ref string, want digest.Digest) (*Manifest, error) {
	fm, err := up.getManifest(ctx, repo, ref)
	if err != nil {
		p.upstreamFailed(up.cfg.Name, repo, "manifest "+ref, err)
		return nil, err
	}
	bad := func(err error) error {
		return &UpstreamError{Registry: up.cfg.Name, Reason: ReasonBadResponse, Err: err}
	}
	if want == "" {
		want = digest.FromBytes(fm.body)
		if announced := digest.Digest(fm.digest); announced != "" {
			if announced.Validate() != nil {
				return nil, bad(fmt.Errorf("manifest %s: upstream announced invalid digest %q: %w", ref, announced, ErrDigestMismatch))
			}
			want = announced
		}
	}
	if got := want.Algorithm().FromBytes(fm.body); got != want {
		p.metrics.digestMismatch.WithLabelValues(up.cfg.Name, "manifest").Inc()
		return nil, bad(fmt.Errorf("manifest %s from %s: bytes hash to %s, expected %s: %w", ref, up.cfg.Name, got, want, ErrDigestMismatch))
	}
	refs, mediaType, err := cache.ParseManifest(fm.body)
	if err != nil {
		return nil, bad(fmt.Errorf("manifest %s from %s: %w", ref, up.cfg.Name, err))
	}
	if fm.mediaType == "" || fm.mediaType == "application/json" || fm.mediaType == "text/plain" {
		fm.mediaType = mediaType
	}
	if fm.mediaType == "" {
		return nil, bad(fmt.Errorf("manifest %s from %s: no media type in header or body", ref, up.cfg.Name))
	}
	m := cache.Manifest{Digest: want, MediaType: fm.mediaType, Body: fm.body, Refs: refs}
	if err := p.store.PutManifest(m); err != nil {
		return nil, fmt.Errorf("store manifest %s: %w", want, err)
	}
	return &Manifest{Digest: want, MediaType: fm.mediaType, Body: fm.body}, nil
}

func (p *Proxy) manifestByTag(ctx context.Context, up *upstream, repo, tag string) (*Manifest, error) {
	key := cache.TagKey{Registry: up.cfg.Name, Repo: repo, Tag: tag}
	now := p.now()
	cached, err := p.store.GetTag(key)
	if errors.Is(err, cache.ErrNotFound) {
		return p.fetchTag(ctx, up, key, up.cfg.Timeouts.Request)
	}
	if err != nil {
		return nil, err
	}
	m, err := p.store.GetManifest(cached.Digest)
	if err != nil {
		// The tag points at a manifest the store no longer has.
		return p.fetchTag(ctx, up, key, up.cfg.Timeouts.Request)
	}
	answer := &Manifest{Digest: m.Digest, MediaType: m.MediaType, Body: m.Body, Source: Hit}
	if up.cfg.TagTTL > 0 && now.Sub(cached.Confirmed) < up.cfg.TagTTL {
		return answer, nil
	}

	current, err := p.revalidations.head(ctx, key.String(), func(ctx context.Context) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, up.cfg.Timeouts.Revalidate)
		defer cancel()
		d, err := up.headManifest(ctx, repo, tag)
		if err != nil {
			p.upstreamFailed(up.cfg.Name, repo, "revalidate "+tag, err)
			return d, err
		}
		// Confirmed once per HEAD, not once per request sharing it (each
		// index write is an fsync).
		if digest.Digest(d) == cached.Digest {
			if err := p.store.PutTag(key, cache.Tag{Digest: cached.Digest, MediaType: m.MediaType, Confirmed: p.now()}); err != nil {
				return "", err
			}
		}
		return d, nil
	})
	if err != nil {
		return p.staleOr(ctx, up, key, answer, cached.Confirmed, err)
	}
	if d := digest.Digest(current); d != "" && d.Validate() == nil {
		if d != cached.Digest {
			// The tag moved. If the store already holds its new target
			// (a tag moved back, or pulled by digest before), no GET.
			if m, err := p.store.GetManifest(d); err == nil {
				answer = &Manifest{Digest: d, MediaType: m.MediaType, Body: m.Body, Source: Hit}
			} else {
				answer = nil
			}
		}
		if answer != nil && d != cached.Digest {
			if err := p.store.PutTag(key, cache.Tag{Digest: answer.Digest, MediaType: answer.MediaType, Confirmed: now}); err != nil {
				return nil, err
			}
		}
		if answer != nil {
			return answer, nil
		}
	}
	// The tag moved (or upstream did not say where): fetch it again, within
	// a revalidation budget of its own, since a cached answer is waiting.
	fresh, err := p.fetchTag(ctx, up, key, up.cfg.Timeouts.Revalidate)
	if err != nil {
		return p.staleOr(ctx, up, key, &Manifest{Digest: m.Digest, MediaType: m.MediaType, Body: m.Body, Source: Hit}, cached.Confirmed, err)
	}
	return fresh, nil
}

// staleOr answers cached, marked stale, when err says upstream is
// unavailable (and the client is still there), unless the tag was last
// confirmed longer ago than MaxStaleness. A tag upstream says is gone is
// served stale only with ServeStaleOnNotFound. Otherwise it returns err.
func (p *Proxy) staleOr(ctx context.Context, up *upstream, key cache.TagKey, cached *Manifest, confirmed time.Time, err error) (*Manifest, error) {
	var ue *UpstreamError
	if !errors.As(err, &ue) || ctx.Err() != nil {
		return nil, err
	}
	if !ue.Unavailable() && !(ue.Reason == ReasonNotFound && up.cfg.ServeStaleOnNotFound) {
		return nil, err
	}
	if age := p.now().Sub(confirmed); up.cfg.MaxStaleness > 0 && age > up.cfg.MaxStaleness {
		p.log.Warn("not serving stale tag: older than the maximum staleness", "registry", up.cfg.Name, "repository", key.Repo, "reference", key.Tag, "confirmed", confirmed, "max_staleness", up.cfg.MaxStaleness)
		return nil, err
	}
	p.servedStale(up.cfg.Name, key.Repo, key.Tag, ue)
	cached.Source = Stale
	return cached, nil
}

// fetchTag GETs a tag from upstream, stores manifest and tag, and answers.
func (p *Proxy) fetchTag(ctx context.Context, up *upstream, key cache.TagKey, budget time.Duration) (*Manifest, error) {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	m, err := p.fetchManifest(ctx, up, key.Repo, key.Tag, "")
	if err != nil {
		return nil, err
	}
	if err := p.store.PutTag(key, cache.Tag{Digest: m.Digest, MediaType: m.MediaType, Confirmed: p.now()}); err != nil {
		return nil, err
	}
	m.Source = Miss
	return m, nil
}
