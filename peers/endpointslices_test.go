package peers

import (
	"context"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func slice(name string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	port, pname := int32(5001), PortName
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: "lifeboat", Labels: map[string]string{discoveryv1.LabelServiceName: "lifeboat-peers"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pname, Port: &port}},
		Endpoints:   eps,
	}
}

func endpoint(ip, node string, ready bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: &node, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}
}

// The members follow the Service's EndpointSlices: added, not ready,
// removed; another Service's slices are not members. The owners follow.
func TestMembershipFromEndpointSlices(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset()
	api := client.DiscoveryV1().EndpointSlices("lifeboat")
	c, err := New(Config{Self: "10.0.0.1:5001", Node: "node-a", Token: "0123456789abcdef"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	require.NoError(t, c.WatchEndpointSlices(ctx, api, "lifeboat-peers"))
	assert.Empty(t, c.members.snapshot())

	create := func(s *discoveryv1.EndpointSlice) {
		_, err := api.Create(ctx, s, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	eventually := func(want ...string) {
		t.Helper()
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			assert.Equal(ct, want, c.members.snapshot())
		}, 5*time.Second, 10*time.Millisecond)
	}
	create(slice("a", endpoint("10.0.0.1", "node-a", true), endpoint("10.0.0.2", "node-b", true)))
	other := slice("x", endpoint("10.9.9.9", "node-x", true))
	other.Labels[discoveryv1.LabelServiceName] = "something-else"
	create(other)
	create(slice("b", endpoint("10.0.0.3", "node-c", true)))
	eventually("10.0.0.1:5001", "10.0.0.2:5001", "10.0.0.3:5001")
	d := digest.FromString("x")
	assert.Len(t, c.Owners(d), 2)

	// Not ready: gone.
	_, err = api.Update(ctx, slice("b", endpoint("10.0.0.3", "node-c", false)), metav1.UpdateOptions{})
	require.NoError(t, err)
	eventually("10.0.0.1:5001", "10.0.0.2:5001")
	assert.ElementsMatch(t, []string{"10.0.0.1:5001", "10.0.0.2:5001"}, c.Owners(d), "two members, two owners")
	assert.True(t, c.Owns(d))

	// Removed: this node is alone, and owns everything.
	require.NoError(t, api.Delete(ctx, "a", metav1.DeleteOptions{}))
	eventually()
	assert.True(t, c.Owns(d))

	// This node recognised by node name under another address.
	create(slice("c", endpoint("192.168.1.1", "node-a", true), endpoint("10.0.0.5", "node-e", true)))
	eventually("10.0.0.1:5001", "10.0.0.5:5001")
}
