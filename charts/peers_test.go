package charts

import (
	"encoding/base64"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPeers: the cluster tier's objects. A headless Service over the pods'
// peer port that publishes only ready pods, a Role that reads
// endpointslices and nothing else, a generated token, and the pod's
// settings from the downward API.
func TestPeers(t *testing.T) {
	t.Parallel()
	const name = release + "-lifeboat"
	m := render(t, "--set", "peers.port=5011,peers.replicas=3,peers.networkPolicy.enabled=true")

	var svc service
	m.get(t, "Service", name+"-peers", &svc)
	assert.Equal(t, "None", svc.Spec.ClusterIP)
	assert.False(t, svc.Spec.PublishNotReadyAddresses)
	require.Len(t, svc.Spec.Ports, 1)
	assert.Equal(t, "peer", svc.Spec.Ports[0].Name, "lifeboat finds the port by this name")
	assert.Equal(t, int32(5011), svc.Spec.Ports[0].Port)
	assert.Equal(t, "peer", svc.Spec.Ports[0].TargetPort.String())

	var r role
	m.get(t, "Role", name+"-peers", &r)
	require.Len(t, r.Rules, 1)
	assert.Equal(t, []string{"discovery.k8s.io"}, r.Rules[0].APIGroups)
	assert.Equal(t, []string{"endpointslices"}, r.Rules[0].Resources)
	assert.ElementsMatch(t, []string{"get", "list", "watch"}, r.Rules[0].Verbs)
	var rb roleBinding
	m.get(t, "RoleBinding", name+"-peers", &rb)
	assert.Equal(t, name+"-peers", rb.RoleRef.Name)
	require.Len(t, rb.Subjects, 1)
	assert.Equal(t, name, rb.Subjects[0].Name)

	var sec secret
	m.get(t, "Secret", name+"-peer-token", &sec)
	assert.GreaterOrEqual(t, len(sec.Data["token"]), 32, "a generated token")
	other := render(t)
	var sec2 secret
	other.get(t, "Secret", name+"-peer-token", &sec2)
	assert.NotEqual(t, sec.Data["token"], sec2.Data["token"], "random per install (an upgrade keeps the existing one)")
	_ = base64.StdEncoding

	var np networkPolicy
	m.get(t, "NetworkPolicy", name+"-peers", &np)
	require.NotEmpty(t, np.Spec.Ingress)
	assert.Equal(t, int32(5011), np.Spec.Ingress[0].Ports[0].Port.IntVal)
	assert.Equal(t, "lifeboat", np.Spec.Ingress[0].From[0].PodSelector.MatchLabels["app.kubernetes.io/name"])

	var ds daemonSet
	m.get(t, "DaemonSet", name, &ds)
	c := findContainer(t, ds.Spec.Template.Spec.Containers, "lifeboat")
	env := map[string]string{}
	fields := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			fields[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	assert.Equal(t, "status.podIP", fields["POD_IP"], "hostNetwork: the node's IP, as the EndpointSlices list it")
	assert.Equal(t, "spec.nodeName", fields["LIFEBOAT_NODE_NAME"])
	assert.Equal(t, "$(POD_IP):5011", env["LIFEBOAT_PEER_LISTEN"])
	assert.Equal(t, namespace+"/"+name+"-peers", env["LIFEBOAT_PEER_SERVICE"])
	assert.Equal(t, "3", env["LIFEBOAT_PEER_REPLICAS"])
	assert.Equal(t, "/etc/lifeboat/peer/token", env["LIFEBOAT_PEER_TOKEN_FILE"])
	assert.True(t, deref(t, ds.Spec.Template.Spec.AutomountServiceAccountToken))

	// Off: none of it, and no API token in the pod.
	off := render(t, "--set", "peers.enabled=false")
	for _, k := range []string{"Service/" + name + "-peers", "Role/" + name + "-peers", "Secret/" + name + "-peer-token"} {
		assert.NotContains(t, off.keys(), k)
	}
	off.get(t, "DaemonSet", name, &ds)
	assert.False(t, deref(t, ds.Spec.Template.Spec.AutomountServiceAccountToken))

	// The peer port may not be another listener's.
	out, err := runHelm(t, "template", release, chart, "--set", "peers.port=5000")
	assert.Error(t, err)
	assert.Contains(t, out, "peers.port")
}
