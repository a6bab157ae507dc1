package registry

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMetricsStartAtZero checks that the request series an alert or the
// dashboard reads exist at 0 before any request: a series that first
// appears at 1 is read by rate() as no change.
func TestMetricsStartAtZero(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m := newMetrics(reg)
	assert.Equal(t, len(kinds)*len(methods)+3*2*4, testutil.CollectAndCount(m.requests),
		"error for every kind × method; hit, miss, stale, aborted for manifest, blob, tags × GET, HEAD")
	assert.Equal(t, 2, testutil.CollectAndCount(m.served))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			assert.Zero(t, s.GetCounter().GetValue(), "%s %v", mf.GetName(), s.GetLabel())
		}
	}
	for _, k := range kinds {
		assert.Zero(t, testutil.ToFloat64(m.requests.WithLabelValues(string(k), "GET", "error")), k)
	}
	assert.Zero(t, testutil.ToFloat64(m.requests.WithLabelValues("blob", "HEAD", "stale")))
	assert.Equal(t, len(kinds)*len(methods)+3*2*4, testutil.CollectAndCount(m.requests), "no series was missing")
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
}
