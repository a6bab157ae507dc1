package upstream

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func allowed(b *breaker) bool { ok, _ := b.allow(); return ok }

func TestBreaker(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var changes []bool
		b := newBreaker(BreakerConfig{Failures: 3, Backoff: time.Second, MaxBackoff: 3 * time.Second}, time.Now,
			func(open bool, _ string) { changes = append(changes, open) })

		b.failure(ReasonTimeout, 0, false)
		b.success()
		b.failure(ReasonTimeout, 0, false)
		b.failure(ReasonTimeout, 0, false)
		assert.True(t, allowed(b), "failures must be consecutive to open the circuit")
		b.failure(ReasonTimeout, 0, false)
		assert.False(t, allowed(b), "three consecutive failures open it")
		assert.Equal(t, []bool{true}, changes)

		// Calls in flight when it opened fail too: they do not extend it.
		for range 10 {
			b.failure(ReasonTimeout, 0, false)
		}
		time.Sleep(time.Second)
		ok, probe := b.allow()
		require.True(t, ok, "after the backoff one probe goes through")
		assert.True(t, probe)
		assert.False(t, allowed(b), "only one probe at a time")
		b.release(false)
		assert.False(t, allowed(b), "a call that is not the probe cannot end the probe")
		b.failure(ReasonTimeout, 0, true)
		time.Sleep(time.Second)
		assert.False(t, allowed(b), "a failed probe doubles the backoff")
		time.Sleep(time.Second)
		ok, probe = b.allow()
		require.True(t, ok)
		b.release(probe)
		ok, probe = b.allow()
		assert.True(t, ok, "a probe whose client left frees the slot")
		b.failure(ReasonTimeout, 0, probe)
		time.Sleep(3 * time.Second)
		assert.True(t, allowed(b), "the backoff is capped")
		b.success()
		assert.True(t, allowed(b))
		assert.True(t, allowed(b), "a successful probe closes the circuit")
		assert.Equal(t, []bool{true, false}, changes)
	})
}

func TestBreakerHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := newBreaker(BreakerConfig{Failures: 3, Backoff: time.Second, MaxBackoff: time.Minute}, time.Now, func(bool, string) {})
		b.failure(Reason429, 30*time.Second, false)
		assert.False(t, allowed(b), "a 429 with Retry-After opens the circuit at once")
		time.Sleep(29 * time.Second)
		assert.False(t, allowed(b), "upstream is not asked again before Retry-After")
		time.Sleep(time.Second)
		assert.True(t, allowed(b))
	})
}
