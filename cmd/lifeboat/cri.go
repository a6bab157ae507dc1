package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/distribution/reference"
	"github.com/lifeboat-dev/lifeboat/cache"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criPinSource is the pin source of images containerd holds.
const criPinSource = "containerd"

// containerdPins pins, in lifeboat's cache, the images containerd on this
// node holds (CRI ListImages): the images of the node's pods, until
// kubelet's image garbage collection drops them. An image a running pod
// needs is then never evicted before that pod restarts.
type containerdPins struct {
	socket string
	store  *cache.Store
	log    *slog.Logger
	conn   *grpc.ClientConn
}

func newContainerdPins(socket string, store *cache.Store, log *slog.Logger) (*containerdPins, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("--containerd-socket %s: %w", socket, err)
	}
	return &containerdPins{socket: socket, store: store, log: log, conn: conn}, nil
}

func (c *containerdPins) Close() error { return c.conn.Close() }

// refresh replaces the containerd pins with what containerd holds now. When
// containerd does not answer, the previous pins stay.
func (c *containerdPins) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := runtime.NewImageServiceClient(c.conn).ListImages(ctx, &runtime.ListImagesRequest{})
	if err != nil {
		c.log.Warn("containerd did not list its images; keeping the pins it gave before", "socket", c.socket, "error", err)
		return
	}
	var pins []cache.Pin
	now := time.Now()
	for _, img := range resp.GetImages() {
		for _, rd := range img.GetRepoDigests() {
			named, err := reference.ParseNormalizedNamed(rd)
			if err != nil {
				continue
			}
			if canonical, ok := named.(reference.Canonical); ok {
				pins = append(pins, cache.Pin{Ref: rd, Digest: canonical.Digest(), Pinned: now})
			}
		}
	}
	if err := c.store.ReplacePins(criPinSource, pins); err != nil {
		c.log.Error("recording containerd's images as pins", "error", err)
	}
}
