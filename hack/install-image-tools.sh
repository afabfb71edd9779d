#!/usr/bin/env bash
# Installs what `make image` needs from Debian's packages, as the machine's apt is configured:
# podman (builds and runs the image without a daemon or a registry), runc (crun cannot run here)
# and mmdebstrap (the base root filesystem). Does nothing when they are all there.
set -euo pipefail
missing=()
for p in podman runc mmdebstrap; do command -v "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "[image-tools] installing ${missing[*]} with apt-get" >&2
start=$SECONDS
$sudo apt-get update -q >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends podman runc mmdebstrap >&2
echo "[image-tools] installed in $(( SECONDS - start )) s" >&2
