// Command pause sleeps until it is told to stop: the process of the e2e
// cluster's pod sandboxes, of the chart's cleanup pods and of the test
// workloads (the node cannot pull registry.k8s.io/pause).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
