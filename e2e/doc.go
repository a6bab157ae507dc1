// Package e2e proves lifeboat's mission on a real Kubernetes: a cluster
// of upstream binaries (kube-apiserver, kube-controller-manager,
// kube-scheduler, kubelet, etcd, containerd) on this machine, one node and
// then a second joining, the chart installed from the working tree, and pods that keep
// starting while their registry is down or hanging.
//
// Scenario 8 adds a second node on the same machine while the registry
// is down: a second containerd and kubelet (node name lifeboat-e2e-node2)
// in a network namespace of their own, joined to the host by a veth pair
// (node 1's --node-ip is the host's end, 10.250.15.1; node 2's is
// 10.250.15.2), and in a mount namespace of their own, where node 2's
// directories are bind-mounted over the chart's hostPaths (containerd's
// hosts directory and config, lifeboat's data directory) and over the
// fixed paths kubelet, libcni and containerd write (/var/lib/kubelet,
// /var/lib/cni, /run/containerd, /run/netns, /var/log/containers). Its
// kubelet's --cgroup-root is /lbe2e-node2; the harness forwards
// 127.0.0.1:6443 in the namespace to the API server, and lifeboat is
// pointed at the API server on loopback (chart extraEnv: there is no
// kube-proxy). node2_test.go says more.
//
// Run it with `make e2e` (root; see the Makefile for what it builds). The
// harness lives in the _test.go files:
//
//	main_test.go      TestMain: bring the cluster up, run, tear it down, print the results
//	cluster_test.go   the processes, their configs and their teardown
//	pki_test.go       certificates and kubeconfigs
//	host_test.go      /etc/hosts and other state on the machine, and its restoration
//	images_test.go    the images the node needs without a registry (pause, busybox, kubectl)
//	registry_test.go  the test upstream: up, down (refused) or hanging
//	kube_test.go      kubectl and helm, pods, events and timings
//	node2_test.go     scenario 8's second node: its namespaces, start and teardown
//	scenarios_test.go the scenarios of issue 15, in order
//	twonodes_test.go  scenario 8: a node joins during the outage
//
// pause/ is the pause binary of the node's sandboxes and the test images.
package e2e
