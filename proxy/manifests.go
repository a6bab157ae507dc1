package proxy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/opencontainers/go-digest"
)

// Manifest is a manifest answer: the exact bytes upstream sent, their
// digest, and the media type they establish (upstream's Content-Type only
// where the bytes leave it open and it agrees with them).
type Manifest struct {
	Digest    digest.Digest
	MediaType string
	Body      []byte
	Source    Source
}

// Manifest resolves ref (a tag or a digest) in repo of registry for a
// client: the upstream's PrivateContent policy applies (private.go),
// unless ctx comes from ForCache.
func (p *Proxy) Manifest(ctx context.Context, registry, repo, ref string) (*Manifest, error) {
	m, err := p.mirror(registry)
	if err != nil {
		return nil, err
	}
	repo = m.Client.RepoPath(repo)
	if ctx.Value(forCache{}) == nil {
		if ans, err, done := p.verifyPrivate(ctx, m, repo, ref); done {
			return ans, err
		}
	}
	ans, err := p.resolve(ctx, m, repo, ref)
	if err == nil {
		p.noteAccess(m, repo, ref)
	}
	return ans, err
}

type forCache struct{}

// ForCache marks ctx as lifeboat's own request (a prefetch), not a
// client's: no client policy applies to what is resolved with it.
func ForCache(ctx context.Context) context.Context {
	return context.WithValue(ctx, forCache{}, true)
}

// resolve answers ref by digest or by tag.
func (p *Proxy) resolve(ctx context.Context, m *mirror, repo, ref string) (*Manifest, error) {
	if d, err := digest.Parse(ref); err == nil {
		return p.manifestByDigest(ctx, m, repo, d)
	}
	return p.manifestByTag(ctx, m, repo, ref)
}

func (p *Proxy) manifestByDigest(ctx context.Context, m *mirror, repo string, d digest.Digest) (*Manifest, error) {
	cached, err := p.manifest(d)
	if err == nil {
		return &Manifest{Digest: d, MediaType: cached.MediaType, Body: cached.Body, Source: Hit}, nil
	}
	if !errors.Is(err, cache.ErrNotFound) && !errors.Is(err, cache.ErrDigestMismatch) {
		return nil, err
	}
	if errors.Is(err, cache.ErrDigestMismatch) {
		p.log.Error("cached manifest is corrupt on disk; fetching it again", "digest", d, "error", err)
	}
	key := m.name + "/" + repo + "@" + d.String()
	usePeers := p.peersAllowed(ctx)
	fm, err := p.shared(ctx, m.name, key, m.Client.Timeouts().Request, func(ctx context.Context) (*Manifest, error) {
		return p.manifestFromSources(ctx, m, repo, d, usePeers) // peers.go
	})
	if err != nil {
		return nil, err
	}
	fm.Source = Miss
	return fm, nil
}

// fetchManifest GETs ref and stores it. want, if set, is the digest the
// bytes must match; otherwise they must match what upstream announced.
func (p *Proxy) fetchManifest(ctx context.Context, m *mirror, repo, ref string, want digest.Digest) (*Manifest, error) {
	fm, err := m.Client.GetManifest(ctx, repo, ref)
	if err != nil {
		p.upstreamFailed(m.name, repo, "manifest "+ref, err)
		return nil, err
	}
	return p.acceptManifest(m, repo, ref, want, fm)
}

// acceptManifest verifies a manifest fetched for ref (from upstream or a
// peer) and stores it.
func (p *Proxy) acceptManifest(m *mirror, repo, ref string, want digest.Digest, fm upstream.Manifest) (*Manifest, error) {
	bad := func(err error) error {
		return &upstream.Error{Registry: m.name, Reason: upstream.ReasonBadResponse, Err: err}
	}
	if want == "" {
		want = digest.FromBytes(fm.Body)
		if announced := digest.Digest(fm.Digest); announced != "" {
			if announced.Validate() != nil {
				return nil, bad(fmt.Errorf("manifest %s: upstream announced invalid digest %q: %w", ref, announced, ErrDigestMismatch))
			}
			want = announced
		}
	}
	if got := want.Algorithm().FromBytes(fm.Body); got != want {
		p.metrics.digestMismatch.WithLabelValues(m.name, "manifest").Inc()
		return nil, bad(fmt.Errorf("manifest %s from %s: bytes hash to %s, expected %s: %w", ref, m.name, got, want, ErrDigestMismatch))
	}
	// The media type is what the bytes say, not what upstream's header
	// claims: the record is shared by every registry serving the digest.
	refs, mediaType, err := cache.ParseManifestAs(fm.Body, fm.MediaType)
	if err != nil {
		return nil, bad(fmt.Errorf("manifest %s from %s: %w", ref, m.name, err))
	}
	if fm.MediaType != "" && fm.MediaType != mediaType {
		p.log.Info("ignoring upstream's Content-Type: the manifest's bytes say otherwise", "registry", m.name,
			"repository", repo, "reference", ref, "content_type", fm.MediaType, "media_type", mediaType)
	}
	stored, err := p.store.PutManifest(cache.Manifest{Digest: want, MediaType: mediaType, Body: fm.Body, Refs: refs})
	if err != nil {
		return nil, fmt.Errorf("store manifest %s: %w", want, err)
	}
	return &Manifest{Digest: want, MediaType: stored.MediaType, Body: fm.Body}, nil
}

