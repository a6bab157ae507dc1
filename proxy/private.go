package proxy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
)

// PrivateContent is an upstream's policy for what lifeboat fetched of a
// private repository (one upstream refuses an anonymous client).
type PrivateContent string

const (
	// PrivateShared serves anything lifeboat can fetch to every client on
	// the node (the default).
	PrivateShared PrivateContent = "shared"
	// PrivateVerify answers a client's manifest or tag list request for a
	// private repository 401 while upstream is reachable, so that
	// containerd asks the registry itself, with the pod's own credentials.
	// Blobs by digest are still served. lifeboat refreshes its own copy in
	// the background, for an outage.
	PrivateVerify PrivateContent = "verify"
)

// PrivateOutage is an upstream's policy for private content while upstream
// is unavailable, under PrivateVerify.
type PrivateOutage string

const (
	// OutageServe serves the cached copy, counted and logged (the default):
	// the node keeps running what it ran.
	OutageServe PrivateOutage = "serve"
	// OutageDeny refuses it: nobody's right to it can be checked.
	OutageDeny PrivateOutage = "deny"
)

// ErrPrivateVerify answers a client's request for a private repository's
// manifest under PrivateVerify while upstream is reachable.
var ErrPrivateVerify = errors.New("private repository: pull it from the registry itself, with your own credentials (privateContent: verify)")

// ErrPrivateOutage answers it during an outage under OutageDeny.
var ErrPrivateOutage = errors.New("private repository: not served from the cache while upstream is unavailable (privateDuringOutage: deny)")

// accessRecheck is how long what upstream said of a repository to an
// anonymous client stands before it is asked again.
const accessRecheck = time.Hour

// private is the proxy's state for private repositories: its metrics and
// the access checks running in the background.
type private struct {
	answers  *prometheus.CounterVec
	checks   *prometheus.CounterVec
	checking sync.Map // registry/repo → struct{}: a background check runs

	// known keeps the repository records read or written, so that a
	// manifest answer costs no index read for them (the hot path).
	mu    sync.Mutex
	known map[string]cache.RepoAccess
}

// maxKnownRepos bounds private.known; past it the map starts over.
const maxKnownRepos = 1 << 16

// repoAccess is what upstream last said of repo to an anonymous client.
func (p *Proxy) repoAccess(registry, repo string) (cache.RepoAccess, error) {
	key := registry + "/" + repo
	p.private.mu.Lock()
	rec, ok := p.private.known[key]
	p.private.mu.Unlock()
	if ok {
		return rec, nil
	}
	rec, err := p.store.GetRepoAccess(registry, repo)
	if err == nil {
		p.private.remember(key, rec)
	}
	return rec, err
}

func (p *Proxy) putRepoAccess(registry, repo string, rec cache.RepoAccess) error {
	if err := p.store.PutRepoAccess(registry, repo, rec); err != nil {
		return err
	}
	p.private.remember(registry+"/"+repo, rec)
	return nil
}

func (pr *private) remember(key string, rec cache.RepoAccess) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.known == nil || len(pr.known) >= maxKnownRepos {
		pr.known = make(map[string]cache.RepoAccess)
	}
	pr.known[key] = rec
}

func newPrivate(reg prometheus.Registerer) *private {
	p := &private{
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_proxy_private_answers_total",
			Help: "Client requests for a private repository's manifests or tags under privateContent: verify, by registry and answer: verify (401, sent to the registry itself), outage-served (upstream unavailable, cached copy served), outage-denied (privateDuringOutage: deny).",
		}, []string{"registry", "answer"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_proxy_access_checks_total",
			Help: "Checks of whether upstream refuses an anonymous client a repository, by registry and result (public, private, error).",
		}, []string{"registry", "result"}),
	}
	if reg != nil {
		reg.MustRegister(p.answers, p.checks)
	}
	return p
}

