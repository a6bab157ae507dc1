package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrBusy is the cause of an unavailable answer given because every
// upstream slot of the registry stayed taken for the request's whole
// budget. It comes wrapped in an *upstream.Error (reason timeout), so the
// registry answers 503 and containerd goes to the registry itself, and a
// cached tag is served stale.
var ErrBusy = errors.New("too many upstream requests to this registry in progress")

// errAbandoned ends a download that was still waiting for a slot when its
// last client left; errYielded one that gave its slot up, with no client
// left, to a download somebody waits for. Neither keeps anything; the next
// request starts the download again.
var (
	errAbandoned = errors.New("download abandoned: its clients left before it got a slot")
	errYielded   = errors.New("download cancelled: no client left, and its slot was needed")
)

func busy(registry, what string, waited time.Duration) error {
	return &upstream.Error{Registry: registry, Reason: upstream.ReasonTimeout,
		Err: fmt.Errorf("%s: no upstream slot freed within %s: %w", what, waited.Round(time.Millisecond), ErrBusy)}
}

// fillSlots schedules one registry's blob downloads: at most limit run at
// once, and the slots go to downloads somebody is waiting for.
//
// A download belongs to no client: once running, it goes on when the
// client that started it leaves, so that the next pull is a hit. But a
// download nobody waits for must never keep one somebody does waiting
// (200 pulls whose clients left after 0.3s used to hold a normal pull up
// for a minute). So:
//
//   - a download waits in the queue only while a client waits for it:
//     when its last client leaves, it gives up (errAbandoned) and is
//     forgotten; the next request starts it again;
//   - free slots go to the queued downloads in the order they asked;
//   - while a download is queued, a running one that no client reads any
//     more yields its slot to it (errYielded; the least advanced one
//     first): it is cancelled and nothing partial is kept (its bytes are
//     the price of letting a waiting client in). A running download
//     nobody reads and that blocks nobody finishes;
//   - a client waits for its download to get a slot at most its request
//     budget (Timeouts().Request, see Proxy.awaitSlot), then is answered
//     unavailable (ErrBusy) and leaves: a miss never hangs.
//
// So the slots held by downloads without clients are lent, not owned, and
// a client's wait depends only on the downloads other waiting clients
// want, never on the ones clients gave up on. A fill closed to new clients
// by abandoning or yielding is replaced by a new fill on the next request.
type fillSlots struct {
	limit  int
	queued prometheus.Gauge

	mu      sync.Mutex
	running map[*fill]*slot
	queue   []*slotWait
}

type slot struct {
	cancel   context.CancelCauseFunc // the download's
	yielding bool                    // cancelled for a queued download, not yet released
}

type slotWait struct {
	f      *fill
	cancel context.CancelCauseFunc
	done   chan error // receives nil (granted) or errAbandoned, once
}

func newFillSlots(limit int, queued prometheus.Gauge) *fillSlots {
	return &fillSlots{limit: max(limit, 1), queued: queued, running: map[*fill]*slot{}}
}

// acquire waits for a slot for f, whose download cancel stops (to yield).
// It returns nil once f holds a slot (release it), errAbandoned when f's
// clients all left first, or ctx's error.
func (s *fillSlots) acquire(ctx context.Context, f *fill, cancel context.CancelCauseFunc) error {
	w := &slotWait{f: f, cancel: cancel, done: make(chan error, 1)}
	s.mu.Lock()
	s.queue = append(s.queue, w)
	s.queued.Inc()
	s.rebalanceLocked()
	s.mu.Unlock()
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.Index(s.queue, w); i >= 0 {
		s.queue = slices.Delete(s.queue, i, i+1)
		s.queued.Dec()
		return ctx.Err()
	}
	return <-w.done // decided meanwhile
}

// release gives f's slot to the next download.
func (s *fillSlots) release(f *fill) {
	s.mu.Lock()
	delete(s.running, f)
	s.rebalanceLocked()
	s.mu.Unlock()
}