func (p *Proxy) manifestByTag(ctx context.Context, m *mirror, repo, tag string) (*Manifest, error) {
	key := cache.TagKey{Registry: m.name, Repo: repo, Tag: tag}
	timeouts := m.Client.Timeouts()
	now := p.now()
	cached, err := p.store.GetTag(key)
	if errors.Is(err, cache.ErrNotFound) {
		return p.fetchTagOrPeers(ctx, m, key, timeouts.Request)
	}
	if err != nil {
		return nil, err
	}
	cm, err := p.manifest(cached.Digest)
	if err != nil {
		// The tag points at a manifest the store no longer has.
		return p.fetchTagOrPeers(ctx, m, key, timeouts.Request)
	}
	answer := &Manifest{Digest: cm.Digest, MediaType: cm.MediaType, Body: cm.Body, Source: Hit}
	if m.TagTTL > 0 && now.Sub(cached.Confirmed) < m.TagTTL {
		return answer, nil
	}

	current, err := p.revalidations.head(ctx, key.String(), func(ctx context.Context) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, timeouts.Revalidate)
		defer cancel()
		d, err := m.Client.HeadManifest(ctx, repo, tag)
		if err != nil {
			p.upstreamFailed(m.name, repo, "revalidate "+tag, err)
		}
		return d, err
	}, func(_ context.Context, d string) {
		// Confirmed once per HEAD, not once per request sharing it, and
		// after they were answered; in memory, written with the next
		// batch (cache.Store.ConfirmTag). A failed write only means the
		// next request revalidates again.
		if digest.Digest(d) == cached.Digest {
			if err := p.store.ConfirmTag(key, cached.Digest, p.now()); err != nil {
				p.log.Error("recording a tag's confirmation", "registry", m.name, "repository", repo, "reference", tag, "error", err)
			}
		}
	})
	if err != nil {
		return p.staleOr(ctx, m, key, answer, cached.Confirmed, err)
	}
	if d := digest.Digest(current); d != "" && d.Validate() == nil {
		if d != cached.Digest {
			// The tag moved. If the store already holds its new target
			// (a tag moved back, or pulled by digest before), no GET.
			if moved, err := p.manifest(d); err == nil {
				answer = &Manifest{Digest: d, MediaType: moved.MediaType, Body: moved.Body, Source: Hit}
				if err := p.store.PutTag(key, cache.Tag{Digest: d, MediaType: moved.MediaType, Confirmed: now}); err != nil {
					return nil, err
				}
			} else {
				answer = nil
			}
		}
		if answer != nil {
			return answer, nil
		}
	}
	// The tag moved (or upstream did not say where): fetch it again, within
	// a revalidation budget of its own, since a cached answer is waiting.
	fresh, err := p.fetchTag(ctx, m, key, timeouts.Revalidate)
	if err != nil {
		return p.staleOr(ctx, m, key, &Manifest{Digest: cm.Digest, MediaType: cm.MediaType, Body: cm.Body, Source: Hit}, cached.Confirmed, err)
	}
	return fresh, nil
}

// staleOr answers cached, marked stale, when err says upstream is
// unavailable (and the client is still there), unless the tag was last
// confirmed longer ago than MaxStaleness. A tag upstream says is gone is
// served stale only with ServeStaleOnNotFound. Otherwise it returns err.
func (p *Proxy) staleOr(ctx context.Context, m *mirror, key cache.TagKey, cached *Manifest, confirmed time.Time, err error) (*Manifest, error) {
	var ue *upstream.Error
	if !errors.As(err, &ue) || ctx.Err() != nil {
		return nil, err
	}
	if !ue.Unavailable() && !(ue.Reason == upstream.ReasonNotFound && m.ServeStaleOnNotFound) {
		return nil, err
	}
	if age := p.now().Sub(confirmed); m.MaxStaleness > 0 && age > m.MaxStaleness {
		p.log.Warn("not serving stale tag: older than the maximum staleness", "registry", m.name, "repository", key.Repo, "reference", key.Tag, "confirmed", confirmed, "max_staleness", m.MaxStaleness)
		return nil, err
	}
	p.servedStale(m.name, key.Repo, key.Tag, ue)
	cached.Source = Stale
	return cached, nil
}

// fetchTagOrPeers is fetchTag for a tag nothing cached answers: while
// upstream is unavailable, the peers' caches may (tagFromPeers).
func (p *Proxy) fetchTagOrPeers(ctx context.Context, m *mirror, key cache.TagKey, budget time.Duration) (*Manifest, error) {
	fm, err := p.fetchTag(ctx, m, key, budget)
	if err != nil {
		return p.tagFromPeers(ctx, m, key, err)
	}
	return fm, nil
}

// fetchTag GETs a tag from upstream, stores manifest and tag, and answers.
// Concurrent fetches of one tag share one GET.
func (p *Proxy) fetchTag(ctx context.Context, m *mirror, key cache.TagKey, budget time.Duration) (*Manifest, error) {
	fm, err := p.shared(ctx, m.name, key.String(), budget, func(ctx context.Context) (*Manifest, error) {
		fm, err := p.fetchManifest(ctx, m, key.Repo, key.Tag, "")
		if err != nil {
			return nil, err
		}
		if err := p.store.PutTag(key, cache.Tag{Digest: fm.Digest, MediaType: fm.MediaType, Confirmed: p.now()}); err != nil {
			return nil, err
		}
		return fm, nil
	})
	if err != nil {
		return nil, err
	}
	fm.Source = Miss
	return fm, nil
}
