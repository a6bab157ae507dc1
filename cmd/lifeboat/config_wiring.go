package main

import (
	"log/slog"

	"github.com/lifeboat-dev/lifeboat/credentials"
	"github.com/lifeboat-dev/lifeboat/maintenance"
	"github.com/lifeboat-dev/lifeboat/proxy"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/prometheus/client_golang/prometheus"
)

// The config turned into the options of the packages below cmd: each of
// their types is built by one function here, and only here.

// mirrorConfig is one mirrored registry as the config resolves it: its
// client's settings and the proxy's policy for it (Client left nil).
type mirrorConfig struct {
	upstream.Config
	proxy.Upstream
}

// proxyUpstreams is the mirrored registries; each upstream's settings were
// resolved (its overrides over the top-level ones) when the config loaded.
func (c serveConfig) proxyUpstreams() []mirrorConfig {
	out := make([]mirrorConfig, 0, len(c.Upstreams))
	for _, u := range c.Upstreams {
		out = append(out, mirrorConfig{
			Config: upstream.Config{
				Name: u.Name, URL: u.URL,
				Timeouts:           u.Timeouts.upstream(),
				Breaker:            u.Breaker.upstream(),
				CAFile:             u.CAFile,
				TokenRealms:        u.TokenRealms,
				InsecureSkipVerify: u.InsecureSkipVerify,
			},
			Upstream: proxy.Upstream{
				TagTTL: u.TagTTL, MaxStaleness: u.MaxStaleness, ServeStaleOnNotFound: u.ServeStaleOnNotFound,
				MaxConcurrentFills: c.MaxConcurrentFills, MaxConcurrentRequests: c.MaxConcurrentRequests,
				PrivateContent: u.PrivateContent, PrivateDuringOutage: u.PrivateDuringOutage,
			},
		})
	}
	return out
}

// proxyLimit is a size for proxy.Options, where zero means the built-in
// default and a negative value none: in the config, 0 means none.
func proxyLimit(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

func (c serveConfig) credentialOptions(log *slog.Logger, reg prometheus.Registerer) credentials.Options {
	return credentials.Options{
		ProviderConfig: c.ProviderConfig, ProviderBinDir: c.ProviderBinDir, DockerConfig: c.DockerConfig,
		Timeout: c.CredentialTimeout, Logger: log, Registerer: reg,
	}
}

func (t timeoutsConfig) upstream() upstream.Timeouts {
	return upstream.Timeouts{
		Dial: t.Dial, TLSHandshake: t.TLSHandshake, ResponseHeader: t.ResponseHeader,
		Revalidate: t.Revalidate, Request: t.Request, BodyStall: t.BodyStall,
	}
}

func (b breakerConfig) upstream() upstream.BreakerConfig {
	return upstream.BreakerConfig{Failures: b.Failures, Backoff: b.Backoff, MaxBackoff: b.MaxBackoff}
}

func (c serveConfig) evictionOptions() maintenance.EvictionOptions {
	return maintenance.EvictionOptions{
		MaxSize: c.MaxSize, MinFree: c.MinFreeDisk.Bytes, MinFreeFraction: c.MinFreeDisk.Fraction,
		Interval: c.Eviction.Interval, KeepRecent: c.Eviction.KeepRecent, KeepDuringOutage: c.Eviction.KeepDuringOutage,
	}
}

func (c serveConfig) prefetchItems() []maintenance.PrefetchItem {
	out := make([]maintenance.PrefetchItem, 0, len(c.Prefetch))
	for _, p := range c.Prefetch {
		out = append(out, maintenance.PrefetchItem{Ref: p.Ref, Platforms: p.Platforms})
	}
	return out
}