// rebalance applies the policy after a client left a download.
func (s *fillSlots) rebalance() {
	s.mu.Lock()
	s.rebalanceLocked()
	s.mu.Unlock()
}

func (s *fillSlots) rebalanceLocked() {
	// Queued downloads nobody waits for any more give up.
	keep := s.queue[:0]
	for _, w := range s.queue {
		if w.f.closeIfIdle() {
			s.queued.Dec()
			w.done <- errAbandoned
			continue
		}
		keep = append(keep, w)
	}
	clear(s.queue[len(keep):])
	s.queue = keep
	// Free slots go in order of arrival.
	for len(s.queue) > 0 && len(s.running) < s.limit {
		w := s.queue[0]
		s.queue = slices.Delete(s.queue, 0, 1)
		s.queued.Dec()
		s.running[w.f] = &slot{cancel: w.cancel}
		w.done <- nil
	}
	// Still someone queued: running downloads nobody reads yield, one per
	// queued download (minus those already yielding), least advanced first.
	need := len(s.queue)
	var idle []*fill
	for f, sl := range s.running {
		if sl.yielding {
			need--
		} else if f.idle() {
			idle = append(idle, f)
		}
	}
	if need <= 0 || len(idle) == 0 {
		return
	}
	slices.SortFunc(idle, func(a, b *fill) int { return cmp.Compare(a.progressed(), b.progressed()) })
	for _, f := range idle {
		if need == 0 {
			break
		}
		if f.closeIfIdle() {
			sl := s.running[f]
			sl.yielding = true
			sl.cancel(errYielded)
			need--
		}
	}
}

// awaitSlot waits until f holds a download slot, at most the request
// budget of f's registry and as long as ctx lasts.
func (p *Proxy) awaitSlot(ctx context.Context, f *fill) error {
	select {
	case <-f.slotted:
		return nil
	default:
	}
	m, err := p.mirror(f.registry)
	if err != nil {
		return err
	}
	budget := m.Client.Timeouts().Request
	timer := time.NewTimer(budget)
	defer timer.Stop()
	select {
	case <-f.slotted:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
	}
	select {
	case <-f.slotted: // at the same moment
		return nil
	default:
	}
	p.metrics.busy.WithLabelValues(m.name, "blob").Inc()
	return busy(m.name, "blob "+f.digest.String(), budget)
}

// requestSlot waits for one of m's slots for upstream requests other than
// blob downloads, as long as ctx lasts (callers give it their budget),
// and returns its release; or an unavailable error wrapping ErrBusy, which
// the caller counts once per answer it spoils. Every such request takes one: shared manifest
// fetches (flights.go), tag revalidations (gateRevalidation) and blob
// HEADs (BlobHead) and tag lists (Tags).
func (p *Proxy) requestSlot(ctx context.Context, m *mirror, what string) (leave func(), err error) {
	select {
	case m.requests <- struct{}{}:
		return func() { <-m.requests }, nil
	default:
	}
	start := time.Now()
	select {
	case m.requests <- struct{}{}:
		return func() { <-m.requests }, nil
	case <-ctx.Done():
		return nil, busy(m.name, what, time.Since(start))
	}
}

// gateRevalidation runs one tag revalidation HEAD within its registry's
// request slots and its revalidation budget (slot wait included). key is
// the tag's cache.TagKey, registry/repo:tag; a registry name holds no "/".
func (p *Proxy) gateRevalidation(ctx context.Context, key string, run func(context.Context) (string, error)) (string, error) {
	name, _, _ := strings.Cut(key, "/")
	m, err := p.mirror(name)
	if err != nil {
		return run(ctx) // not a key this proxy made: nothing to bound it by
	}
	ctx, cancel := context.WithTimeout(ctx, m.Client.Timeouts().Revalidate)
	defer cancel()
	leave, err := p.requestSlot(ctx, m, "revalidate "+key)
	if err != nil {
		p.metrics.busy.WithLabelValues(m.name, "request").Inc()
		return "", err
	}
	defer leave()
	return run(ctx)
}
