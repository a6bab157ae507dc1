package maintenance

import (
	"testing"

	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMetricsStartAtZero checks that the labelled counters exist at 0
// before anything happened, and that the limits the disk alert compares
// against are exposed: the cap at start, the floor in bytes after a pass.
func TestMetricsStartAtZero(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.svc.metrics
	assert.Equal(t, 2, testutil.CollectAndCount(m.prefetch))
	assert.Equal(t, 2, testutil.CollectAndCount(m.evictedBlobs))
	assert.Equal(t, 2, testutil.CollectAndCount(m.evictedBytes))
	assert.Equal(t, 2, testutil.CollectAndCount(m.repairs))
	mfs, err := e.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			if c := s.GetCounter(); c != nil {
				assert.Zero(t, c.GetValue(), "%s %v", mf.GetName(), s.GetLabel())
			}
		}
	}
	problems, err := testutil.GatherAndLint(e.reg)
	require.NoError(t, err)
	assert.Empty(t, problems)

	e.open(t, e.up.URL, upstream.BreakerConfig{}, Options{Eviction: EvictionOptions{MaxSize: 1 << 30, MinFree: 1 << 20, MinFreeFraction: 0.01}})
	m = e.svc.metrics
	assert.Equal(t, float64(1<<30), testutil.ToFloat64(m.maxSize))
	assert.Zero(t, testutil.ToFloat64(m.minFreeDisk), "known after a pass")
	r, err := e.svc.Evict(t.Context(), false)
	require.NoError(t, err)
	require.Positive(t, r.DiskSize)
	assert.Equal(t, float64(max(1<<20, int64(0.01*float64(r.DiskSize)))), testutil.ToFloat64(m.minFreeDisk))
}
