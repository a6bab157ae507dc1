package proxy

import (
	"testing"

	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMetricsStartAtZero checks that a fresh proxy exposes every labelled
// counter of its registry at 0, before any request: a series that first
// appears at 1 is read by rate() and increase() as no change, and the
// alerts on one digest mismatch or the first stale answers never fire.
func TestMetricsStartAtZero(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for name, want := range map[string]int{
		"lifeboat_proxy_stale_responses_total":   len(upstream.Reasons()) - 1, // all but denied
		"lifeboat_proxy_digest_mismatches_total": 2,
		"lifeboat_proxy_fills_total":             8,
		"lifeboat_proxy_busy_responses_total":    2,
		"lifeboat_upstream_fetched_bytes_total":  1,
		"lifeboat_upstream_requests_total":       5,
	} {
		n, err := testutil.GatherAndCount(e.reg, name)
		require.NoError(t, err)
		assert.Equal(t, want, n, name)
	}
	mfs, err := e.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				assert.Zero(t, c.GetValue(), "%s %v", mf.GetName(), m.GetLabel())
			}
		}
	}
	assert.Equal(t, 0.0, testutil.ToFloat64(e.p.metrics.digestMismatch.WithLabelValues(testRegistry, "blob")))
	problems, err := testutil.GatherAndLint(e.reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
}
