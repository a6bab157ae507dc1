package main

import (
	"github.com/lifeboat-dev/lifeboat/proxy"
)

// The config turned into the options of the packages below cmd: each of
// their types is built by one function here, and only here.

// proxyUpstreams is the proxy's upstreams; each upstream's settings were
// resolved (its overrides over the top-level ones) when the config loaded.
func (c serveConfig) proxyUpstreams() []proxy.UpstreamConfig {
	out := make([]proxy.UpstreamConfig, 0, len(c.Upstreams))
	for _, u := range c.Upstreams {
		out = append(out, proxy.UpstreamConfig{
			Name: u.Name, URL: u.URL,
			TagTTL: u.TagTTL, MaxStaleness: u.MaxStaleness, ServeStaleOnNotFound: u.ServeStaleOnNotFound,
			Timeouts:           u.Timeouts.proxy(),
			Breaker:            u.Breaker.proxy(),
			MaxConcurrentFills: c.MaxConcurrentFills,
			CAFile:             u.CAFile,
			InsecureSkipVerify: u.InsecureSkipVerify,
		})
	}
	return out
}

func (t timeoutsConfig) proxy() proxy.Timeouts {
	return proxy.Timeouts{
		Dial: t.Dial, TLSHandshake: t.TLSHandshake, ResponseHeader: t.ResponseHeader,
		Revalidate: t.Revalidate, Request: t.Request, BodyStall: t.BodyStall,
	}
}

func (b breakerConfig) proxy() proxy.BreakerConfig {
	return proxy.BreakerConfig{Failures: b.Failures, Backoff: b.Backoff, MaxBackoff: b.MaxBackoff}
}

func (c serveConfig) evictionOptions() proxy.EvictionOptions {
	return proxy.EvictionOptions{
		MaxSize: c.MaxSize, MinFree: c.MinFreeDisk.Bytes, MinFreeFraction: c.MinFreeDisk.Fraction,
		Interval: c.Eviction.Interval, KeepRecent: c.Eviction.KeepRecent, KeepDuringOutage: c.Eviction.KeepDuringOutage,
	}
}

func (c serveConfig) prefetchItems() []proxy.PrefetchItem {
	out := make([]proxy.PrefetchItem, 0, len(c.Prefetch))
	for _, p := range c.Prefetch {
		out = append(out, proxy.PrefetchItem{Ref: p.Ref, Platforms: p.Platforms})
	}
	return out
}
