#!/usr/bin/env bash
# Builds the control-plane programs the simulated cluster needs from Go modules:
#   kube-apiserver kube-controller-manager kube-scheduler kubectl  (k8s.io/kubernetes)
#   etcd (go.etcd.io/etcd/server/v3), kwok (sigs.k8s.io/kwok), helm (helm.sh/helm/v3),
#   kubeconform (github.com/yannh/kubeconform)
#   lws-controller (sigs.k8s.io/lws: the LeaderWorkerSet controller, with its CRDs and webhooks)
# into a cache outside the repository keyed by version:
#   ${DSO_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deepseek-operator}/tools/<name>-<version>/
# A program already in the cache is never rebuilt; a second run returns in seconds.
# Usage: hack/build-tools.sh [program ...]   (default: all of them)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools.versions
source "$here/tools.versions"

cache_root=${DSO_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deepseek-operator}
tools_dir="$cache_root/tools"
export GOMODCACHE="$cache_root/go/mod"
export GOCACHE="$cache_root/go/build"
export GOTOOLCHAIN=local   # a newer `go` line must not try to download a toolchain
export CGO_ENABLED=0
export GOFLAGS="-trimpath -buildvcs=false"
mkdir -p "$tools_dir" "$GOMODCACHE" "$GOCACHE"

log() { printf '[tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if ! command -v go >/dev/null 2>&1; then
  log "error: 'go' is not on PATH; install Go 1.26 or newer and run 'make tools' again"
  exit 1
fi

# run NAME CMD...: runs a build step with a heartbeat so a long build shows progress;
# on failure says which program failed, the command, and how to retry.
run() {
  local name=$1; shift
  local start=$SECONDS
  ( while sleep 60; do log "  ... still building $name ($(( (SECONDS - start) / 60 )) min so far)"; done ) &
  local ticker=$!
  local rc=0
  "$@" || rc=$?
  kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    log "FAILED building $name (exit $rc) after $(( SECONDS - start )) s"
    log "  command: $*"
    log "  in: $(pwd)"
    log "  retry with: make tools   (or: hack/build-tools.sh $name); finished programs are kept in $tools_dir"
    exit "$rc"
  fi
  log "built $name in $(( SECONDS - start )) s"
}

want() {  # want NAME: true when NAME was asked for (or nothing was named)
  [ ${#requested[@]} -eq 0 ] && return 0
  local r; for r in "${requested[@]}"; do [ "$r" = "$1" ] && return 0; done
  return 1
}
requested=("$@")

# --- Kubernetes: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
k8s_dir="$tools_dir/kubernetes-$KUBERNETES_VERSION"
k8s_progs=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
k8s_missing=()
for p in "${k8s_progs[@]}"; do
  if want "$p" || want kubernetes; then
    [ -x "$k8s_dir/$p" ] || k8s_missing+=("$p")
  fi
done
if [ ${#k8s_missing[@]} -gt 0 ]; then
  log "building ${k8s_missing[*]} $KUBERNETES_VERSION (cold: about 7-8 min on 2 cores)"
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  cd "$work"
  run "download k8s.io/kubernetes@$KUBERNETES_VERSION" go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" > k8s.json
  gomod=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["GoMod"])' k8s.json)
  staging_version="v0.${KUBERNETES_VERSION#v1.}"
  {
    echo "module dso.local/build-kubernetes"
    echo
    grep -E '^go [0-9]' "$gomod"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    # k8s.io/kubernetes replaces its staging modules with local paths; point each at its published version.
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
  } > go.mod
  major=${KUBERNETES_VERSION#v}; major=${major%%.*}
  minor=${KUBERNETES_VERSION#v*.}; minor=${minor%%.*}
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  pkgs=(); for p in "${k8s_missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$p"); done
  mkdir -p out
  run "${k8s_missing[*]}" go build -mod=mod -ldflags "$ldflags" -o out/ "${pkgs[@]}"
  mkdir -p "$k8s_dir"
  for p in "${k8s_missing[@]}"; do mv "out/$p" "$k8s_dir/$p"; done
  cd - >/dev/null; rm -rf "$work"; trap - EXIT
fi

# --- etcd (has replace directives: build inside a throwaway module)
etcd_dir="$tools_dir/etcd-$ETCD_VERSION"
if want etcd && [ ! -x "$etcd_dir/etcd" ]; then
  log "building etcd $ETCD_VERSION (cold: under a minute)"
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  cd "$work"
  printf 'module dso.local/build-etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > go.mod
  mkdir -p out
  run etcd go build -mod=mod -ldflags "-s -w" -o out/etcd go.etcd.io/etcd/server/v3
  mkdir -p "$etcd_dir"; mv out/etcd "$etcd_dir/etcd"
  cd - >/dev/null; rm -rf "$work"; trap - EXIT
fi

# --- kwok, helm and kubeconform: plain go install
install_tool() {  # install_tool NAME VERSION PACKAGE
  local name=$1 version=$2 pkg=$3 dir="$tools_dir/$1-$2"
  if want "$name" && [ ! -x "$dir/$name" ]; then
    log "building $name $version (cold: about 1-2 min)"
    mkdir -p "$dir.partial"
    run "$name" env GOBIN="$dir.partial" go install -ldflags "-s -w" "$pkg@$version"
    mkdir -p "$dir"; mv "$dir.partial/$name" "$dir/$name"; rm -rf "$dir.partial"
  fi
}
install_tool kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
install_tool helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
install_tool kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform

# --- LeaderWorkerSet controller: built from the module's own folder (go install is refused, see
# tools.versions); its CRDs and webhook manifests are kept beside the binary for the simulated cluster.
lws_dir="$tools_dir/lws-$LWS_VERSION"
if want lws-controller && [ ! -x "$lws_dir/lws-controller" ]; then
  log "building lws-controller $LWS_VERSION (cold: a few minutes on 2 cores)"
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  run "download sigs.k8s.io/lws@$LWS_VERSION" go mod download -json "sigs.k8s.io/lws@$LWS_VERSION" > "$work/lws.json"
  src=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Dir"])' "$work/lws.json")
  cp -r "$src" "$work/lws"; chmod -R u+w "$work/lws"
  cd "$work/lws"
  run lws-controller go build -ldflags "-s -w" -o "$work/out/lws-controller" ./cmd
  mkdir -p "$lws_dir.partial/config"
  cp -r config/crd/bases "$lws_dir.partial/config/crd"
  cp -r config/webhook "$lws_dir.partial/config/webhook"
  mv "$work/out/lws-controller" "$lws_dir.partial/lws-controller"
  rm -rf "$lws_dir"; mv "$lws_dir.partial" "$lws_dir"
  cd - >/dev/null; rm -rf "$work"; trap - EXIT
fi

log "tools ready in $tools_dir"
