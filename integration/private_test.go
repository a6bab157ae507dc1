package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dev/lifeboat/internal/upstreamtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// pullAs pulls ref over CRI with the pod's credentials (nil: none), as
// kubelet does with an image pull secret (crictl pull --creds). The image is
// removed first, so that every pull fetches.
func (c *containerd) pullAs(t *testing.T, ref string, auth *runtime.AuthConfig, limit time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	_, _ = c.is.RemoveImage(ctx, &runtime.RemoveImageRequest{Image: &runtime.ImageSpec{Image: ref}})
	_, err := c.is.PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: ref}, Auth: auth})
	return err
}

// writeHosts makes lifeboat the mirror of each registry, the registry
// itself the fallback (containerd reads hosts.toml at each pull).
func writeHosts(t *testing.T, certs, mirror string, servers map[string]string) {
	t.Helper()
	for registry, server := range servers {
		dir := filepath.Join(certs, registry)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		replaceFile(t, filepath.Join(dir, "hosts.toml"), fmt.Sprintf(
			"server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", server, mirror))
	}
}

// TestPrivateContentVerifyWithContainerd: under privateContent: verify, a
// real containerd (1.6 and 2.x) pulling over CRI gets a private image's
// manifests from the registry itself, with the pod's credentials, and its
// blobs from lifeboat; without credentials the pull fails while upstream is
// up. In an outage, privateDuringOutage serve keeps the node pulling what
// lifeboat holds, deny refuses it. A public image is lifeboat's as ever.
func TestPrivateContentVerifyWithContainerd(t *testing.T) {
	t.Parallel()
	bins := containerdBinaries(t)
	for _, version := range []string{"1.6", "2.x"} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			const private, public = "private.test", "public.test"
			priv, pub := upstreamtest.Start(t), upstreamtest.Start(t)
			img := upstreamtest.RandomImage(t, 128<<10, 2)
			priv.Push(t, "team/app:v1", img)
			priv.RequireToken("alice", "s3cret")
			pub.Push(t, "team/tool:v1", upstreamtest.RandomImage(t, 64<<10, 1))
			alice := &runtime.AuthConfig{Username: "alice", Password: "s3cret"}

			dockerConfig := filepath.Join(t.TempDir(), "config.json")
			require.NoError(t, os.WriteFile(dockerConfig, []byte(`{"auths":{"`+private+`":{"username":"alice","password":"s3cret"}}}`), 0o600))
			dataDir, certs := t.TempDir(), t.TempDir()
			servers := map[string]string{private: priv.URL, public: pub.URL}
			start := func(outage string) *lifeboat {
				cfg := filepath.Join(t.TempDir(), "lifeboat.yaml")
				require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf("privateContent: verify\nprivateDuringOutage: %s\ntimeouts:\n  request: 3s\nupstreams:\n  - {name: %s, url: %q}\n  - {name: %s, url: %q}\n",
					outage, private, priv.URL, public, pub.URL)), 0o644))
				lb := startLifeboat(t, dataDir, "--config", cfg, "--docker-config", dockerConfig, "--default-registry", private)
				writeHosts(t, certs, lb.URL, servers)
				return lb
			}
			lb := start("serve")
			c, _, _ := startContainerdOn(t, bins.get(t, version), version, certs)
			ref := private + "/team/app:v1"

			// With the pod's credentials: manifests from the registry, blobs from lifeboat.
			require.NoError(t, c.pullAs(t, ref, alice, time.Minute), "a pull with the pod's credentials")
			ctdManifests := priv.RequestsFrom("containerd", "HEAD manifests") + priv.RequestsFrom("containerd", "GET manifests")
			assert.Positive(t, ctdManifests, "containerd asked the registry for the manifest")
			assert.Zero(t, priv.RequestsFrom("containerd", "GET blobs"), "and no blob")
			assert.Equal(t, 3, priv.RequestsFrom("lifeboat", "GET blobs"), "lifeboat fetched the config and both layers")
			assert.Positive(t, countMetric(scrape(t, lb), `lifeboat_proxy_private_answers_total{answer="verify",registry="private.test"}`))
			t.Logf("containerd %s, pull with credentials: manifest requests at the registry: containerd %d, lifeboat %d; blob GETs: containerd %d, lifeboat %d",
				version, ctdManifests, priv.RequestsFrom("lifeboat", "HEAD manifests")+priv.RequestsFrom("lifeboat", "GET manifests"),
				priv.RequestsFrom("containerd", "GET blobs"), priv.RequestsFrom("lifeboat", "GET blobs"))

			// Without: refused, while upstream is up.
			assert.Error(t, c.pullAs(t, ref, nil, time.Minute), "a pull without credentials fails")

			// A public image is served by lifeboat; containerd never asks the registry.
			require.NoError(t, c.pullAs(t, public+"/team/tool:v1", nil, time.Minute))
			assert.Zero(t, pub.RequestsFrom("containerd", "HEAD manifests")+pub.RequestsFrom("containerd", "GET manifests")+pub.RequestsFrom("containerd", "GET blobs"))

			// lifeboat keeps its own copy of the private manifest for an outage.
			require.Eventually(t, func() bool { return priv.RequestsFrom("lifeboat", "GET manifests") > 0 }, 10*time.Second, 50*time.Millisecond)
			_, out := lifeboatCLI(t, "ls", "--data-dir", dataDir, "--admin", lb.AdminURL)
			assert.Regexp(t, `private\.test/team/app:v1 .* yes\s*$`, firstLineWith(out, "private.test/team/app:v1"), "ls shows it private:\n%s", out)

			priv.SetMode(upstreamtest.Status503)
			require.NoError(t, c.pullAs(t, ref, nil, time.Minute), "outage, serve: the node keeps running what it ran")
			assert.Positive(t, countMetric(scrape(t, lb), `lifeboat_proxy_private_answers_total{answer="outage-served",registry="private.test"}`))
			lb.Stop(t)

			lb = start("deny")
			assert.Error(t, c.pullAs(t, ref, alice, time.Minute), "outage, deny: refused")
			assert.Positive(t, countMetric(scrape(t, lb), `lifeboat_proxy_private_answers_total{answer="outage-denied",registry="private.test"}`))
		})
	}
}

func firstLineWith(out, s string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}
