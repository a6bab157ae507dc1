package upstream

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestInjectedDialerKeepsTheDialTimeout: Options.DialContext replaces the
// TCP dialer, not its bound: a dialer that never connects is given up on
// after exactly Timeouts.Dial, and the failure is a timeout.
func TestInjectedDialerKeepsTheDialTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const dial = 2 * time.Second
		var dials atomic.Int32
		c, err := New(Config{Name: "registry.test", URL: "http://registry.test", Timeouts: Timeouts{Dial: dial, Request: time.Minute}},
			Options{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				dials.Add(1)
				<-ctx.Done()
				return nil, ctx.Err()
			}})
		require.NoError(t, err)

		start := time.Now()
		_, err = c.HeadManifest(t.Context(), "app", "v1")
		var ue *Error
		require.ErrorAs(t, err, &ue)
		assert.Equal(t, ReasonTimeout, ue.Reason)
		assert.Equal(t, dial, time.Since(start), "given up on after the dial timeout")
		assert.Positive(t, dials.Load(), "the injected dialer was used")
	})
}
