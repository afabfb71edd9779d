#!/usr/bin/env bash
# Installs what the simulated cluster's monitoring (`sim up --with monitoring`, the autoscaling
# tests) needs from Debian's packages, as the machine's apt is configured: `prometheus` (2.42 on
# bookworm; gives /usr/bin/prometheus and /usr/bin/promtool; the package does not start its
# service here). Does nothing when both programs are there. About 15 s.
set -euo pipefail
missing=()
for p in prometheus promtool; do command -v "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "[monitoring-tools] installing prometheus with apt-get" >&2
start=$SECONDS
$sudo apt-get update -q >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends prometheus >&2
echo "[monitoring-tools] installed in $(( SECONDS - start )) s" >&2
