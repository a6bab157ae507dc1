package proxy

import (
	"context"
	"errors"
	"slices"

	"github.com/lifeboat-dev/lifeboat/cache"
)

// Tags returns a repository's whole tag list, sorted: from upstream when it
// answers (and remembered), else the list last seen, marked stale.
func (p *Proxy) Tags(ctx context.Context, registry, repo string) ([]string, Source, error) {
	up, err := p.upstream(registry)
	if err != nil {
		return nil, "", err
	}
	repo = up.repoPath(repo)
	cached, cerr := p.store.GetTagList(up.cfg.Name, repo)
	if cerr != nil && !errors.Is(cerr, cache.ErrNotFound) {
		return nil, "", cerr
	}
	budget := up.cfg.Timeouts.Request
	if cerr == nil {
		budget = up.cfg.Timeouts.Revalidate
	}
	uctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	tags, err := up.listTags(uctx, repo)
	if err != nil {
		p.upstreamFailed(up.cfg.Name, repo, "tags/list", err)
		var ue *UpstreamError
		if cerr == nil && errors.As(err, &ue) && ue.Unavailable() && ctx.Err() == nil {
			p.servedStale(up.cfg.Name, repo, "tags/list", ue)
			return cached.Tags, Stale, nil
		}
		return nil, "", err
	}
	slices.Sort(tags)
	tags = slices.Compact(tags)
	if err := p.store.PutTagList(up.cfg.Name, repo, cache.TagList{Tags: tags, Fetched: p.now()}); err != nil {
		return nil, "", err
	}
	return tags, Miss, nil
}
