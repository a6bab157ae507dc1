package proxy

import (
	"fmt"
	"testing"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTagListIsServedStaleOnlyWhole: a remembered tag list is served stale
// during an outage; one the store kept only the first part of (upstream's
// was longer than the bound) is not, since a client would take it for the
// whole list.
func TestTagListIsServedStaleOnlyWhole(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	img := upstreamtest.RandomImage(t, 256, 1)
	e.up.Push(t, "app:v2", img)
	e.up.Push(t, "app:v1", img)
	tags, src, err := e.p.Tags(t.Context(), testRegistry, "app")
	require.NoError(t, err)
	assert.Equal(t, Miss, src)
	assert.Equal(t, []string{"v1", "v2"}, tags)

	e.up.SetMode(upstreamtest.Status503)
	tags, src, err = e.p.Tags(t.Context(), testRegistry, "app")
	require.NoError(t, err)
	assert.Equal(t, Stale, src)
	assert.Equal(t, []string{"v1", "v2"}, tags)

	long := make([]string, cache.MaxTagListTags+1)
	for i := range long {
		long[i] = fmt.Sprintf("v%06d", i)
	}
	require.NoError(t, e.store.PutTagList(testRegistry, "app", cache.TagList{Tags: long, Fetched: time.Now()}))
	_, _, err = e.p.Tags(t.Context(), testRegistry, "app")
	var ue *upstream.Error
	require.ErrorAs(t, err, &ue, "upstream's answer, not the part of the list the store kept")
	assert.True(t, ue.Unavailable())
	assert.Equal(t, 1.0, testutil.ToFloat64(e.p.metrics.stale.WithLabelValues(testRegistry, upstream.Reason5xx)), "only the whole list was served stale")
}
