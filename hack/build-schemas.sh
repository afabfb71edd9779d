#!/usr/bin/env bash
# The Kubernetes JSON schemas kubeconform checks the chart against, offline: the PyPI package
# kubernetes-validate ships them (v1.25-v1.37) with `$ref`s into one shared definitions file;
# hack/convert-schemas.py makes each schema standalone, as kubeconform reads them. Cached by
# version, like the other tools; never rebuilt when there:
#   $cache/tools/kubeconform-schemas-<KUBERNETES_VALIDATE_VERSION>/<SCHEMA_KUBERNETES_VERSION>/<kind>-<group>-<version>.json
# Prints that folder.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools.versions
source "$here/tools.versions"
cache_root=${DSO_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deepseek-operator}
out="$cache_root/tools/kubeconform-schemas-$KUBERNETES_VALIDATE_VERSION/$SCHEMA_KUBERNETES_VERSION"
if [ -s "$out/deployment-apps-v1.json" ]; then echo "$out"; exit 0; fi
start=$SECONDS
venv="$cache_root/tools/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION/venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2
fi
src=$("$venv/bin/python" -c 'import kubernetes_validate, os; print(os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema"))')
rm -rf "$out.partial"
"$venv/bin/python" "$here/convert-schemas.py" "$src/v$SCHEMA_KUBERNETES_VERSION-local-strict" "$out.partial"
rm -rf "$out"; mv "$out.partial" "$out"
printf '[schemas] %s in %d s\n' "$out" $(( SECONDS - start )) >&2
echo "$out"
