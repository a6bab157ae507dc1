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
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// PortName is the name of the peer port in the headless Service.
const PortName = "peer"

// WatchEndpointSlices keeps the members in step with the EndpointSlices of
// the headless Service named service: its ready endpoints, on the
// port named PortName (or the only port). It returns once the informer has
// synced, or ctx ended; the watch runs until ctx ends. RBAC: get, list and
// watch endpointslices in the namespace api reads.
func (c *Cluster) WatchEndpointSlices(ctx context.Context, api EndpointSliceAPI, service string) error {
	selector := labels.Set{discoveryv1.LabelServiceName: service}.AsSelector().String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = selector
			return api.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return api.Watch(ctx, o)
		},
	}
	// A plain list then watch: the streaming initial list (WatchList) needs
	// an API server that sends its bookmark, and waits 10s per try for one
	// that does not (client-go's fake included).
	informer := cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, listThenWatch{}),
		&discoveryv1.EndpointSlice{}, 0, cache.Indexers{})
	update := func() {
		var eps []*discoveryv1.EndpointSlice
		for _, o := range informer.GetStore().List() {
			// The selector again: a watch is not always filtered (fakes).
			if s, ok := o.(*discoveryv1.EndpointSlice); ok && s.Labels[discoveryv1.LabelServiceName] == service {
				eps = append(eps, s)
			}
		}
		c.SetMembers(membersOf(eps))
	}
	_, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { update() },
		UpdateFunc: func(any, any) { update() },
		DeleteFunc: func(any) { update() },
	})
	if err != nil {
		return err
	}
	go informer.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return fmt.Errorf("peer EndpointSlices of %s: %w", service, ctx.Err())
	}
	update()
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

// EndpointSliceAPI lists and watches the EndpointSlices of one namespace:
// a clientset's DiscoveryV1().EndpointSlices(namespace) (the fake one in
// tests), or NewEndpointSliceAPI's.
type EndpointSliceAPI interface {
	List(ctx context.Context, opts metav1.ListOptions) (*discoveryv1.EndpointSliceList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// NewEndpointSliceAPI is an EndpointSliceAPI over a REST client that knows
// discovery.k8s.io/v1 only: client-go's typed clientset registers every
// API group, which would double the binary.
func NewEndpointSliceAPI(cfg *rest.Config, namespace string) (EndpointSliceAPI, error) {
	scheme := runtime.NewScheme()
	if err := discoveryv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	metav1.AddToGroupVersion(scheme, discoveryv1.SchemeGroupVersion)
	cfg = rest.CopyConfig(cfg)
	cfg.GroupVersion = &discoveryv1.SchemeGroupVersion
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if cfg.UserAgent == "" {
		cfg.UserAgent = "lifeboat"
	}
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, err
	}
	return sliceREST{rc: rc, ns: namespace, codec: runtime.NewParameterCodec(scheme)}, nil
}

type sliceREST struct {
	rc    *rest.RESTClient
	ns    string
	codec runtime.ParameterCodec
}

func (s sliceREST) List(ctx context.Context, opts metav1.ListOptions) (*discoveryv1.EndpointSliceList, error) {
	out := &discoveryv1.EndpointSliceList{}
	err := s.rc.Get().Namespace(s.ns).Resource("endpointslices").VersionedParams(&opts, s.codec).Do(ctx).Into(out)
	return out, err
}

func (s sliceREST) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return s.rc.Get().Namespace(s.ns).Resource("endpointslices").VersionedParams(&opts, s.codec).Watch(ctx)
}

// listThenWatch tells client-go's reflector not to use WatchList.
type listThenWatch struct{}

func (listThenWatch) IsWatchListSemanticsUnSupported() bool { return true }
