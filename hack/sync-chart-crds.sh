#!/usr/bin/env bash
# crds/ is the one source of the CRDs; the chart ships copies (Helm reads them from the chart's
# own crds/ folder, and a packaged chart cannot follow a link out of it). `make chart` copies
# them; tests/unit/test_chart_crds.py fails when a copy differs.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$root/charts/deepseek-operator/crds"
rm -f "$dest"/*.yaml
cp "$root"/crds/*.yaml "$dest/"
