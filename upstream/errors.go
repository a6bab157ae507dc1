package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Reasons an upstream call failed, as used in metrics and logs.
const (
	ReasonRefused         = "refused"
	ReasonDNS             = "dns"
	ReasonTLS             = "tls"
	ReasonTimeout         = "timeout"
	ReasonNetwork         = "network"
	Reason5xx             = "5xx"
	Reason429             = "429"
	ReasonAuthUnavailable = "auth-unavailable"
	ReasonCircuitOpen     = "circuit-open"
	ReasonBadResponse     = "bad-response" // bytes that do not match their digest, not a manifest, too large
	ReasonNotFound        = "not-found"
	ReasonDenied          = "denied"
	ReasonOther           = "other" // any other status, or a local failure before the call
)

// Reasons is every Reason* value: the closed set of a reason label.
func Reasons() []string {
	return []string{
		ReasonRefused, ReasonDNS, ReasonTLS, ReasonTimeout, ReasonNetwork, Reason5xx, Reason429,
		ReasonAuthUnavailable, ReasonCircuitOpen, ReasonBadResponse, ReasonNotFound, ReasonDenied, ReasonOther,
	}
}

// Error is a failed upstream call, classified: the one value metrics, logs
// and the serve-stale policy read.
type Error struct {
	Registry string
	// Status is the HTTP status upstream (or its token service) answered
	// with, 0 when no answer came.
	Status int
	// Reason classifies the failure (Reason* constants).
	Reason string
	// RetryAfter is upstream's Retry-After, if it sent one.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	return fmt.Sprintf("upstream %s: %s: %v", e.Registry, e.Reason, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Unavailable reports whether upstream failed to give a usable answer
// (refused, DNS, TLS, timeout, 5xx, 429, token service down, a bad or
// unexpected response), as opposed to an answer about the content (404,
// 401, 403). Cached content may be served stale only in the first case.
func (e *Error) Unavailable() bool {
	return e.Reason != ReasonNotFound && e.Reason != ReasonDenied
}

// statusError classifies a non-2xx answer from the registry itself.
func statusError(registry string, resp *http.Response) *Error {
	e := &Error{Registry: registry, Status: resp.StatusCode, Err: fmt.Errorf("%s %s: %s", resp.Request.Method, resp.Request.URL.Path, resp.Status)}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		e.Reason = ReasonNotFound
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		e.Reason = ReasonDenied
	case resp.StatusCode == http.StatusTooManyRequests:
		e.Reason = Reason429
		e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"))
	case resp.StatusCode >= 500:
		e.Reason = Reason5xx
	default:
		e.Reason = ReasonOther
	}
	return e
}

func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// classify turns any error from an upstream call into an *Error.
// registryCall tells the registry's own API URLs from others: a failure
// talking to any other URL during a call is the token service's.
func classify(registry string, registryCall func(*url.URL) bool, err error) *Error {
	var ue *Error
	if errors.As(err, &ue) {
		return ue
	}
	e := &Error{Registry: registry, Err: err}
	authCall := false
	var te *transport.Error
	var uerr *url.Error
	ping404 := false
	switch {
	case errors.As(err, &te):
		e.Status = te.StatusCode
		authCall = te.Request != nil && !registryCall(te.Request.URL)
		ping404 = te.StatusCode == http.StatusNotFound && te.Request != nil && strings.HasSuffix(te.Request.URL.Path, "/v2/")
	case errors.As(err, &uerr):
		if u, perr := url.Parse(uerr.URL); perr == nil {
			authCall = !registryCall(u)
		}
	}
	switch {
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		e.Reason = ReasonDenied
	case authCall:
		e.Reason = ReasonAuthUnavailable
	case ping404:
		e.Reason = ReasonBadResponse // no registry API there: says nothing of the content
	case e.Status == http.StatusNotFound:
		e.Reason = ReasonNotFound
	case e.Status == http.StatusTooManyRequests:
		e.Reason = Reason429
	case e.Status >= 500:
		e.Reason = Reason5xx
	case e.Status != 0:
		e.Reason = ReasonOther
	default:
		e.Reason = networkReason(err)
	}
	return e
}

func networkReason(err error) string {
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recordErr tls.RecordHeaderError
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return ReasonTimeout
	case errors.As(err, &dnsErr):
		return ReasonDNS
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr), errors.As(err, &recordErr):
		return ReasonTLS
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReasonRefused
	}
	return ReasonNetwork
}
