package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/opencontainers/go-digest"
)

// Peers is the cluster tier as the proxy asks it: the other lifeboats of
// the cluster (peers.Cluster). Peers are never trusted for integrity: every
// answer they give is handed to a try function that verifies it against
// its digest and stores it, and an answer try refuses sends the tier on to
// the next peer.
type Peers interface {
	// Blob asks for blob d of registry/repo: d's owners ranked above this
	// node (none on d's first owner, which goes to upstream), and with
	// everyone also a bounded set of the other ready peers. Each answer
	// that starts is handed to try, until try returns nil. It returns
	// ErrNoPeer when no peer had it.
	Blob(ctx context.Context, registry, repo string, d digest.Digest, everyone bool, try func(*upstream.Blob) error) error
	// Stored tells the tier that blob d is now in this node's store, so
	// that the owners below this node can take a copy (each owner asks the
	// one above it: a blob pulled anywhere ends up on all R owners).
	Stored(registry, repo string, d digest.Digest)
	// Manifest is Blob for a manifest by digest.
	Manifest(ctx context.Context, registry, repo string, d digest.Digest, everyone bool, try func(upstream.Manifest) error) error
	// Tag asks the ready peers for the manifest they hold for a tag, and
	// hands the answers to try, the most recently confirmed first.
	Tag(ctx context.Context, registry, repo, tag string, try func(m upstream.Manifest, confirmed time.Time) error) error
}

// ErrNoPeer is returned by a Peers method when no peer gave an answer
// that was accepted.
var ErrNoPeer = errors.New("no peer holds it")

// ReasonPeer is the stale reason of a tag this node never cached, resolved
// from a peer's cache while upstream is unavailable.
const ReasonPeer = "peer"

type fromPeerKey struct{}

// FromPeer marks ctx as a request from another lifeboat: what it starts
// (a download, a manifest fetch) never asks peers in turn, so two nodes
// never wait on each other.
func FromPeer(ctx context.Context) context.Context {
	return context.WithValue(ctx, fromPeerKey{}, true)
}

// peersAllowed reports whether a request on ctx may ask peers.
func (p *Proxy) peersAllowed(ctx context.Context) bool {
	return p.peers != nil && ctx.Value(fromPeerKey{}) == nil
}

// PeerView is the proxy as the peer API sees it: besides answering as
// the proxy does, it reads the cache alone, with no other source asked. It
// is a view of its own so that Proxy keeps only what clients ask.
type PeerView struct{ *Proxy }

// ForPeers is p's view for the peer API.
func ForPeers(p *Proxy) PeerView { return PeerView{p} }

// UpstreamDown reports whether registry's circuit breaker is open. The peer
// API then serves only what is cached, even for digests this node owns.
func (v PeerView) UpstreamDown(registry string) bool {
	p := v.Proxy
	m, err := p.mirror(registry)
	return err != nil || m.Client.CircuitOpen()
}

// CachedBlob returns blob d if the store holds it, with no other source
// asked; cache.ErrNotFound otherwise.
func (v PeerView) CachedBlob(d digest.Digest) (*Blob, error) {
	p := v.Proxy
	b, err := p.openCached(d)
	if err == nil && b == nil {
		err = cache.ErrNotFound
	}
	return b, err
}

// CachedManifest returns manifest d if the store holds it, verified.
func (v PeerView) CachedManifest(d digest.Digest) (*Manifest, error) {
	p := v.Proxy
	cm, err := p.manifest(d)
	if err != nil {
		return nil, err
	}
	return &Manifest{Digest: d, MediaType: cm.MediaType, Body: cm.Body, Source: Hit}, nil
}

// CachedTag returns the manifest the store holds for a tag of registry/repo
// and when upstream last confirmed it; cache.ErrNotFound for the tags of a
// private repository under PrivateVerify (tagsShared).
func (v PeerView) CachedTag(registry, repo, tag string) (*Manifest, time.Time, error) {
	p := v.Proxy
	m, err := p.mirror(registry)
	if err != nil {
		return nil, time.Time{}, err
	}
	repo = m.Client.RepoPath(repo)
	if !p.tagsShared(m, repo) {
		return nil, time.Time{}, fmt.Errorf("%s/%s: a private repository under privateContent verify: %w", m.name, repo, cache.ErrNotFound)
	}
	t, err := p.store.GetTag(cache.TagKey{Registry: m.name, Repo: repo, Tag: tag})
	if err != nil {
		return nil, time.Time{}, err
	}
	cm, err := v.CachedManifest(t.Digest)
	return cm, t.Confirmed, err
}

// SharedWithPeers reports whether repo's manifests and tags may be given
// to other nodes. Under PrivateVerify, a repository upstream refused
// anonymously (or not known to be public) is not: its clients must show
// their own credentials, which a node asking for them cannot do for its
// clients. Blobs are shared like the rest: a blob's digest is a
// capability (SECURITY.md).
func (v PeerView) SharedWithPeers(registry, repo string) bool {
	p := v.Proxy
	m, err := p.mirror(registry)
	return err == nil && p.tagsShared(m, m.Client.RepoPath(repo))
}

func (p *Proxy) tagsShared(m *mirror, repo string) bool {
	if m.PrivateContent != PrivateVerify {
		return true
	}
	rec, err := p.repoAccess(m.name, repo)
	return err == nil && !rec.Private
}

