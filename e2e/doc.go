// Package e2e proves lifeboat's mission on a real Kubernetes: a
// single-node cluster of upstream binaries (kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet, etcd, containerd) on
// loopback, the chart installed from the working tree, and pods that keep
// starting while their registry is down or hanging.
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
//	scenarios_test.go the scenarios of issue 15, in order
//
// pause/ is the pause binary of the node's sandboxes and the test images.
package e2e
