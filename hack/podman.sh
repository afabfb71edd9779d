#!/usr/bin/env bash
# podman with the project's settings (hack/podman/containers.conf: runc, ulimits the sandbox grants).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export CONTAINERS_CONF="$here/podman/containers.conf"
exec podman --runtime runc "$@"
