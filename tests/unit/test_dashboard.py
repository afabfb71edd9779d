"""The Grafana dashboard (charts/deepseek-operator/dashboards/deepseek-operator.json): it loads,
every panel and query takes the Prometheus data source from the ``datasource`` variable, and
every query selects the deployment through the ``namespace`` and ``name`` variables (the
end-to-end test, tests/integration/test_observability.py, evaluates each one on Prometheus)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from deepseek_operator.sim.tools import repo_root

DASHBOARD = repo_root() / "charts" / "deepseek-operator" / "dashboards" / "deepseek-operator.json"
DS = {"type": "prometheus", "uid": "${datasource}"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def queries(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, target) of every query: panel targets and annotations."""
    out = [(f"panel {p['title']!r}", t) for p in dashboard["panels"] for t in p["targets"]]
    out += [(f"annotation {a['name']!r}", a) for a in dashboard["annotations"]["list"]]
    return out


def test_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["datasource"] == DS
    assert (
        variables["namespace"]["query"]["query"]
        == "label_values(deepseek_operator_resource_phase, namespace)"
    )
    assert variables["name"]["datasource"] == DS
    # The name list follows the namespace chosen.
    assert "$namespace" in variables["name"]["query"]["query"]


def test_every_panel_and_query_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"] == DS, panel["title"]
        assert panel["targets"], panel["title"]
    for where, target in queries(dashboard):
        assert target["datasource"] == DS, where


def test_every_query_selects_the_deployment_by_the_variables(dashboard: dict[str, Any]) -> None:
    for where, target in queries(dashboard):
        expr = target["expr"]
        assert 'namespace="$namespace"' in expr, where
        assert 'name="$name"' in expr, where
        # No other namespace or name is fixed anywhere.
        assert not re.search(r'\b(namespace|name)="(?!\$)', expr), where


def test_the_panels_the_issue_asks_for(dashboard: dict[str, Any]) -> None:
    titles = {p["title"] for p in dashboard["panels"]}
    assert {
        "Replicas and ready",
        "GPU utilization",
        "GPU memory use",
        "SM activity",
        "Latency p50 / p99",
        "Throughput per GPU",
        "Error and rejection rates",
        "Golden-set score and baseline",
    } <= titles
    assert {a["name"] for a in dashboard["annotations"]["list"]} == {"Analyses", "Rollbacks"}
    refs = [[t["refId"] for t in p["targets"]] for p in dashboard["panels"]]
    assert all(len(r) == len(set(r)) for r in refs)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_the_memory_band_of_the_seeds_is_marked(dashboard: dict[str, Any]) -> None:
    (panel,) = [p for p in dashboard["panels"] if p["title"] == "GPU memory use"]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 0.75, 0.85]
    assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line+area"


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, panel["title"]
        cells |= mine


def test_annotations_put_each_analysis_and_rollback_at_its_own_time(dashboard: dict[str, Any]) -> None:
    """Grafana's Prometheus annotations take the series value as the time with useValueForTime
    ("Series value as timestamp", in milliseconds: grafana/grafana's Prometheus annotation
    editor says to multiply seconds by 1000)."""
    marks = {a["name"]: a for a in dashboard["annotations"]["list"]}
    assert marks["Analyses"]["expr"].startswith("deepseek_operator_analysis_last_run_timestamp_seconds{")
    assert marks["Rollbacks"]["expr"].startswith("deepseek_operator_last_rollback_timestamp_seconds{")
    for mark in marks.values():
        assert mark["useValueForTime"] is True and mark["expr"].endswith("* 1000")
