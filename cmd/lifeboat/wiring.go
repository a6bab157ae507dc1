package main

import (
	"context"
	"log/slog"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/credentials"
	"github.com/lifeboat-dev/lifeboat/maintenance"
	"github.com/lifeboat-dev/lifeboat/peers"
	"github.com/lifeboat-dev/lifeboat/proxy"
	"github.com/lifeboat-dev/lifeboat/upstream"
	"github.com/prometheus/client_golang/prometheus"
)

// services are what serve runs over the store, and what the admin
// commands use on a data directory no lifeboat holds: one construction, so
// a policy behaves the same whoever asks.
type services struct {
	proxy       *proxy.Proxy
	maintenance *maintenance.Service
	cluster     *peers.Cluster // nil without --peer-listen
}

// newServices builds the upstream clients, the proxy and the maintenance
// service from the config. reg nil: metrics are not registered.
// beforeEviction, if set, runs before each periodic eviction pass.
func (c serveConfig) newServices(store *cache.Store, log *slog.Logger, reg prometheus.Registerer, beforeEviction func(context.Context)) (*services, error) {
	keychain, err := credentials.New(c.credentialOptions(log, reg))
	if err != nil {
		return nil, err
	}
	opts := upstream.Options{Keychain: keychain, UserAgent: "lifeboat/" + version, Logger: log, Metrics: upstream.NewMetrics(reg)}
	mirrors := c.proxyUpstreams()
	ups := make([]proxy.Upstream, 0, len(mirrors))
	clients := make([]*upstream.Client, 0, len(mirrors))
	for _, m := range mirrors {
		client, err := upstream.New(m.Config, opts)
		if err != nil {
			return nil, err
		}
		m.Upstream.Client = client
		ups = append(ups, m.Upstream)
		clients = append(clients, client)
	}
	cluster, err := c.newCluster(log, reg)
	if err != nil {
		return nil, err
	}
	popts := proxy.Options{
		Upstreams: ups, DefaultRegistry: c.DefaultRegistry, Logger: log, Registerer: reg,
		MaxBlobSize: proxyLimit(c.MaxBlobSize), DiskReserve: proxyLimit(c.DiskReserve), FillTimeout: c.FillTimeout,
	}
	if cluster != nil {
		popts.Peers = cluster
	}
	p, err := proxy.New(store, popts)
	if err != nil {
		return nil, err
	}
	eviction := c.evictionOptions()
	eviction.BeforePass = beforeEviction
	svc := maintenance.New(store, maintenance.Options{
		Proxy: p, Upstreams: clients, Eviction: eviction,
		Prefetch: c.prefetchItems(), PrefetchInterval: c.PrefetchInterval,
		Logger: log, Registerer: reg,
	})
	return &services{proxy: p, maintenance: svc, cluster: cluster}, nil
}

// Close stops the proxy's downloads; the store is the caller's.
func (s *services) Close() { s.proxy.Close() }
