#!/usr/bin/env bash
# Builds hack/argocd-check (the dso-argocd program: Argo CD's own health and diff code run on our
# objects, see its main.go) against github.com/argoproj/argo-cd/v3 at ARGOCD_VERSION, into
#   ${DSO_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deepseek-operator}/tools/argocd-<version>/dso-argocd-<source hash>
# The source hash (first 12 hex digits of sha256 of main.go) keys the binary, so editing main.go
# builds again (warm: the Go build cache is kept) and an unchanged one is never rebuilt.
# How (see hack/tools.versions): `go mod download -json` gives the module's folder; main.go is built
# inside a copy of it, so Argo CD's own go.mod (with its replace block) and go.sum are used as is.
# Prints the binary's path on stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools.versions
source "$here/tools.versions"

cache_root=${DSO_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deepseek-operator}
export GOMODCACHE="$cache_root/go/mod"
export GOCACHE="$cache_root/go/build"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-trimpath -buildvcs=false"

log() { printf '[argocd-tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

src="$here/argocd-check/main.go"
hash=$(sha256sum "$src" | cut -c1-12)
dir="$cache_root/tools/argocd-$ARGOCD_VERSION"
bin="$dir/dso-argocd-$hash"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  log "error: 'go' is not on PATH; install Go 1.26 or newer and run 'make tools' again"
  exit 1
fi
mkdir -p "$dir" "$GOMODCACHE" "$GOCACHE"
log "building dso-argocd against argo-cd $ARGOCD_VERSION (cold: several minutes on 2 cores)"
start=$SECONDS
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
( while sleep 60; do log "  ... still building dso-argocd ($(( (SECONDS - start) / 60 )) min so far)"; done ) &
ticker=$!
trap 'kill $ticker 2>/dev/null || true; rm -rf "$work"' EXIT
go mod download -json "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION" > "$work/argocd.json"
mod=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Dir"])' "$work/argocd.json")
# Only what a Go build reads: go.mod, go.sum and the Go packages (not ui/, docs/, test/ ...).
mkdir -p "$work/argo-cd"
(cd "$mod" && tar cf - --exclude=./ui --exclude=./ui-test --exclude=./docs --exclude=./test --exclude=./manifests --exclude=./examples .) | tar xf - -C "$work/argo-cd"
chmod -R u+w "$work/argo-cd"
mkdir -p "$work/argo-cd/hack/dso-argocd"
cp "$src" "$work/argo-cd/hack/dso-argocd/main.go"
rc=0
(cd "$work/argo-cd" && go build -ldflags "-s -w" -o "$work/dso-argocd" ./hack/dso-argocd) || rc=$?
if [ "$rc" -ne 0 ]; then
  log "FAILED building dso-argocd (exit $rc) after $(( SECONDS - start )) s; retry with: hack/build-argocd-tools.sh"
  exit "$rc"
fi
mv "$work/dso-argocd" "$bin.partial" && mv "$bin.partial" "$bin"
log "built $bin in $(( SECONDS - start )) s"
echo "$bin"
