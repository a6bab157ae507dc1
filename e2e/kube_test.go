package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// helm runs helm against the cluster and returns its combined output.
func (c *cluster) helm(ctx context.Context, helmBin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, helmBin, append([]string{"--kubeconfig", c.admin}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// apply applies a manifest.
func (c *cluster) apply(manifest string) error {
	_, err := c.kubectlIn(context.Background(), manifest, "apply", "-f", "-")
	return err
}

// getJSON decodes `kubectl get <args> -o json` into v.
func (c *cluster) getJSON(v any, args ...string) error {
	out, err := c.kubectl(append(args, "-o", "json")...)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(out), v)
}

func (c *cluster) pods(ns, selector string) ([]corev1.Pod, error) {
	var l corev1.PodList
	err := c.getJSON(&l, "get", "pods", "-n", ns, "-l", selector)
	return l.Items, err
}

func (c *cluster) events(ns string) ([]corev1.Event, error) {
	var l corev1.EventList
	err := c.getJSON(&l, "get", "events", "-n", ns)
	return l.Items, err
}

// ready reports whether a pod is Running with every container ready.
func ready(p corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitNewReady waits until a pod matching selector that is not in old
// (names) is ready, and returns it with the time since start.
func (c *cluster) waitNewReady(ns, selector string, old []string, start time.Time, timeout time.Duration) (corev1.Pod, time.Duration, error) {
	deadline := start.Add(timeout)
	var last []corev1.Pod
	for time.Now().Before(deadline) {
		pods, err := c.pods(ns, selector)
		if err == nil {
			last = pods
			for _, p := range pods {
				if !slices.Contains(old, p.Name) && ready(p) {
					return p, time.Since(start), nil
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return corev1.Pod{}, time.Since(start), fmt.Errorf("no new ready pod for %s after %s: %s", selector, timeout, describePods(last))
}

// describePods is each pod's name, phase and waiting reasons, for a failure message.
func describePods(pods []corev1.Pod) string {
	var parts []string
	for _, p := range pods {
		s := fmt.Sprintf("%s %s", p.Name, p.Status.Phase)
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			if w := cs.State.Waiting; w != nil {
				s += fmt.Sprintf(" [%s: %s %s]", cs.Name, w.Reason, w.Message)
			}
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func podNames(pods []corev1.Pod) []string {
	var names []string
	for _, p := range pods {
		names = append(names, p.Name)
	}
	return names
}

// pullEvents are the image-pull events kubelet recorded for the pods
// named: failures (Failed, BackOff, ErrImagePull, ImagePullBackOff) and
// successes (Pulled, whose message says how long the pull took).
type pullEvents struct {
	failures []string
	pulled   []string
}

func (c *cluster) pullEventsFor(ns string, pods []string) (pullEvents, error) {
	evs, err := c.events(ns)
	if err != nil {
		return pullEvents{}, err
	}
	var pe pullEvents
	for _, e := range evs {
		if e.InvolvedObject.Kind != "Pod" || !slices.Contains(pods, e.InvolvedObject.Name) {
			continue
		}
		line := fmt.Sprintf("%s %s: %s", e.InvolvedObject.Name, e.Reason, e.Message)
		switch {
		case e.Reason == "Pulled":
			pe.pulled = append(pe.pulled, line)
		case e.Reason == "Failed" || e.Reason == "BackOff" || e.Reason == "ErrImagePull" || e.Reason == "ImagePullBackOff" ||
			strings.Contains(e.Message, "ErrImagePull") || strings.Contains(e.Message, "ImagePullBackOff"):
			pe.failures = append(pe.failures, line)
		}
	}
	return pe, nil
}

// deployment is a Deployment of one pod running image, pulled at every
// start (imagePullPolicy: Always), on the pod network.
func deployment(ns, name, image string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[2]s
  namespace: %[1]s
spec:
  replicas: 1
  selector:
    matchLabels:
      app: %[2]s
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        app: %[2]s
    spec:
      terminationGracePeriodSeconds: 1
      enableServiceLinks: false
      automountServiceAccountToken: false
      containers:
        - name: app
          image: %[3]s
          imagePullPolicy: Always
`, ns, name, image)
}

// rolloutRestart restarts a Deployment and waits for the rollout; it
// returns the time taken.
func (c *cluster) rolloutRestart(ns, name string, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	if _, err := c.kubectl("rollout", "restart", "-n", ns, "deployment/"+name); err != nil {
		return 0, err
	}
	if _, err := c.kubectl("rollout", "status", "-n", ns, "deployment/"+name, "--timeout="+timeout.String()); err != nil {
		return time.Since(start), err
	}
	return time.Since(start), nil
}

// daemonSet is a DaemonSet's status.
func (c *cluster) daemonSet(ns, name string) (appsv1.DaemonSet, error) {
	var ds appsv1.DaemonSet
	err := c.getJSON(&ds, "get", "daemonset", "-n", ns, name)
	return ds, err
}
