package peers

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// PortName is the name of the peer port in the headless Service.
const PortName = "peer"

// WatchEndpointSlices keeps the members in step with the EndpointSlices of
// the headless Service service in namespace: its ready endpoints, on the
// port named PortName (or the only port). It returns once the informer has
// synced; the watch runs until ctx ends. RBAC: get, list and watch
// endpointslices in namespace.
func (c *Cluster) WatchEndpointSlices(ctx context.Context, client kubernetes.Interface, namespace, service string) error {
	selector := labels.Set{discoveryv1.LabelServiceName: service}.AsSelector().String()
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	informer := factory.Discovery().V1().EndpointSlices()
	lister := informer.Lister()
	update := func() {
		slices, err := lister.EndpointSlices(namespace).List(labels.Everything())
		if err != nil {
			c.log.Warn("listing peer EndpointSlices", "error", err)
			return
		}
		c.SetMembers(membersOf(slices))
	}
	_, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { update() },
		UpdateFunc: func(any, any) { update() },
		DeleteFunc: func(any) { update() },
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("peer EndpointSlices of %s/%s: %v informer did not sync", namespace, service, typ)
		}
	}
	update()
	go func() { <-ctx.Done(); factory.Shutdown() }()
	return nil
}

// membersOf is the ready endpoints of slices. An endpoint whose ready
// condition is unknown counts as ready, as the API says it should.
func membersOf(eps []*discoveryv1.EndpointSlice) []Member {
	var out []Member
	for _, s := range eps {
		port := peerPort(s.Ports)
		if port == 0 {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			node := ""
			if e.NodeName != nil {
				node = *e.NodeName
			}
			for _, a := range e.Addresses {
				out = append(out, Member{Addr: net.JoinHostPort(a, strconv.Itoa(int(port))), Node: node})
			}
		}
	}
	return out
}

func peerPort(ports []discoveryv1.EndpointPort) int32 {
	i := slices.IndexFunc(ports, func(p discoveryv1.EndpointPort) bool { return p.Name != nil && *p.Name == PortName })
	if i < 0 && len(ports) == 1 {
		i = 0
	}
	if i < 0 || ports[i].Port == nil {
		return 0
	}
	return *ports[i].Port
}