// verifyPrivate applies PrivateVerify to a client's manifest request. done
// is false when the request takes the ordinary path: the repository is
// public, or the upstream's policy is PrivateShared.
func (p *Proxy) verifyPrivate(ctx context.Context, m *mirror, repo, ref string) (ans *Manifest, err error, done bool) {
	if m.PrivateContent != PrivateVerify {
		return nil, nil, false
	}
	rec, err := p.repoAccess(m.name, repo)
	if err != nil && !errors.Is(err, cache.ErrNotFound) {
		return nil, err, true
	}
	known := err == nil && p.now().Sub(rec.Checked) < accessRecheck
	if known && !rec.Private {
		return nil, nil, false
	}
	timeouts := m.Client.Timeouts()
	budget := timeouts.Request
	if p.holds(m, repo, ref) {
		budget = timeouts.Revalidate
	}
	uctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	var current string
	leave, err := p.requestSlot(uctx, m, "private check "+repo)
	if err == nil {
		defer leave()
	}
	switch {
	case err != nil:
		p.metrics.busy.WithLabelValues(m.name, "request").Inc()
	case known:
		// Private: is upstream there to check the client? One HEAD with
		// lifeboat's own credentials, which also says whether the tag moved.
		current, err = m.Client.HeadManifest(uctx, repo, ref)
	default:
		var isPrivate bool
		if isPrivate, err = p.checkAccess(uctx, m, repo, ref); err == nil && !isPrivate {
			return nil, nil, false
		}
	}
	if errors.Is(err, ErrBusy) {
		// Not checked: every request slot was busy. That says nothing of
		// upstream, so the outage policy does not apply: the client gets
		// a 503 and asks the registry itself.
		return nil, err, true
	}
	var ue *upstream.Error
	if errors.As(err, &ue) && ue.Unavailable() && ctx.Err() == nil {
		p.upstreamFailed(m.name, repo, "manifest "+ref, err)
		ans, err := p.privateOutage(ctx, m, repo, ref, ue)
		return ans, err, true
	}
	if ctx.Err() != nil {
		return nil, ctx.Err(), true
	}
	p.refreshPrivate(m, repo, ref, current)
	p.private.answers.WithLabelValues(m.name, "verify").Inc()
	return nil, fmt.Errorf("%s/%s: %w", m.name, repo, ErrPrivateVerify), true
}

// checkAccess asks upstream whether it refuses an anonymous client repo,
// and records the answer.
func (p *Proxy) checkAccess(ctx context.Context, m *mirror, repo, ref string) (bool, error) {
	isPrivate, err := m.Client.RefusesAnonymous(ctx, repo, ref)
	if err != nil {
		p.private.checks.WithLabelValues(m.name, "error").Inc()
		return false, err
	}
	result := "public"
	if isPrivate {
		result = "private"
	}
	p.private.checks.WithLabelValues(m.name, result).Inc()
	if err := p.putRepoAccess(m.name, repo, cache.RepoAccess{Private: isPrivate, Checked: p.now()}); err != nil {
		return false, err
	}
	return isPrivate, nil
}

// noteAccess checks, in the background, whether upstream refuses an
// anonymous client a repository lifeboat just answered for, unless that
// was checked less than accessRecheck ago: `lifeboat ls` shows it, and
// PrivateVerify reads it.
func (p *Proxy) noteAccess(m *mirror, repo, ref string) {
	if rec, err := p.repoAccess(m.name, repo); err == nil && p.now().Sub(rec.Checked) < accessRecheck {
		return
	}
	key := m.name + "/" + repo
	if _, running := p.private.checking.LoadOrStore(key, struct{}{}); running {
		return
	}
	if !p.background(func(bg context.Context) {
		defer p.private.checking.Delete(key)
		ctx, cancel := context.WithTimeout(bg, m.Client.Timeouts().Request)
		defer cancel()
		if _, err := p.checkAccess(ctx, m, repo, ref); err != nil {
			p.upstreamFailed(m.name, repo, "access check "+ref, err)
		}
	}) {
		p.private.checking.Delete(key)
	}
}

// holds reports whether the store can answer ref in repo.
func (p *Proxy) holds(m *mirror, repo, ref string) bool {
	if d, err := digest.Parse(ref); err == nil {
		_, err := p.manifest(d)
		return err == nil
	}
	_, err := p.store.GetTag(cache.TagKey{Registry: m.name, Repo: repo, Tag: ref})
	return err == nil
}

