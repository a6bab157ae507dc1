package maintenance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/proxy"
	"github.com/opencontainers/go-digest"
)

// PrefetchItem is an image to fetch ahead of need: a reference with a tag
// or digest, and for a multi-platform index the platforms wanted
// (os/arch[/variant]; default: the node's own linux/<GOARCH>).
type PrefetchItem struct {
	Ref       string   `json:"ref"`
	Platforms []string `json:"platforms,omitempty"`
}

// PrefetchResult says what one prefetch fetched.
type PrefetchResult struct {
	Ref    string        `json:"ref"`
	Digest digest.Digest `json:"digest"`
	Blobs  int           `json:"blobs"`
	Bytes  int64         `json:"bytes"`
}

// Prefetch fetches an image (for an index: the index and the children for
// the wanted platforms, not every architecture) and all its blobs into the
// cache. progress, if set, receives one line per step.
//
// Errors do not repeat the reference: callers name it once.
func (s *Service) Prefetch(ctx context.Context, item PrefetchItem, progress func(string)) (PrefetchResult, error) {
	if progress == nil {
		progress = func(string) {}
	}
	if s.proxy == nil {
		return PrefetchResult{}, errors.New("no upstreams configured for prefetch")
	}
	p := s.proxy
	named, err := reference.ParseNormalizedNamed(item.Ref)
	if err != nil {
		return PrefetchResult{}, err
	}
	registry, repo := reference.Domain(named), reference.Path(named)
	if _, err := p.Registry(registry); err != nil {
		return PrefetchResult{}, err
	}
	ref := "latest"
	if c, ok := named.(reference.Canonical); ok {
		ref = c.Digest().String()
	} else if t, ok := named.(reference.Tagged); ok {
		ref = t.Tag()
	}
	platforms := item.Platforms
	if len(platforms) == 0 {
		platforms = []string{"linux/" + runtime.GOARCH}
	}
	res := PrefetchResult{Ref: item.Ref}
	m, err := p.Manifest(proxy.ForCache(ctx), registry, repo, ref)
	if err != nil {
		return res, err
	}
	res.Digest = m.Digest
	progress(fmt.Sprintf("%s: %s %s", item.Ref, m.MediaType, m.Digest))
	images := []*proxy.Manifest{m}
	if isIndex(m.MediaType) {
		children, err := childrenFor(m.Body, platforms)
		if err != nil {
			return res, err
		}
		if len(children) == 0 {
			return res, fmt.Errorf("the index has no manifest for %s", strings.Join(platforms, ", "))
		}
		images = images[:0]
		for _, c := range children {
			cm, err := p.Manifest(proxy.ForCache(ctx), registry, repo, c.digest.String())
			if err != nil {
				return res, fmt.Errorf("%s: %w", c.platform, err)
			}
			progress(fmt.Sprintf("%s: %s manifest %s", item.Ref, c.platform, cm.Digest))
			images = append(images, cm)
		}
	}
	for _, img := range images {
		refs, _, err := cache.ParseManifest(img.Body)
		if err != nil {
			return res, err
		}
		for _, d := range refs {
			n, err := fetchBlob(ctx, p, registry, repo, d)
			if err != nil {
				return res, fmt.Errorf("blob %s: %w", d, err)
			}
			res.Blobs++
			res.Bytes += n
			progress(fmt.Sprintf("%s: blob %s (%d bytes)", item.Ref, d, n))
		}
	}
	return res, nil
}

// fetchBlob makes sure the store holds d, reading a download to its end.
func fetchBlob(ctx context.Context, p *proxy.Proxy, registry, repo string, d digest.Digest) (int64, error) {
	b, err := p.Blob(ctx, registry, repo, d, true)
	if err != nil {
		return 0, err
	}
	defer b.Content.Close()
	if b.Source == proxy.Hit {
		return b.Size, nil
	}
	return io.Copy(io.Discard, b.Content)
}

func isIndex(mediaType string) bool {
	return mediaType == "application/vnd.oci.image.index.v1+json" ||
		mediaType == "application/vnd.docker.distribution.manifest.list.v2+json"
}

