package proxy

import (
	"context"
	"errors"
	"slices"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/upstream"
)

// Tags returns a repository's whole tag list, sorted: from upstream when it
// answers (and remembered), else the list last seen, marked stale. A list
// remembered only in part (longer than the store keeps) is never served:
// it is not the whole list, and a client could not tell.
func (p *Proxy) Tags(ctx context.Context, registry, repo string) ([]string, Source, error) {
	m, err := p.mirror(registry)
	if err != nil {
		return nil, "", err
	}
	repo = m.Client.RepoPath(repo)
	cached, cerr := p.store.GetTagList(m.name, repo)
	if cerr != nil && !errors.Is(cerr, cache.ErrNotFound) {
		return nil, "", cerr
	}
	budget := m.Client.Timeouts().Request
	if cerr == nil {
		budget = m.Client.Timeouts().Revalidate
	}
	uctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	var tags []string
	leave, err := p.requestSlot(uctx, m, "tags/list")
	if err == nil {
		tags, err = m.Client.ListTags(uctx, repo)
		leave()
	}
	if err != nil {
		p.upstreamFailed(m.name, repo, "tags/list", err)
		var ue *upstream.Error
		if cerr == nil && errors.As(err, &ue) && ue.Unavailable() && ctx.Err() == nil {
			if err := p.privateTags(ctx, m, repo, cached.Tags, err); err != nil {
				return nil, "", err
			}
			if cached.Truncated {
				p.log.Warn("not serving the remembered tag list stale: it is only the first part of upstream's list",
					"registry", m.name, "repository", repo, "tags_kept", len(cached.Tags), "fetched", cached.Fetched)
				return nil, "", err
			}
			p.servedStale(m.name, repo, "tags/list", ue)
			return cached.Tags, Stale, nil
		}
		return nil, "", err
	}
	slices.Sort(tags)
	tags = slices.Compact(tags)
	if err := p.store.PutTagList(m.name, repo, cache.TagList{Tags: tags, Fetched: p.now()}); err != nil {
		return nil, "", err
	}
	if err := p.privateTags(ctx, m, repo, tags, nil); err != nil {
		return nil, "", err
	}
	return tags, Miss, nil
}
