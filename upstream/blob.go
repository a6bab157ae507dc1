package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// ErrStalled is the cause of a download abandoned for making no progress.
var ErrStalled = errors.New("upstream body stalled")

// Blob is a blob download in progress. Read enforces the stall limit (no
// bytes for Timeouts.BodyStall ends the download) and returns *Error for
// upstream's failures, which also count against the circuit breaker. The
// stall clock runs only inside Read: time the caller spends elsewhere
// (writing to a slow disk) is not upstream's.
type Blob struct {
	// Size is the size upstream announced, -1 if it did not.
	Size int64

	c       *Client
	ctx     context.Context // the caller's: its end is not upstream's fault
	cancel  context.CancelFunc
	body    io.ReadCloser
	timer   *time.Timer
	stalled atomic.Bool
}

// GetBlob starts a blob download. The caller reads and closes it.
func (c *Client) GetBlob(ctx context.Context, repo, dgst string) (*Blob, error) {
	rctx, cancel := context.WithCancel(ctx)
	resp, err := c.do(rctx, repo, http.MethodGet, c.url(repo, "blobs", dgst), nil)
	if err != nil {
		cancel()
		return nil, err
	}
	b := &Blob{Size: resp.ContentLength, c: c, ctx: ctx, cancel: cancel, body: resp.Body}
	b.timer = time.AfterFunc(c.cfg.Timeouts.BodyStall, func() { b.stalled.Store(true); cancel() })
	b.timer.Stop()
	return b, nil
}

func (b *Blob) Read(p []byte) (int, error) {
	b.timer.Reset(b.c.cfg.Timeouts.BodyStall)
	n, err := b.body.Read(p)
	b.timer.Stop()
	if err == nil || err == io.EOF {
		return n, err
	}
	ue := b.c.classify(err)
	switch {
	case b.stalled.Load():
		ue = &Error{Registry: b.c.cfg.Name, Reason: ReasonTimeout, Err: fmt.Errorf("%w: no data for %s: %w", ErrStalled, b.c.cfg.Timeouts.BodyStall, err)}
		b.c.breaker.failure(ue.Reason, 0, false)
	case b.ctx.Err() != nil:
		// The caller's own limit or shutdown, not upstream's fault.
	default:
		b.c.breaker.failure(ue.Reason, 0, false)
	}
	return n, ue
}

// Close ends the download.
func (b *Blob) Close() error {
	b.timer.Stop()
	b.cancel()
	return b.body.Close()
}
