"""Paths of the Argo CD health check and its copies, and the dso-argocd program (Argo CD's own
health and diff code, hack/argocd-check) that the tests run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from deepseek_operator.sim.tools import repo_root

GROUP, KIND = "serving.deepseek.ai", "DeepSeekDeployment"
# The argocd-cm key of a health override: resource.customizations.health.<group>_<kind>
# (Argo CD v3.2 util/settings/settings.go, appendResourceOverridesFromSplitKeys).
CM_KEY = f"resource.customizations.health.{GROUP}_{KIND}"
ARGOCD = repo_root() / "manifests" / "argocd"
CHECK_DIR = ARGOCD / "resource_customizations" / GROUP / KIND  # Argo CD's own layout
SCRIPT = CHECK_DIR / "health.lua"
ARGOCD_CM = ARGOCD / "argocd-cm.yaml"
HELM_VALUES = ARGOCD / "argo-cd-helm-values.yaml"
CHART_COPY = repo_root() / "charts" / "deepseek-operator" / "files" / "argocd-health.lua"


def argocd_cm(script: str) -> dict[str, Any]:
    """The argocd-cm entries the check needs (to merge into Argo CD's own argocd-cm)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "argocd-cm",
            "namespace": "argocd",
            "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"},
        },
        "data": {CM_KEY: script},
    }


def helm_values(script: str) -> dict[str, Any]:
    """Values for Argo CD's own Helm chart (argo/argo-cd: ``configs.cm`` entries go into argocd-cm)."""
    return {"configs": {"cm": {CM_KEY: script}}}


class _Literal(str):
    pass


def _literal(dumper: yaml.SafeDumper, data: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")


yaml.SafeDumper.add_representer(_Literal, _literal)


def dump(doc: Any) -> str:
    """YAML with multi-line strings as literal blocks (readable Lua in a ConfigMap)."""

    def lit(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: lit(x) for k, x in v.items()}
        if isinstance(v, list):
            return [lit(x) for x in v]
        if isinstance(v, str) and "\n" in v:
            return _Literal(v)
        return v

    return yaml.safe_dump(lit(doc), sort_keys=False, width=1000)


def dso_argocd() -> Path:
    """The cached dso-argocd binary (hack/build-argocd-tools.sh prints it; builds it when absent)."""
    out = subprocess.run(
        [str(repo_root() / "hack" / "build-argocd-tools.sh")], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def run(binary: Path, *args: str) -> Any:
    """Run dso-argocd and parse its JSON answer (a failure shows its stderr)."""
    out = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise AssertionError(f"dso-argocd {' '.join(args[:2])} failed ({out.returncode}): {out.stderr}")
    return json.loads(out.stdout)