// privateOutage answers a private repository's manifest while upstream is
// unavailable, as the upstream's PrivateOutage says.
func (p *Proxy) privateOutage(ctx context.Context, m *mirror, repo, ref string, ue *upstream.Error) (*Manifest, error) {
	if m.PrivateDuringOutage == OutageDeny {
		p.private.answers.WithLabelValues(m.name, "outage-denied").Inc()
		p.log.Warn("not serving a private repository during an outage (privateDuringOutage: deny)", "registry", m.name, "repository", repo, "reference", ref, "reason", ue.Reason)
		return nil, fmt.Errorf("%s/%s: %w: %w", m.name, repo, ErrPrivateOutage, ue)
	}
	var ans *Manifest
	if d, err := digest.Parse(ref); err == nil {
		cm, err := p.manifest(d)
		if err != nil {
			return nil, ue
		}
		ans = &Manifest{Digest: d, MediaType: cm.MediaType, Body: cm.Body, Source: Hit}
	} else {
		key := cache.TagKey{Registry: m.name, Repo: repo, Tag: ref}
		t, err := p.store.GetTag(key)
		if err != nil {
			return nil, ue
		}
		cm, err := p.manifest(t.Digest)
		if err != nil {
			return nil, ue
		}
		if ans, err = p.staleOr(ctx, m, key, &Manifest{Digest: cm.Digest, MediaType: cm.MediaType, Body: cm.Body}, t.Confirmed, ue); err != nil {
			return nil, err
		}
	}
	p.private.answers.WithLabelValues(m.name, "outage-served").Inc()
	p.log.Warn("serving a private repository from the cache during an outage (privateDuringOutage: serve)", "registry", m.name, "repository", repo, "reference", ref, "reason", ue.Reason)
	return ans, nil
}

// refreshPrivate keeps lifeboat's own copy of what a client was sent to
// the registry for, so that it is there in an outage. current is the
// digest upstream just gave for ref, if it was asked.
func (p *Proxy) refreshPrivate(m *mirror, repo, ref, current string) {
	budget := m.Client.Timeouts().Request
	if d, err := digest.Parse(ref); err == nil {
		if _, err := p.manifest(d); err == nil {
			return
		}
		p.background(func(bg context.Context) {
			if _, err := p.manifestByDigest(bg, m, repo, d); err != nil {
				p.upstreamFailed(m.name, repo, "refresh "+ref, err)
			}
		})
		return
	}
	key := cache.TagKey{Registry: m.name, Repo: repo, Tag: ref}
	if t, err := p.store.GetTag(key); err == nil && current != "" && digest.Digest(current) == t.Digest {
		if _, err := p.manifest(t.Digest); err == nil {
			// Confirmed by the HEAD just made: no GET.
			_ = p.store.ConfirmTag(key, t.Digest, p.now())
			return
		}
	}
	p.background(func(bg context.Context) {
		if _, err := p.fetchTag(bg, m, key, budget); err != nil {
			p.upstreamFailed(m.name, repo, "refresh "+ref, err)
		}
	})
}

// privateTags applies PrivateVerify to a tag list: under it, a repository
// recorded private is answered as its manifests are. A repository never
// checked (or not for accessRecheck) is checked now, before its list goes
// out, with one of its tags; one that cannot be checked is treated as
// private. upstreamErr is why upstream could not be asked for the list (nil:
// it answered); a busy proxy says nothing of upstream, so it gets the
// client sent to the registry, not the outage policy.
func (p *Proxy) privateTags(ctx context.Context, m *mirror, repo string, tags []string, upstreamErr error) error {
	if m.PrivateContent != PrivateVerify {
		return nil
	}
	rec, err := p.repoAccess(m.name, repo)
	if err != nil && !errors.Is(err, cache.ErrNotFound) {
		return err
	}
	private := err == nil && rec.Private
	if upstreamErr == nil && (err != nil || p.now().Sub(rec.Checked) >= accessRecheck) {
		if len(tags) == 0 {
			return nil // nothing to give away
		}
		cctx, cancel := context.WithTimeout(ctx, m.Client.Timeouts().Request)
		isPrivate, cerr := p.checkAccess(cctx, m, repo, tags[0])
		cancel()
		private = cerr != nil || isPrivate
	} else if upstreamErr != nil && err != nil {
		private = true // unknown, and upstream cannot say: the strict answer
	}
	switch {
	case !private:
		return nil
	case upstreamErr == nil || errors.Is(upstreamErr, ErrBusy):
		p.private.answers.WithLabelValues(m.name, "verify").Inc()
		return fmt.Errorf("%s/%s: %w", m.name, repo, ErrPrivateVerify)
	case m.PrivateDuringOutage == OutageDeny:
		p.private.answers.WithLabelValues(m.name, "outage-denied").Inc()
		return fmt.Errorf("%s/%s: %w", m.name, repo, ErrPrivateOutage)
	}
	p.private.answers.WithLabelValues(m.name, "outage-served").Inc()
	return nil
}
