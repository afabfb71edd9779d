#!/usr/bin/env bash
# `make image`: builds the operator image localhost/deepseek-operator:<version> with podman,
# without any container registry:
#   1. Debian's podman, runc and mmdebstrap (hack/install-image-tools.sh, once);
#   2. the base root filesystem (hack/build-image-base.sh, cached outside the repo), imported
#      once as localhost/deepseek-operator-base:<its cache key>;
#   3. the project's wheels and their dependencies' wheels, built here on the host;
#   4. `podman build --network none` of operator/Dockerfile: the wheels go in with --no-index.
# Prints the image's name, size and the build's duration. Usage: hack/build-image.sh [IMAGE]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
log() { printf '[image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
start=$SECONDS

"$here/install-image-tools.sh"
base_tar=$("$here/build-image-base.sh")
base_key=$(basename "$(dirname "$base_tar")"); base_key=${base_key#image-base-}
base_image="localhost/deepseek-operator-base:$base_key"
podman=("$here/podman.sh")
if ! "${podman[@]}" image exists "$base_image"; then
  log "importing $base_tar as $base_image"
  "${podman[@]}" import --quiet "$base_tar" "$base_image" >/dev/null
fi

version=$("$python" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' "$root/pyproject.toml")
image=${1:-localhost/deepseek-operator:$version}
# What goes into the image; an image already built from the same inputs is not built again.
content=$( { echo "$base_image"; cd "$root" && find operator pyproject.toml -type f -not -path '*/__pycache__/*' \
  -not -name '*.pyc' -not -path '*.egg-info/*' | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -c1-16)
if "${podman[@]}" image exists "$image" \
  && [ "$("${podman[@]}" image inspect "$image" --format '{{index .Labels "dso.content"}}')" = "$content" ]; then
  log "$image is up to date (inputs $content)"
  echo "$image"
  exit 0
fi
context="$root/build/image"
rm -rf "$context"; mkdir -p "$context/wheels"
log "building the wheels (the project and its runtime dependencies, no extras)"
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$context/wheels" "$root" >&2

previous=$("${podman[@]}" image inspect "$image" --format '{{.Id}}' 2>/dev/null || true)
log "building $image from $base_image (no network)"
"${podman[@]}" build --quiet --isolation oci --network none --pull=never \
  --build-arg "BASE_IMAGE=$base_image" --label "dso.content=$content" -f "$root/operator/Dockerfile" -t "$image" "$context" >/dev/null
if [ -n "$previous" ] && [ "$previous" != "$("${podman[@]}" image inspect "$image" --format '{{.Id}}')" ]; then
  "${podman[@]}" rmi "$previous" >/dev/null 2>&1 || true  # the image this one replaces, now untagged
fi
size=$("${podman[@]}" image inspect "$image" --format '{{.Size}}')
log "built $image: $(( size / 1000000 )) MB in $(( SECONDS - start )) s"
echo "$image"
