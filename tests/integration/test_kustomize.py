"""manifests/install (kustomize) installs exactly what the chart does: `kubectl kustomize` of the
base equals `helm template` with the default values, and of the namespace-scoped overlay equals
it with watchNamespaces [llm] (plus the operator's Namespace). `make chart` rewrites them."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from deepseek_operator.sim.tools import repo_root, tool_path
from tests.support.chart import template

NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "deepseek-operator"}}


def _kustomize(folder: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [str(tool_path("kubectl")), "kustomize", str(repo_root() / folder)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects}


@pytest.mark.parametrize(
    ("folder", "values"),
    [
        ("manifests/install", {}),
        ("manifests/install/overlays/namespace-scoped", {"watchNamespaces": ["llm"]}),
    ],
)
def test_kustomize_renders_what_helm_renders(folder: str, values: dict[str, Any]) -> None:
    got = _by_key(_kustomize(folder))
    want = _by_key([NAMESPACE, *template(values, "deepseek-operator", "deepseek-operator", crds=True)])
    assert sorted(got) == sorted(want), "run `make chart` to render manifests/install again"
    for k, obj in want.items():
        assert got[k] == obj, f"{k} differs from the chart's: run `make chart`"
