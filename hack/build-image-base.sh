#!/usr/bin/env bash
# Builds the operator image's base root filesystem with Debian's mmdebstrap, and caches it
# outside the repository, keyed by everything that goes into it:
#   ${DSO_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deepseek-operator}/tools/image-base-<key>/base.tar
# <key> hashes the suite, the variant, the package list and the apt sources file this machine
# already uses (so the same mirror, and no host name written into the project). A cached
# base.tar is never rebuilt. Prints the path of base.tar on stdout.
# Usage: hack/build-image-base.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools.versions
source "$here/tools.versions"

cache_root=${DSO_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deepseek-operator}
log() { printf '[image-base %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

sources=${DSO_APT_SOURCES:-}
if [ -z "$sources" ]; then
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [ -s "$f" ]; then sources=$f; break; fi
  done
fi
if [ -z "$sources" ] || [ ! -s "$sources" ]; then
  log "error: no apt sources file found (looked for /etc/apt/sources.list.d/debian.sources and /etc/apt/sources.list); set DSO_APT_SOURCES"
  exit 1
fi
if ! command -v mmdebstrap >/dev/null 2>&1; then
  log "error: mmdebstrap is not installed; run hack/install-image-tools.sh (apt-get install mmdebstrap podman runc)"
  exit 1
fi

key=$(printf '%s\n' "$IMAGE_BASE_SUITE" "$IMAGE_BASE_VARIANT" "$IMAGE_BASE_PACKAGES" | cat - "$sources" | sha256sum | cut -c1-12)
dir="$cache_root/tools/image-base-$key"
if [ -s "$dir/base.tar" ]; then
  echo "$dir/base.tar"
  exit 0
fi
log "building the base root filesystem ($IMAGE_BASE_SUITE, $IMAGE_BASE_VARIANT, $IMAGE_BASE_PACKAGES; cold: about 2 min)"
start=$SECONDS
mkdir -p "$dir"
rm -f "$dir/base.partial.tar"
mmdebstrap --quiet --variant="$IMAGE_BASE_VARIANT" --include="$IMAGE_BASE_PACKAGES" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
  "$IMAGE_BASE_SUITE" "$dir/base.partial.tar" "$sources" >&2
mv "$dir/base.partial.tar" "$dir/base.tar"
log "built $dir/base.tar ($(du -h "$dir/base.tar" | cut -f1)) in $(( SECONDS - start )) s"
echo "$dir/base.tar"
