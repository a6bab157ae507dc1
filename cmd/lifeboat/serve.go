package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/lifeboat-dev/lifeboat/cache"
	"github.com/lifeboat-dev/lifeboat/credentials"
	"github.com/lifeboat-dev/lifeboat/internal/logwriter"
	"github.com/lifeboat-dev/lifeboat/registry"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
)

const (
	// shutdownGrace lets blob streams in progress finish on SIGTERM
	// (Kubernetes' default grace period is 30s).
	shutdownGrace = 25 * time.Second
	// flushInterval is how often batched access times and tag
	// confirmations reach bbolt (cache.Store.Flush).
	flushInterval = 30 * time.Second
)

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := loadServeConfig(args, stderr)
	if err != nil {
		return err
	}
	// Log lines leave through a writer of their own: one access line per
	// request is a copy, not a write(2) under slog's lock (see
	// internal/logwriter). Closed last, after the "stopped" line.
	logw := logwriter.New(stderr, logwriter.DefaultLimit)
	defer logw.Close()
	log := newLogger(cfg, logw)
	if n, err := raiseFileLimit(); err != nil {
		log.Warn("could not raise the open-file limit", "limit", n, "error", err)
	}
	if _, err := credentials.New(cfg.credentialOptions(log, nil)); err != nil {
		return err // before anything binds: a broken credentials setup is a config error
	}

	// Health and metrics first: opening the store can take a while (a
	// rebuilt index re-hashes every blob), and a liveness probe must not
	// kill a start in progress. /readyz says no until everything is up; the
	// registry API is not even bound until then, so containerd is refused
	// at once and pulls from the registry itself.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lifeboat_build_info", Help: "Always 1; the version label says which lifeboat runs.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	buildInfo.Set(1)
	reg.MustRegister(buildInfo)
	var ready atomic.Bool
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	metricsLn, err := listen(cfg.MetricsListen, maxMetricsConns)
	if err != nil {
		return fmt.Errorf("--metrics-listen: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	servers := []*http.Server{newServer(mux, log)}
	serveOn := func(srv *http.Server, ln net.Listener) {
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	serveOn(servers[0], metricsLn)
	stopEarly := func(err error) error {
		servers[0].Close()
		_ = g.Wait()
		return err
	}

	store, err := cache.Open(cfg.DataDir, cache.Options{})
	if err != nil {
		return stopEarly(err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("closing the store", "error", err)
		}
	}()
	var beforeEviction func(context.Context)
	if cfg.ContainerdSocket != "" {
		pins, err := newContainerdPins(cfg.ContainerdSocket, store, log)
		if err != nil {
			return stopEarly(err)
		}
		defer pins.Close()
		beforeEviction = pins.refresh
	}
	svc, err := cfg.newServices(store, log, reg, beforeEviction)
	if err != nil {
		return stopEarly(err)
	}
	defer svc.Close() // stop downloads before the store closes (defers run last-first)
	if moved := store.RebuiltFrom(); moved != "" {
		svc.maintenance.IndexRebuilt(moved)
	}
	api := registry.New(svc.proxy, registry.Options{Logger: log, Registerer: reg, WriteStall: cfg.WriteStall})

	// The admin API changes the cache: its own listener, loopback by
	// default, so that exposing metrics to Prometheus does not expose it.
	admin := adminHandler(http.NewServeMux(), svc.maintenance)

	apiLn, err := listen(cfg.Listen, maxAPIConns)
	if err != nil {
		return stopEarly(fmt.Errorf("--listen: %w", err))
	}
	adminLn, err := listen(cfg.AdminListen, maxAdminConns)
	if err != nil {
		apiLn.Close()
		return stopEarly(fmt.Errorf("--admin-listen: %w", err))
	}
	servers = append(servers, newServer(api, log), newServer(admin, log))
	serveOn(servers[1], apiLn)
	serveOn(servers[2], adminLn)
	peerAddr, err := cfg.servePeers(gctx, g, svc, log, func(srv *http.Server, ln net.Listener) {
		servers = append(servers, srv)
		serveOn(srv, ln)
	})
	if err != nil {
		for _, s := range servers[1:] {
			s.Close()
		}
		return stopEarly(err)
	}
	g.Go(func() error {
		t := time.NewTicker(flushInterval)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
				if err := store.Flush(); err != nil {
					log.Error("flushing access times and tag confirmations", "error", err)
				}
			}
		}
	})
	g.Go(func() error { svc.maintenance.RunEviction(gctx); return nil })
	g.Go(func() error { svc.maintenance.RunPrefetch(gctx); return nil })
	if nc := newNodeChecker(cfg, cfg.Listen, reg, log); nc != nil {
		g.Go(func() error { nc.run(gctx); return nil })
	}
	g.Go(func() error {
		<-gctx.Done()
		ready.Store(false)
		log.Info("shutting down", "grace", shutdownGrace)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), shutdownGrace)
		defer cancel()
		var errs []error
		for _, s := range servers {
			errs = append(errs, s.Shutdown(sctx))
		}
		return errors.Join(errs...)
	})
	ready.Store(true)
	log.Info("lifeboat serving", "version", version, "listen", apiLn.Addr().String(),
		"metrics_listen", metricsLn.Addr().String(), "admin_listen", adminLn.Addr().String(), "data_dir", cfg.DataDir,
		"upstreams", len(cfg.Upstreams), "default_registry", cfg.DefaultRegistry,
		"max_size", int64(cfg.MaxSize), "min_free_disk_bytes", cfg.MinFreeDisk.Bytes, "min_free_disk_fraction", cfg.MinFreeDisk.Fraction,
		"prefetch", len(cfg.Prefetch), "peer_listen", peerAddr)
	err = g.Wait()
	log.Info("stopped")
	return err
}

func newServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10, // a pull's headers are small; a megabyte each is a hostile client's
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: it would cut long blob streams.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

func newLogger(cfg serveConfig, w io.Writer) *slog.Logger {
	level, _ := parseLevel(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
