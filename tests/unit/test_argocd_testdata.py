"""The Argo CD health check's test objects are what the operator's pure loop writes (not written by
hand), and every copy of the script (argocd-cm entry, Argo CD Helm values, the chart's file) is the
one in Argo CD's layout. ``UPDATE_ARGOCD=1`` writes them again; review the diff.

Argo CD's verdicts on these objects are checked by tests/integration/test_argocd_health.py with
Argo CD's own code."""

from __future__ import annotations

import os

import pytest
import yaml

from tests.support import argocd as ac
from tests.support.argocd_cases import CASES, Case, capture

UPDATE = os.environ.get("UPDATE_ARGOCD") == "1"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_testdata_is_what_the_operator_writes(case: Case) -> None:
    path = ac.CHECK_DIR / "testdata" / f"{case.name}.yaml"
    want = ac.dump(capture(case.make()))
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(want)
    assert path.exists(), f"{path} is missing: run UPDATE_ARGOCD=1 pytest {__file__}"
    assert path.read_text() == want, f"{path} is not what the operator writes now: UPDATE_ARGOCD=1"


def test_health_test_lists_every_case_with_the_tables_status() -> None:
    tests = yaml.safe_load((ac.CHECK_DIR / "health_test.yaml").read_text())["tests"]
    listed = {t["inputPath"]: t["healthStatus"]["status"] for t in tests}
    assert listed == {f"testdata/{c.name}.yaml": c.health for c in CASES}
    on_disk = {p.name for p in (ac.CHECK_DIR / "testdata").iterdir()}
    assert on_disk == {f"{c.name}.yaml" for c in CASES}, "stale testdata files"
    # Every status Argo CD knows for this kind appears at least once.
    assert {c.health for c in CASES} == {"Healthy", "Progressing", "Degraded", "Suspended"}


def test_every_copy_of_the_script_is_the_one_in_argo_cds_layout() -> None:
    script = ac.SCRIPT.read_text()
    copies = {
        ac.ARGOCD_CM: ac.dump(ac.argocd_cm(script)),
        ac.HELM_VALUES: ac.dump(ac.helm_values(script)),
        ac.CHART_COPY: script,
    }
    for path, want in copies.items():
        if UPDATE:
            path.write_text(want)
        assert path.read_text() == want, f"{path} differs from {ac.SCRIPT}: UPDATE_ARGOCD=1"
    cm = yaml.safe_load(ac.ARGOCD_CM.read_text())
    assert cm["data"][ac.CM_KEY] == script
    assert yaml.safe_load(ac.HELM_VALUES.read_text())["configs"]["cm"][ac.CM_KEY] == script


def test_the_script_uses_nothing_outside_argo_cds_configmap_sandbox() -> None:
    """The sandbox opens only base, package, table and a safe os (os.time, os.date): no string,
    math or io (Argo CD v3.2 util/lua/lua.go runLuaWithResourceActionParameters). The real check
    is Argo CD's own run in tests/integration/test_argocd_health.py; this names the culprit."""
    code = "\n".join(line.split("--", 1)[0] for line in ac.SCRIPT.read_text().splitlines())
    for lib in ("string.", "math.", "io.", ":format(", ":find(", ":sub(", ":match(", "require("):
        assert lib not in code, f"health.lua uses {lib!r}, which Argo CD's ConfigMap sandbox lacks"
