package upstream

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMetricsStartAtZero checks that building a Client creates its
// registry's request series for every status class, and the circuit gauge,
// at 0, and leaves the rate-limit gauge out until upstream sends it (a 0
// would say the budget is spent).
func TestMetricsStartAtZero(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	for _, name := range []string{"a.test", "b.test"} {
		_, err := New(Config{Name: name, URL: "http://127.0.0.1:1"}, Options{Metrics: m})
		require.NoError(t, err)
	}
	assert.Equal(t, 10, testutil.CollectAndCount(m.requests), "2 registries × 5 status classes")
	assert.Equal(t, 2, testutil.CollectAndCount(m.circuitOpen))
	assert.Zero(t, testutil.CollectAndCount(m.rateLimit))
	for _, class := range statusClasses {
		assert.Zero(t, testutil.ToFloat64(m.requests.WithLabelValues("a.test", class)), class)
	}
	assert.Equal(t, 10, testutil.CollectAndCount(m.requests), "no series was missing")
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
}

func TestStatusClass(t *testing.T) {
	t.Parallel()
	for code, want := range map[int]string{200: "2xx", 204: "2xx", 302: "3xx", 404: "4xx", 503: "5xx", 599: "5xx", 600: "error", 999: "error", 101: "error"} {
		assert.Equal(t, want, statusClass(code), code)
	}
}
