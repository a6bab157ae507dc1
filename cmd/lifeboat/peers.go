package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/lifeboat-dev/lifeboat/peers"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/rest"
)

// peerSettings configure the cluster tier (package peers).
type peerSettings struct {
	PeerListen    string
	Peers         []string
	PeerService   string
	NodeName      string
	PeerReplicas  int
	PeerTokenFile string
}

// maxPeerConns bounds the peer listener's connections: the other nodes'.
const maxPeerConns = 1024

// serviceAccountNamespace is where a pod finds its own namespace.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// peerRows are the cluster tier's rows of the settings table.
func peerRows() []setting {
	return []setting{
		{flag: "peer-listen", key: "peerListen", help: "`address` (host:port) of the peer API other lifeboats of the cluster use, as they reach it (empty: no cluster tier)",
			set: field(parseText, func(c *serveConfig) *string { return &c.PeerListen })},
		{flag: "peers", key: "peers", help: "static list of every node's peer `addresses` (host:port,...), this node's --peer-listen included; instead of --peer-service",
			set: field(parseAddrList, func(c *serveConfig) *[]string { return &c.Peers })},
		{flag: "peer-service", key: "peerService", help: "`namespace/name` of the headless Service whose EndpointSlices list the peers (in Kubernetes; no namespace: the pod's own)",
			set: field(parseText, func(c *serveConfig) *string { return &c.PeerService })},
		{flag: "node-name", key: "nodeName", help: "this node's `name` (Kubernetes spec.nodeName), to recognise itself among the peers",
			set: field(parseText, func(c *serveConfig) *string { return &c.NodeName })},
		{flag: "peer-replicas", key: "peerReplicas", def: "2", help: "owners per digest: the `number` of nodes that fetch and hold each blob for the others",
			set: field(positiveInt, func(c *serveConfig) *int { return &c.PeerReplicas })},
		{flag: "peer-token-file", key: "peerTokenFile", help: "`file` holding the token peers share: sent to them and required from them (required with --peer-listen)",
			set: field(parseText, func(c *serveConfig) *string { return &c.PeerTokenFile })},
	}
}

func parseAddrList(v string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(v, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("peer %q: %w", a, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// validatePeers checks the cluster tier's settings together.
func (c serveConfig) validatePeers() []error {
	var errs []error
	if c.PeerListen == "" {
		if len(c.Peers) > 0 || c.PeerService != "" {
			errs = append(errs, errors.New("--peers and --peer-service need --peer-listen"))
		}
		return errs
	}
	if _, _, err := net.SplitHostPort(c.PeerListen); err != nil {
		errs = append(errs, fmt.Errorf("--peer-listen %q: %w", c.PeerListen, err))
	}
	if c.PeerTokenFile == "" {
		errs = append(errs, errors.New("--peer-listen needs --peer-token-file: peers authenticate with a shared token"))
	}
	switch {
	case len(c.Peers) > 0 && c.PeerService != "":
		errs = append(errs, errors.New("--peers and --peer-service: choose one"))
	case len(c.Peers) == 0 && c.PeerService == "":
		errs = append(errs, errors.New("--peer-listen needs --peers or --peer-service"))
	case len(c.Peers) > 0 && !containsString(c.Peers, c.PeerListen):
		errs = append(errs, fmt.Errorf("--peers does not list --peer-listen %s: every node lists itself as the others do, so all agree on the owners", c.PeerListen))
	}
	return errs
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// newCluster builds the cluster tier, or nil without --peer-listen.
func (c serveConfig) newCluster(log *slog.Logger, reg prometheus.Registerer) (*peers.Cluster, error) {
	if c.PeerListen == "" {
		return nil, nil
	}
	raw, err := os.ReadFile(c.PeerTokenFile)
	if err != nil {
		return nil, fmt.Errorf("--peer-token-file: %w", err)
	}
	token := strings.TrimSpace(string(raw))
	if len(token) < 16 {
		return nil, fmt.Errorf("--peer-token-file %s: the token must be at least 16 characters", c.PeerTokenFile)
	}
	cl, err := peers.New(peers.Config{Self: c.PeerListen, Node: c.NodeName, Replicas: c.PeerReplicas, Token: token, Logger: log, Registerer: reg})
	if err != nil {
		return nil, err
	}
	if len(c.Peers) > 0 {
		members := make([]peers.Member, len(c.Peers))
		for i, a := range c.Peers {
			members[i] = peers.Member{Addr: a}
		}
		cl.SetMembers(members)
	}
	return cl, nil
}

// watchPeers follows --peer-service's EndpointSlices until ctx ends. Until
// the first list arrives this node is every digest's owner (it fetches
// upstream, as without peers).
func (c serveConfig) watchPeers(ctx context.Context, cl *peers.Cluster, log *slog.Logger) error {
	if c.PeerService == "" {
		return nil
	}
	ns, name, ok := strings.Cut(c.PeerService, "/")
	if !ok {
		raw, err := os.ReadFile(serviceAccountNamespace)
		if err != nil {
			return fmt.Errorf("--peer-service %s names no namespace, and the pod's is unknown: %w", c.PeerService, err)
		}
		ns, name = strings.TrimSpace(string(raw)), c.PeerService
	}
	rc, err := rest.InClusterConfig()
	if err != nil {
		return fmt.Errorf("--peer-service: %w", err)
	}
	api, err := peers.NewEndpointSliceAPI(rc, ns)
	if err != nil {
		return fmt.Errorf("--peer-service: %w", err)
	}
	if err := cl.WatchEndpointSlices(ctx, api, name); err != nil && ctx.Err() == nil {
		return err
	}
	log.Info("following the peers' EndpointSlices", "namespace", ns, "service", name)
	return nil
}

// servePeers opens the peer listener and follows the membership, when the
// cluster tier is on; it returns the peer listener's address ("" if off).
func (c serveConfig) servePeers(ctx context.Context, g *errgroup.Group, svc *services, log *slog.Logger, serve func(*http.Server, net.Listener)) (string, error) {
	if svc.cluster == nil {
		return "", nil
	}
	ln, err := listen(c.PeerListen, maxPeerConns)
	if err != nil {
		return "", fmt.Errorf("--peer-listen: %w", err)
	}
	serve(newServer(svc.cluster.Handler(svc.proxy), log), ln)
	g.Go(func() error {
		if err := c.watchPeers(ctx, svc.cluster, log); err != nil {
			log.Error("peer membership: not following the EndpointSlices; this node fetches from upstream alone", "error", err)
		}
		return nil
	})
	return ln.Addr().String(), nil
}
