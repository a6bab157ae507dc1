package peers

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/lifeboat-dev/lifeboat/proxy"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/opencontainers/go-digest"
)

// ConfirmedHeader carries, on a peer's answer for a tag, when upstream last
// confirmed the tag to that peer (RFC 3339).
const ConfirmedHeader = "X-Lifeboat-Confirmed"

// Blob asks d's owners one after the other (a dead or slow one costs its
// dial timeout or first-byte budget, then its breaker opens), and with
// everyone the other ready peers, FanOut at a time, the first to answer
// winning. Each answer goes to try, which verifies and stores it.
func (c *Cluster) Blob(ctx context.Context, registry, repo string, d digest.Digest, everyone bool, try func(*upstream.Blob) error) error {
	get := func(ctx context.Context, cl *upstream.Client) (*upstream.Blob, error) {
		return cl.GetBlob(ctx, peerRepo(registry, repo), d.String())
	}
	accept := func(b *upstream.Blob) error {
		err := try(b)
		if err == nil {
			c.metrics.received.Add(float64(max(b.Size, 0)))
		}
		return err
	}
	discard := func(b *upstream.Blob) { b.Close() }
	return askDigest(c, ctx, "blob", d, everyone, get, accept, discard)
}

// Manifest is Blob for a manifest by digest.
func (c *Cluster) Manifest(ctx context.Context, registry, repo string, d digest.Digest, everyone bool, try func(upstream.Manifest) error) error {
	get := func(ctx context.Context, cl *upstream.Client) (upstream.Manifest, error) {
		return cl.GetManifest(ctx, peerRepo(registry, repo), d.String())
	}
	accept := func(m upstream.Manifest) error {
		err := try(m)
		if err == nil {
			c.metrics.received.Add(float64(len(m.Body)))
		}
		return err
	}
	return askDigest(c, ctx, "manifest", d, everyone, get, accept, func(upstream.Manifest) {})
}

