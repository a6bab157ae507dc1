#!/usr/bin/env bash
# Build the Kubernetes server binaries the e2e cluster runs, from the Go
# module proxy, into $1 (default /var/cache/lifeboat-e2e/bin). A binary
# already there at the right version is kept: a rerun takes a second.
#
# k8s.io/kubernetes cannot be go-installed (its go.mod replaces the staging
# modules with local paths), so a scratch module requires it and replaces
# each staging module with its published version.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.34.4}
out=${1:-/var/cache/lifeboat-e2e/bin}
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

ok=1
for b in "${bins[@]}"; do
	case $b in
	kubectl) v=$("$out/$b" version --client 2>/dev/null | head -1 || true) ;;
	*) v=$("$out/$b" --version 2>/dev/null || true) ;;
	esac
	[[ $v == *"$KUBE_VERSION"* ]] || { ok=0; break; }
done
if [[ $ok == 1 ]]; then
	echo "kubernetes $KUBE_VERSION binaries cached in $out"
	exit 0
fi

staging=v0.${KUBE_VERSION#v1.} # v1.34.4 -> v0.34.4
scratch=$(dirname "$out")/build
mkdir -p "$out" "$scratch"
cd "$scratch"
export GOWORK=off GOFLAGS=-mod=mod
mod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
{
	echo 'module lifeboat.test/kube-build'
	echo
	echo "go $(sed -n 's/^go //p' "$mod")"
	echo
	echo "require k8s.io/kubernetes $KUBE_VERSION"
	echo
	sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => \./staging/.*#replace \1 => \1 '"$staging"'#p' "$mod"
} >go.mod
n=$(grep -c '^replace' go.mod)
[[ $n -gt 0 ]] || { echo "no staging modules found in $mod" >&2; exit 1; }
echo "scratch module with $n staging replaces in $scratch"
cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
go mod tidy -e >/dev/null 2>&1 || true
major=${KUBE_VERSION#v}; major=${major%%.*}
minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ld="$ld -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
pkgs=()
for b in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
echo "building ${bins[*]} $KUBE_VERSION (about 20 minutes on 2 cores the first time)"
# One go build for the five, so each shared package compiles once.
# -dwarf=false: -ldflags -w drops the debug info at link time, but the
# compiler still generates it for every package unless told not to. Not
# generating it took 13-20% off the CPU time of cold builds of k8s.io/api
# and k8s.io/apimachinery (two pairs, on a busy 2-core machine).
CGO_ENABLED=0 go build -trimpath -tags tools -gcflags=all=-dwarf=false -ldflags "$ld" -o "$out/" "${pkgs[@]}"
"$out/kubelet" --version