// blobFromPeers fills f from peers: the owners ranked above this node
// while upstream is healthy (requests only ever go up the ranking, which
// every node agrees on, so two nodes never wait on each other), and every
// ready peer in an outage, except for a fill a peer started. done says the
// fill is over; everyone, whether every peer was asked.
func (p *Proxy) blobFromPeers(ctx context.Context, f *fill, m *mirror, repo string) (done, everyone bool) {
	if p.peers == nil {
		return false, false
	}
	everyone = m.Client.CircuitOpen() && !f.fromPeer
	err := p.peers.Blob(ctx, m.name, repo, f.digest, everyone, func(b *upstream.Blob) error {
		return p.fillFromPeer(ctx, f, m, repo, b)
	})
	return err == nil, everyone // on an error upstream is next, or in an outage its error is the answer
}

// blobAfterUpstream asks every peer, once upstream failed with err, if
// upstream is unavailable and they were not all asked already. It returns
// the fill's outcome: nil when a peer's answer was stored.
func (p *Proxy) blobAfterUpstream(ctx context.Context, f *fill, m *mirror, repo string, askedAll bool, err error) error {
	var ue *upstream.Error
	if p.peers == nil || f.fromPeer || askedAll || !errors.As(err, &ue) || !ue.Unavailable() || ctx.Err() != nil {
		return err
	}
	perr := p.peers.Blob(ctx, m.name, repo, f.digest, true, func(b *upstream.Blob) error {
		return p.fillFromPeer(ctx, f, m, repo, b)
	})
	if perr != nil {
		return err
	}
	return nil
}

// fillFromPeer stores one peer's answer for f, and publishes it to f's
// readers only once its bytes matched the digest: a peer cut off
// mid-stream, or sending wrong bytes, costs its clients nothing but time,
// and the next source starts from a clean ingest.
func (p *Proxy) fillFromPeer(ctx context.Context, f *fill, m *mirror, repo string, body *upstream.Blob) error {
	defer body.Close()
	b, claim, w, rf, err := p.ingestFor(f, m, repo, body.Size)
	if err != nil {
		return err
	}
	defer claim.done()
	n, err := io.Copy(w, io.LimitReader(body, b.limit+1))
	claim.wrote(n)
	switch {
	case err != nil:
	case n > b.limit:
		err = b.exceeded(f.digest)
	default:
		err = w.Commit()
	}
	if err != nil {
		w.Abort()
		rf.Close()
		if errors.Is(err, cache.ErrDigestMismatch) || errors.Is(err, cache.ErrSizeMismatch) {
			p.metrics.digestMismatch.WithLabelValues(m.name, "peer_blob").Inc()
		}
		return err
	}
	f.start(n, rf)
	f.progress(n)
	return nil
}

// manifestFromSources fetches manifest d of repo: from the owners ranked
// above this node first, then upstream, then, while upstream is
// unavailable, from every peer. usePeers is false for a fetch a peer
// asked for.
func (p *Proxy) manifestFromSources(ctx context.Context, m *mirror, repo string, d digest.Digest, usePeers bool) (*Manifest, error) {
	usePeers = usePeers && p.peers != nil
	fromPeers := func(everyone bool) *Manifest {
		var got *Manifest
		_ = p.peers.Manifest(ctx, m.name, repo, d, everyone, func(um upstream.Manifest) error {
			fm, err := p.acceptManifest(m, repo, d.String(), d, um)
			got = fm
			return err
		})
		return got
	}
	down := m.Client.CircuitOpen()
	if usePeers {
		if fm := fromPeers(down); fm != nil {
			return fm, nil
		}
	}
	fm, err := p.fetchManifest(ctx, m, repo, d.String(), d)
	var ue *upstream.Error
	if err != nil && usePeers && !down && errors.As(err, &ue) && ue.Unavailable() && ctx.Err() == nil {
		if fm := fromPeers(true); fm != nil {
			return fm, nil
		}
	}
	return fm, err
}

// tagFromPeers answers a tag this node holds no usable manifest for, when
// upstream failed with err: the peers' cached answers, the most recently
// confirmed first, each verified against its digest. The answer is stored
// (the tag with the peer's confirmation time, so MaxStaleness still
// applies) and served stale, reason peer.
func (p *Proxy) tagFromPeers(ctx context.Context, m *mirror, key cache.TagKey, err error) (*Manifest, error) {
	var ue *upstream.Error
	if !p.peersAllowed(ctx) || !errors.As(err, &ue) || !ue.Unavailable() || ctx.Err() != nil {
		return nil, err
	}
	var got *Manifest
	perr := p.peers.Tag(ctx, m.name, key.Repo, key.Tag, func(um upstream.Manifest, confirmed time.Time) error {
		if m.MaxStaleness > 0 && p.now().Sub(confirmed) > m.MaxStaleness {
			return fmt.Errorf("confirmed %s: older than the maximum staleness", confirmed)
		}
		want, derr := digest.Parse(um.Digest)
		if derr != nil {
			return derr
		}
		fm, aerr := p.acceptManifest(m, key.Repo, key.Tag, want, um)
		if aerr != nil {
			return aerr
		}
		if terr := p.store.PutTag(key, cache.Tag{Digest: fm.Digest, MediaType: fm.MediaType, Confirmed: confirmed}); terr != nil {
			return terr
		}
		got = fm
		return nil
	})
	if perr != nil || got == nil {
		return nil, err
	}
	p.metrics.stale.WithLabelValues(m.name, ReasonPeer).Inc()
	p.log.Warn("serving stale content: upstream unavailable, tag resolved from a peer's cache", "registry", m.name,
		"repository", key.Repo, "reference", key.Tag, "digest", got.Digest, "reason", ue.Reason, "error", ue.Err)
	got.Source = Stale
	return got, nil
}
