package proxy

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestBreaker(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var changes []bool
		b := newBreaker(BreakerConfig{Failures: 3, Backoff: time.Second, MaxBackoff: 3 * time.Second}, time.Now,
			func(open bool, _ string) { changes = append(changes, open) })

		b.failure(ReasonTimeout, 0)
		b.success()
		b.failure(ReasonTimeout, 0)
		b.failure(ReasonTimeout, 0)
		assert.True(t, b.allow(), "failures must be consecutive to open the circuit")
		b.failure(ReasonTimeout, 0)
		assert.False(t, b.allow(), "three consecutive failures open it")
		assert.Equal(t, []bool{true}, changes)

		time.Sleep(time.Second)
		assert.True(t, b.allow(), "after the backoff one probe goes through")
		assert.False(t, b.allow(), "only one probe at a time")
		b.failure(ReasonTimeout, 0)
		time.Sleep(time.Second)
		assert.False(t, b.allow(), "a failed probe doubles the backoff")
		time.Sleep(time.Second)
		assert.True(t, b.allow())
		b.release()
		assert.True(t, b.allow(), "a probe whose client left frees the slot")
		b.failure(ReasonTimeout, 0)
		time.Sleep(3 * time.Second)
		assert.True(t, b.allow(), "the backoff is capped")
		b.success()
		assert.True(t, b.allow())
		assert.True(t, b.allow(), "a successful probe closes the circuit")
		assert.Equal(t, []bool{true, false}, changes)
	})
}

func TestBreakerHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := newBreaker(BreakerConfig{Failures: 3, Backoff: time.Second, MaxBackoff: time.Minute}, time.Now, func(bool, string) {})
		b.failure(Reason429, 30*time.Second)
		assert.False(t, b.allow(), "a 429 with Retry-After opens the circuit at once")
		time.Sleep(29 * time.Second)
		assert.False(t, b.allow(), "upstream is not asked again before Retry-After")
		time.Sleep(time.Second)
		assert.True(t, b.allow())
	})
}
