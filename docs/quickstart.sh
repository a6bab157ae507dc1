#!/usr/bin/env bash
# lifeboat's quick start: run as root from a clone, with Go and a containerd
# that reads hosts.toml from LIFEBOAT_HOSTS_DIR (its config_path).
# integration/quickstart_test.go runs this file; README.md shows it whole.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${QUICKSTART_DIR:=/tmp/lifeboat-quickstart}"     # binaries, cache and logs
: "${REGISTRY_PORT:=5001}"                          # the local registry
: "${LIFEBOAT_LISTEN:=127.0.0.1:5000}"              # lifeboat's registry API
: "${LIFEBOAT_HOSTS_DIR:=/etc/containerd/certs.d}"  # containerd's config_path
: "${CONTAINER_RUNTIME_ENDPOINT:=unix:///run/containerd/containerd.sock}"
export LIFEBOAT_LISTEN CONTAINER_RUNTIME_ENDPOINT
registry=localhost:$REGISTRY_PORT
image=$registry/hello:v1
dir=$QUICKSTART_DIR
mkdir -p "$dir/bin"
export PATH="$dir/bin:$PATH"
trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT

# 1. The tools: lifeboat, go-containerregistry's registry and crane, crictl.
go build -o "$dir/bin/lifeboat" ./cmd/lifeboat
GOBIN=$dir/bin go install github.com/google/go-containerregistry/cmd/registry@v0.22.1 \
  github.com/google/go-containerregistry/cmd/crane@v0.22.1
command -v crictl >/dev/null || GOBIN=$dir/bin go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0

# 2. A registry on localhost with one image, made from a tarball: no internet.
registry -port "$REGISTRY_PORT" 2>"$dir/registry.log" &
registry_pid=$!
until curl -sf "http://$registry/v2/" >/dev/null; do sleep 0.1; done
echo "hello from lifeboat" >"$dir/hello.txt"
tar -cf "$dir/layer.tar" -C "$dir" hello.txt
crane append -f "$dir/layer.tar" -t "$image"
# containerd pulls only an image that names its platform.
crane mutate --set-platform "linux/$(go env GOARCH)" -t "$image" "$image"

# 3. lifeboat mirrors that registry (a single --upstream is the default one).
lifeboat serve --upstream "$registry=http://$registry" --data-dir "$dir/data" 2>"$dir/lifeboat.log" &
until curl -sf "http://$LIFEBOAT_LISTEN/v2/" >/dev/null; do sleep 0.1; done

# 4. containerd asks lifeboat first for that registry: a hosts.toml.
lifeboat configure-containerd --hosts-dir "$LIFEBOAT_HOSTS_DIR" \
  --registries "$registry=http://$registry" --mirror "http://$LIFEBOAT_LISTEN"

# 5. Pull through lifeboat, which caches the image.
crictl pull "$image"
lifeboat ls --data-dir "$dir/data" | grep hello ||
  { echo "containerd did not pull through lifeboat: run lifeboat doctor"; exit 1; }

# 6. The registry stops; containerd forgets the image; the pull still works.
kill "$registry_pid"
wait "$registry_pid" || true
crictl rmi "$image"
crictl pull "$image"
echo "pulled $image with its registry stopped: lifeboat served it from its cache"
