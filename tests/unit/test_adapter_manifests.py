"""manifests/monitoring/prometheus-adapter-rules-*.yaml are the rules the operator's HPAs need
(builders/autoscaling.py), current with the code: `make chart` writes them."""

from __future__ import annotations

import importlib.util

import pytest
import yaml

from deepseek_operator.builders.autoscaling import LABEL_LAYOUTS, adapter_rules
from deepseek_operator.sim.tools import repo_root


@pytest.mark.parametrize("layout", LABEL_LAYOUTS)
def test_the_shipped_adapter_rules_are_current(layout: str) -> None:
    path = repo_root() / "manifests" / "monitoring" / f"prometheus-adapter-rules-{layout}.yaml"
    spec = importlib.util.spec_from_file_location("render", repo_root() / "hack" / "render-adapter-rules.py")
    assert spec is not None and spec.loader is not None
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    assert path.read_text() == render.manifest(layout), "stale: run `make chart`"
    (cm,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert yaml.safe_load(cm["data"]["config.yaml"]) == adapter_rules(layout)
