"""Argo CD's own health code (gitops-engine health.GetResourceHealth with Argo CD's Lua overrides,
run by hack/argocd-check) on every phase and condition combination the operator writes
(tests/support/argocd_cases.py), in the sandbox Argo CD gives argocd-cm overrides.

No cluster is needed; this lives with the integration tests because it needs a built tool
(`make tools`). ``UPDATE_ARGOCD=1`` writes health_test.yaml from Argo CD's answers, but only when
each status is the one the table asks for."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import argocd as ac
from tests.support.argocd_cases import CASES, revisions_of

UPDATE = os.environ.get("UPDATE_ARGOCD") == "1"


@pytest.fixture(scope="module")
def dso_argocd() -> Path:
    return ac.dso_argocd()


@pytest.fixture(scope="module")
def verdicts(dso_argocd: Path) -> dict[str, dict[str, Any]]:
    """Argo CD's health of each testdata object, as health_test.yaml's runner gives it."""
    started = time.monotonic()
    results = ac.run(dso_argocd, "health-test", str(ac.CHECK_DIR))
    assert time.monotonic() - started < 10
    return {r["file"]: r for r in results}


def test_argo_cd_health_is_the_tables_for_every_combination(verdicts: dict[str, dict[str, Any]]) -> None:
    tests = []
    for case in CASES:
        got = verdicts.get(f"testdata/{case.name}.yaml")
        assert got is not None, f"health_test.yaml has no test for {case.name}"
        assert not got.get("error"), f"{case.name}: the script failed in Argo CD's sandbox: {got['error']}"
        assert got["status"] == case.health, f"{case.name}: Argo CD says {got['status']}: {got['message']}"
        names = revisions_of(case.make())
        for part in case.says:
            assert part.format(**names) in got["message"], f"{case.name}: {part!r} not in {got['message']!r}"
        tests.append(
            {
                "healthStatus": {"status": got["status"], "message": got["message"]},
                "inputPath": f"testdata/{case.name}.yaml",
            }
        )
    path = ac.CHECK_DIR / "health_test.yaml"
    want = ac.dump({"tests": tests})
    if UPDATE:
        path.write_text(want)
    # Argo CD's layout: its own runner (util/lua/health_test.go) compares with these exactly.
    for r in verdicts.values() if not UPDATE else ():
        assert (r["status"], r["message"]) == (r["wantStatus"], r["wantMessage"]), r["file"]
    assert path.read_text() == want, "health_test.yaml is stale: UPDATE_ARGOCD=1"


def test_the_argocd_cm_entry_is_what_argo_cds_settings_read(
    dso_argocd: Path, verdicts: dict[str, dict[str, Any]]
) -> None:
    """The same answers through argocd-cm: Argo CD's SettingsManager parses manifests/argocd's
    ConfigMap (the key, no useOpenLibs), then health.GetResourceHealth as the controller calls it."""
    files = [str(ac.CHECK_DIR / "testdata" / f"{c.name}.yaml") for c in CASES]
    via_cm = ac.run(dso_argocd, "health", "--argocd-cm", str(ac.ARGOCD_CM), *files)
    for case, r in zip(CASES, via_cm, strict=True):
        want = verdicts[f"testdata/{case.name}.yaml"]
        assert (r["status"], r["message"], r.get("error")) == (want["status"], want["message"], None)


def test_the_harness_enforces_the_sandbox(dso_argocd: Path, tmp_path: Path) -> None:
    """A control: the same object with a script calling string.format is an error in the sandbox,
    so a pass above means the script needs no open libs."""
    (tmp_path / "testdata").mkdir()
    (tmp_path / "testdata" / "ready.yaml").write_text((ac.CHECK_DIR / "testdata" / "ready.yaml").read_text())
    (tmp_path / "health.lua").write_text('return {status = "Healthy", message = string.format("%d", 1)}\n')
    (tmp_path / "health_test.yaml").write_text(
        yaml.safe_dump(
            {"tests": [{"inputPath": "testdata/ready.yaml", "healthStatus": {"status": "Healthy"}}]}
        )
    )
    (r,) = ac.run(dso_argocd, "health-test", str(tmp_path))
    assert r["status"] == "Unknown" and "string" in r["error"]


def test_the_applications_decode_as_argo_cds_own_type(dso_argocd: Path) -> None:
    """manifests/argocd's Applications, decoded strictly into Argo CD's v1alpha1.Application: the
    operator's (the chart, with its CRDs) syncs in an earlier wave than the models', both with
    server-side apply, and each points at a folder of this repository."""
    apps = {
        a["name"]: a
        for a in ac.run(dso_argocd, "application", *map(str, sorted(ac.ARGOCD.glob("application-*.yaml"))))
    }
    operator, models = apps["deepseek-operator"], apps["deepseek-models"]
    assert int(operator["syncWave"]) < int(models["syncWave"])
    for app in apps.values():
        assert "ServerSideApply=true" in app["syncOptions"] and app["automated"]
        assert (ac.ARGOCD.parents[1] / app["path"]).is_dir(), app["path"]
    assert operator["path"] == "charts/deepseek-operator" and models["path"] == "manifests/samples"
    assert "SkipDryRunOnMissingResource=true" in models["syncOptions"]
