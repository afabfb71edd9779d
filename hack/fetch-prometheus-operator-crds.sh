#!/usr/bin/env bash
# The Prometheus Operator's CRDs for ServiceMonitor, PodMonitor and PrometheusRule, which the
# chart's monitoring objects are checked against (kubeconform, tests/integration/
# test_monitoring_rules.py). They come from the Go module github.com/prometheus-operator/
# prometheus-operator at PROMETHEUS_OPERATOR_VERSION (its example/prometheus-operator-crd/), via
# `go mod download` (the Go module proxy), into the tool cache, keyed by that version; never
# fetched again when there. Prints the folder.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools.versions
source "$here/tools.versions"
cache_root=${DSO_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deepseek-operator}
out="$cache_root/tools/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION"
kinds=(servicemonitors podmonitors prometheusrules)
if [ -s "$out/monitoring.coreos.com_prometheusrules.yaml" ]; then echo "$out"; exit 0; fi
start=$SECONDS
dir=$(GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json \
  "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
rm -rf "$out.partial"; mkdir -p "$out.partial"
for k in "${kinds[@]}"; do
  cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$k.yaml" "$out.partial/"
done
chmod u+w "$out.partial"/*
rm -rf "$out"; mv "$out.partial" "$out"
printf '[prometheus-operator-crds] %s in %d s\n' "$out" $(( SECONDS - start )) >&2
echo "$out"
