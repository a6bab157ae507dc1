package maintenance

import (
	"context"

	"github.com/lifeboat-dev/lifeboat/cache"
)

// Verify re-hashes every cached blob; with repair, damaged ones are removed
// so they are fetched again. ctx ends a long verify early.
func (s *Service) Verify(ctx context.Context, repair bool) (cache.VerifyReport, error) {
	r, err := s.store.Verify(ctx, repair)
	for _, d := range r.Damaged {
		if d.Removed {
			s.metrics.repairs.WithLabelValues("blob_removed").Inc()
		}
		s.log.Error("cached blob damaged", "digest", d.Digest, "problem", d.Problem, "removed", d.Removed)
	}
	return r, err
}

// IndexRebuilt records that the store's index was found corrupt at start
// and rebuilt from the blob files (cache.Store.RebuiltFrom).
func (s *Service) IndexRebuilt(movedAside string) {
	s.metrics.repairs.WithLabelValues("index_rebuilt").Inc()
	s.log.Error("the cache index was corrupt: moved aside and rebuilt from the blob files (blobs and manifests re-hashed and kept; cached tags lost)", "moved_to", movedAside)
}
