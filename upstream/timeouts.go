package upstream

import "time"

// Timeouts bound every call to one registry. Zero fields take the defaults.
type Timeouts struct {
	// Dial bounds establishing a TCP connection. Default 3s.
	Dial time.Duration
	// TLSHandshake bounds the TLS handshake. Default 5s.
	TLSHandshake time.Duration
	// ResponseHeader bounds the wait for response headers. Default 10s.
	ResponseHeader time.Duration
	// Revalidate is the whole budget (auth included) for checking a cached
	// tag with upstream; past it the cached digest is served stale.
	// Default 1.5s.
	Revalidate time.Duration
	// Request is the whole budget for a manifest or tag list fetch that
	// has no cached answer to fall back on, and for a token exchange.
	// Default 10s.
	Request time.Duration
	// BodyStall is how long a blob download may make no progress before it
	// is abandoned. Default 30s.
	BodyStall time.Duration
}

// DefaultTimeouts are used for zero fields of Timeouts.
var DefaultTimeouts = Timeouts{
	Dial:           3 * time.Second,
	TLSHandshake:   5 * time.Second,
	ResponseHeader: 10 * time.Second,
	Revalidate:     1500 * time.Millisecond,
	Request:        10 * time.Second,
	BodyStall:      30 * time.Second,
}

func (t Timeouts) withDefaults() Timeouts {
	d := DefaultTimeouts
	for _, f := range []struct {
		dst *time.Duration
		def time.Duration
	}{
		{&t.Dial, d.Dial}, {&t.TLSHandshake, d.TLSHandshake}, {&t.ResponseHeader, d.ResponseHeader},
		{&t.Revalidate, d.Revalidate}, {&t.Request, d.Request}, {&t.BodyStall, d.BodyStall},
	} {
		if *f.dst <= 0 {
			*f.dst = f.def
		}
	}
	return t
}
