package upstream

import (
	"sync"
	"time"
)

// BreakerConfig tunes the per-upstream circuit breaker. Zero fields take the
// defaults.
type BreakerConfig struct {
	// Failures is how many consecutive unavailable answers open the
	// circuit. Default 3.
	Failures int
	// Backoff is how long the circuit stays open before one probe is let
	// through; it doubles after each failed probe. Default 2s.
	Backoff time.Duration
	// MaxBackoff caps Backoff (and an upstream's Retry-After). Default 1m.
	MaxBackoff time.Duration
}

// DefaultBreaker is used for zero fields of BreakerConfig.
var DefaultBreaker = BreakerConfig{Failures: 3, Backoff: 2 * time.Second, MaxBackoff: time.Minute}

func (c BreakerConfig) withDefaults() BreakerConfig {
	if c.Failures <= 0 {
		c.Failures = DefaultBreaker.Failures
	}
	if c.Backoff <= 0 {
		c.Backoff = DefaultBreaker.Backoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultBreaker.MaxBackoff
	}
	return c
}

// breaker is a circuit breaker for one upstream. Closed: calls go through.
// Open: calls fail at once until the backoff has passed; then one call at a
// time goes through as a probe, and its outcome closes the circuit or opens
// it again for twice as long.
type breaker struct {
	cfg      BreakerConfig
	now      func() time.Time
	onChange func(open bool, reason string)

	mu       sync.Mutex
	failures int
	open     bool
	until    time.Time // while open: no probe before this
	backoff  time.Duration
	probing  bool
}

func newBreaker(cfg BreakerConfig, now func() time.Time, onChange func(open bool, reason string)) *breaker {
	cfg = cfg.withDefaults()
	return &breaker{cfg: cfg, now: now, onChange: onChange, backoff: cfg.Backoff}
}

// allow reports whether a call may go upstream now, and whether it is the
// probe: a call let through while the circuit is open, whose outcome alone
// decides whether the circuit closes or backs off further.
func (b *breaker) allow() (ok, probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return true, false
	}
	if b.probing || b.now().Before(b.until) {
		return false, false
	}
	b.probing = true
	return true, true
}

// success records an answer from upstream (any answer about the content,
// 404 included).
func (b *breaker) success() {
	b.mu.Lock()
	wasOpen := b.open
	b.failures, b.open, b.probing, b.backoff = 0, false, false, b.cfg.Backoff
	b.mu.Unlock()
	if wasOpen {
		b.onChange(false, "")
	}
}

// failure records an unavailable upstream. retryAfter, if upstream sent
// one, opens the circuit at once for that long. While the circuit is open
// only the probe's failure counts: calls that were already in flight when
// it opened say nothing new.
func (b *breaker) failure(reason string, retryAfter time.Duration, probe bool) {
	b.mu.Lock()
	if b.open && !probe {
		b.mu.Unlock()
		return
	}
	b.failures++
	wasOpen := b.open
	switch {
	case b.open:
		// A failed probe: stay open, back off further.
		b.backoff = min(2*b.backoff, b.cfg.MaxBackoff)
	case retryAfter > 0 || b.failures >= b.cfg.Failures:
		b.open = true
	default:
		b.mu.Unlock()
		return
	}
	wait := max(b.backoff, min(retryAfter, b.cfg.MaxBackoff))
	b.until, b.probing = b.now().Add(wait), false
	b.mu.Unlock()
	if !wasOpen {
		b.onChange(true, reason)
	}
}

// release ends a probe whose outcome says nothing about upstream's health
// (its client went away).
func (b *breaker) release(probe bool) {
	if !probe {
		return
	}
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}

func (b *breaker) isOpen() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open
}