type child struct {
	digest   digest.Digest
	platform string
}

// childrenFor picks an index's manifests for the wanted platforms.
func childrenFor(index []byte, platforms []string) ([]child, error) {
	var idx struct {
		Manifests []struct {
			Digest   digest.Digest `json:"digest"`
			Platform *struct {
				OS           string `json:"os"`
				Architecture string `json:"architecture"`
				Variant      string `json:"variant"`
			} `json:"platform"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(index, &idx); err != nil {
		return nil, fmt.Errorf("parse index: %w", err)
	}
	var out []child
	for _, m := range idx.Manifests {
		if m.Platform == nil {
			continue
		}
		full := m.Platform.OS + "/" + m.Platform.Architecture
		withVariant := full
		if m.Platform.Variant != "" {
			withVariant += "/" + m.Platform.Variant
		}
		if slices.Contains(platforms, full) || slices.Contains(platforms, withVariant) {
			out = append(out, child{digest: m.Digest, platform: withVariant})
		}
	}
	return out, nil
}

// PinSource is the pin source of the configured prefetch list.
const PinSource = "prefetch"

// AdminPinSource is the pin source of `lifeboat prefetch --pin`; `lifeboat
// unpin` removes those pins (the prefetch list and containerd's images are
// pinned by sources of their own and follow the config and containerd).
const AdminPinSource = "admin"

// PrefetchAndPin prefetches one image for an admin, pinning it if asked.
func (s *Service) PrefetchAndPin(ctx context.Context, item PrefetchItem, pin bool, progress func(string)) (PrefetchResult, error) {
	res, err := s.Prefetch(ctx, item, progress)
	if err == nil && pin {
		err = s.store.AddPin(AdminPinSource, cache.Pin{Ref: item.Ref, Digest: res.Digest, Pinned: s.now()})
	}
	return res, err
}

// Unpin removes an admin's pin; false if ref was not pinned by one.
func (s *Service) Unpin(ref string) (bool, error) {
	return s.store.RemovePin(AdminPinSource, ref)
}

// PrefetchAll prefetches the configured list and pins what it resolved to.
// An item that fails now (an outage) keeps the pin it had; items no longer
// listed lose theirs.
func (s *Service) PrefetchAll(ctx context.Context) error {
	old, err := s.store.Pins()
	if err != nil {
		return err
	}
	var pins []cache.Pin
	var errs []error
	for _, item := range s.prefetch {
		start := s.now()
		res, err := s.Prefetch(ctx, item, nil)
		if err != nil {
			s.metrics.prefetch.WithLabelValues("error").Inc()
			s.log.Warn("prefetch failed", "ref", item.Ref, "error", err)
			errs = append(errs, fmt.Errorf("prefetch %s: %w", item.Ref, err))
			for _, o := range old {
				if o.Source == PinSource && o.Ref == item.Ref {
					pins = append(pins, o)
				}
			}
			continue
		}
		s.metrics.prefetch.WithLabelValues("ok").Inc()
		s.log.Info("prefetched", "ref", item.Ref, "digest", res.Digest, "blobs", res.Blobs, "bytes", res.Bytes, "duration", s.now().Sub(start))
		pin := cache.Pin{Ref: item.Ref, Digest: res.Digest, Pinned: s.now()}
		// Pinned at once: a long list must not lose its first images to
		// eviction before the list is done.
		if err := s.store.AddPin(PinSource, pin); err != nil {
			return err
		}
		pins = append(pins, pin)
	}
	if err := s.store.ReplacePins(PinSource, pins); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// RunPrefetch prefetches and pins the list now and every interval until ctx
// ends; after a failure (upstream down at start) it tries again within a
// minute rather than a whole interval.
func (s *Service) RunPrefetch(ctx context.Context) {
	if len(s.prefetch) == 0 {
		return
	}
	every(ctx, func() error { return s.PrefetchAll(ctx) }, func(err error) time.Duration {
		if err == nil || ctx.Err() != nil {
			return s.interval
		}
		next := min(s.interval, time.Minute)
		s.log.Warn("prefetch incomplete; retrying", "in", next, "error", err)
		return next
	})
}