// askDigest asks d's owners in turn, then (everyone) the rest in parallel
// batches of FanOut.
func askDigest[T any](c *Cluster, ctx context.Context, kind string, d digest.Digest, everyone bool,
	get func(context.Context, *upstream.Client) (T, error), accept func(T) error, discard func(T)) error {
	owners, rest := c.others(d.String())
	for _, addr := range owners {
		if askOne(c, ctx, kind, addr, get, accept) {
			return nil
		}
	}
	if !everyone {
		return proxy.ErrNoPeer
	}
	for batch := range slices.Chunk(rest, c.cfg.FanOut) {
		if ok := askRace(c, ctx, kind, batch, get, accept, discard); ok {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return proxy.ErrNoPeer
}

// askOne asks one peer, unless its breaker is open, and hands its answer
// to accept; it reports whether accept took it.
func askOne[T any](c *Cluster, ctx context.Context, kind, addr string, get func(context.Context, *upstream.Client) (T, error), accept func(T) error) bool {
	cl, ok := c.usable(kind, addr)
	if !ok {
		return false
	}
	v, err := get(ctx, cl)
	if err != nil {
		c.failed(kind, addr, err)
		return false
	}
	return c.accepted(kind, addr, accept(v))
}

// askRace asks every peer of batch at once. The first to answer is handed
// to accept and the others are cancelled; if accept refuses it, those
// others are asked again one at a time.
func askRace[T any](c *Cluster, ctx context.Context, kind string, batch []string, get func(context.Context, *upstream.Client) (T, error), accept func(T) error, discard func(T)) bool {
	type answer struct {
		addr string
		v    T
		err  error
	}
	answers := make(chan answer, len(batch))
	cancels := map[string]context.CancelFunc{}
	var wg sync.WaitGroup
	for _, addr := range batch {
		cl, ok := c.usable(kind, addr)
		if !ok {
			continue
		}
		actx, cancel := context.WithCancel(ctx)
		cancels[addr] = cancel
		wg.Go(func() {
			v, err := get(actx, cl)
			answers <- answer{addr, v, err}
		})
	}
	defer func() {
		for _, cancel := range cancels {
			cancel()
		}
	}()
	go func() { wg.Wait(); close(answers) }()
	var winner *answer
	var retry []string
	for a := range answers {
		switch {
		case a.err != nil && winner != nil && errors.Is(a.err, context.Canceled):
			retry = append(retry, a.addr) // cancelled for the winner
		case a.err != nil:
			c.failed(kind, a.addr, a.err)
		case winner == nil:
			winner = &a
			for addr, cancel := range cancels {
				if addr != a.addr {
					cancel()
				}
			}
		default:
			discard(a.v)
			retry = append(retry, a.addr)
		}
	}
	if winner == nil {
		return false
	}
	if c.accepted(kind, winner.addr, accept(winner.v)) {
		return true
	}
	for _, addr := range retry {
		if askOne(c, ctx, kind, addr, get, accept) {
			return true
		}
	}
	return false
}

// usable returns the client of a peer whose breaker is closed.
func (c *Cluster) usable(kind, addr string) (*upstream.Client, bool) {
	cl, err := c.client(addr)
	if err != nil {
		c.metrics.requests.WithLabelValues(kind, "error").Inc()
		return nil, false
	}
	if cl.CircuitOpen() {
		c.metrics.requests.WithLabelValues(kind, "circuit_open").Inc()
		return nil, false
	}
	return cl, true
}

// failed counts a peer's failure to answer.
func (c *Cluster) failed(kind, addr string, err error) {
	var ue *upstream.Error
	result := "error"
	switch {
	case errors.As(err, &ue) && ue.Reason == upstream.ReasonNotFound:
		result = "not_found"
	case errors.As(err, &ue) && ue.Reason == upstream.ReasonDenied:
		result = "denied"
		c.log.Warn("a peer refused this node's token: check --peer-token-file on both", "peer", addr)
	case errors.Is(err, context.Canceled):
		result = "cancelled"
	default:
		c.log.Info("peer request failed", "peer", addr, "kind", kind, "error", err)
	}
	c.metrics.requests.WithLabelValues(kind, result).Inc()
}

// accepted counts the fate of a peer's answer.
func (c *Cluster) accepted(kind, addr string, err error) bool {
	if err != nil {
		c.metrics.requests.WithLabelValues(kind, "rejected").Inc()
		c.log.Warn("discarded a peer's answer", "peer", addr, "kind", kind, "error", err)
		return false
	}
	c.metrics.requests.WithLabelValues(kind, "ok").Inc()
	return true
}

// Tag asks up to DefaultTagFanOut ready peers at once for the manifest
// their cache holds for a tag, and hands the answers to try, the most
// recently confirmed first, until try takes one.
func (c *Cluster) Tag(ctx context.Context, registry, repo, tag string, try func(m upstream.Manifest, confirmed time.Time) error) error {
	owners, rest := c.others(registry + "/" + repo + ":" + tag)
	addrs := append(owners, rest...)
	addrs = addrs[:min(len(addrs), DefaultTagFanOut)]
	type answer struct {
		addr      string
		m         upstream.Manifest
		confirmed time.Time
	}
	var (
		mu  sync.Mutex
		got []answer
		wg  sync.WaitGroup
	)
	for _, addr := range addrs {
		cl, ok := c.usable("tag", addr)
		if !ok {
			continue
		}
		wg.Go(func() {
			m, err := cl.GetManifest(ctx, peerRepo(registry, repo), tag)
			if err != nil {
				c.failed("tag", addr, err)
				return
			}
			confirmed, err := time.Parse(time.RFC3339Nano, m.Header.Get(ConfirmedHeader))
			if err != nil {
				c.accepted("tag", addr, errors.New("no confirmation time"))
				return
			}
			mu.Lock()
			got = append(got, answer{addr, m, confirmed})
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.SortFunc(got, func(a, b answer) int { return cmp.Compare(b.confirmed.UnixNano(), a.confirmed.UnixNano()) })
	for _, a := range got {
		if c.accepted("tag", a.addr, try(a.m, a.confirmed)) {
			c.metrics.received.Add(float64(len(a.m.Body)))
			return nil
		}
	}
	return proxy.ErrNoPeer
}

// replicateTimeout bounds one replication request: the owner below only
// starts its copy within it (its download runs on its own).
const replicateTimeout = 10 * time.Second

// Stored asks the owner ranked just below this node, if this node is one
// of d's owners, to take a copy: a HEAD on its peer API makes it fetch d
// from the owners above it (this node among them), and once its copy is
// stored it asks the next one. One request per blob and owner, in the
// background, at most maxReplications at once (more are dropped: the next
// pull of the blob on that owner fetches it anyway).
func (c *Cluster) Stored(registry, repo string, d digest.Digest) {
	all := rank(c.members.snapshot(), d.String())
	n := min(len(all), c.cfg.Replicas)
	i := slices.Index(all[:n], c.cfg.Self)
	if i < 0 || i+1 >= n {
		return
	}
	next := all[i+1]
	select {
	case c.replications <- struct{}{}:
	default:
		c.metrics.requests.WithLabelValues("replicate", "dropped").Inc()
		return
	}
	go func() {
		defer func() { <-c.replications }()
		cl, ok := c.usable("replicate", next)
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), replicateTimeout)
		defer cancel()
		if _, err := cl.HeadBlob(ctx, peerRepo(registry, repo), d.String()); err != nil {
			c.failed("replicate", next, err)
			return
		}
		c.metrics.requests.WithLabelValues("replicate", "ok").Inc()
	}()
}
