#!/usr/bin/env bash
# Builds prometheus-adapter (sigs.k8s.io/prometheus-adapter, the custom metrics API server the
# HPA reads GPU utilization and Triton's queue from) into the shared tool cache keyed by version:
#   ${DSO_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deepseek-operator}/tools/prometheus-adapter-<version>/prometheus-adapter
# The module proxy refuses its version list, so `go install` fails at its deprecation check;
# `go mod download -json` gives the module's folder, built as is with its own go.mod/go.sum
# (see hack/tools.versions). Cold: about 9 min on 2 cores. A cached binary is never rebuilt.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools.versions
source "$here/tools.versions"

cache_root=${DSO_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deepseek-operator}
tools_dir="$cache_root/tools"
export GOMODCACHE="$cache_root/go/mod"
export GOCACHE="$cache_root/go/build"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-trimpath -buildvcs=false"
mkdir -p "$tools_dir" "$GOMODCACHE" "$GOCACHE"

log() { printf '[adapter %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

dir="$tools_dir/prometheus-adapter-$PROMETHEUS_ADAPTER_VERSION"
if [ -x "$dir/prometheus-adapter" ]; then
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  log "error: 'go' is not on PATH; install Go 1.26 or newer and run 'make tools' again"
  exit 1
fi

log "building prometheus-adapter $PROMETHEUS_ADAPTER_VERSION (cold: about 8-9 min on 2 cores)"
start=$SECONDS
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
( while sleep 60; do log "  ... still building ($(( (SECONDS - start) / 60 )) min so far)"; done ) &
ticker=$!
trap 'kill "$ticker" 2>/dev/null || true; rm -rf "$work"' EXIT
go mod download -json "sigs.k8s.io/prometheus-adapter@$PROMETHEUS_ADAPTER_VERSION" > "$work/mod.json"
src=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Dir"])' "$work/mod.json")
cp -r "$src" "$work/src"; chmod -R u+w "$work/src"
cd "$work/src"
if ! go build -ldflags "-s -w" -o "$work/out/prometheus-adapter" ./cmd/adapter; then
  log "FAILED building prometheus-adapter after $(( SECONDS - start )) s; retry with: hack/build-adapter.sh"
  exit 1
fi
mkdir -p "$dir.partial"
mv "$work/out/prometheus-adapter" "$dir.partial/prometheus-adapter"
rm -rf "$dir"; mv "$dir.partial" "$dir"
log "built prometheus-adapter in $(( SECONDS - start )) s into $dir"
