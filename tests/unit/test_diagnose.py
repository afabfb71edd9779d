"""``deepseek-operator diagnose``: what goes into the archive, read through a fake API (the
integration test, tests/integration/test_observability.py, runs it on the simulated cluster)."""

from __future__ import annotations

import datetime as dt
import tarfile
from pathlib import Path
from typing import Any

import pytest

from deepseek_operator import diagnose_cli as dg
from deepseek_operator.errors import OperatorError

NS, NAME = "llm", "r1"
NOW = dt.datetime(2026, 12, 1, 8, 30, tzinfo=dt.UTC)


def _pod(name: str, restarts: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS, "managedFields": [{"manager": "x"}]},
        "spec": {
            "containers": [
                {
                    "name": "triton",
                    "env": [
                        {"name": "HF_TOKEN", "value": "hf_plaintext_oops"},
                        {"name": "AWS_SECRET_ACCESS_KEY", "value": "aws-oops"},
                        {"name": "MODEL_DIR", "value": "/models"},
                        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}},
                    ],
                }
            ]
        },
        "status": {"containerStatuses": [{"name": "triton", "restartCount": restarts}]},
    }


OBJECTS: dict[str, Any] = {
    f"/apis/serving.deepseek.ai/v1alpha1/namespaces/{NS}/deepseekdeployments/{NAME}": {
        "metadata": {"name": NAME, "namespace": NS, "generation": 2},
        "spec": {"replicas": 2},
        "status": {
            "phase": "RolledBack",
            "placement": {"gpuProduct": "NVIDIA-H100-80GB-HBM3"},
            "lastRollback": {
                "from": "bbb",
                "to": "aaa",
                "reason": "p99 latency 600 ms > 300 ms",
                "time": "t",
            },
            "conditions": [{"type": "Ready", "status": "True", "reason": "Serving", "message": "2/2"}],
        },
    },
    f"/apis/apps/v1/namespaces/{NS}/deployments": {"items": [{"metadata": {"name": "r1-aaa"}}]},
    f"/api/v1/namespaces/{NS}/configmaps": {
        "items": [
            {
                "metadata": {
                    "name": "r1-triton-repo-aaa",
                    "labels": {"app.kubernetes.io/component": "model-repository"},
                }
            },
            {"metadata": {"name": "golden-copy", "labels": {}}},
        ]
    },
    f"/apis/apps/v1/namespaces/{NS}/controllerrevisions": {
        "items": [
            {"metadata": {"name": "r1-bbb"}, "revision": 2},
            {"metadata": {"name": "r1-aaa"}, "revision": 1},
        ]
    },
    f"/api/v1/namespaces/{NS}/pods": {"items": [_pod("r1-aaa-0"), _pod("r1-aaa-1", restarts=1)]},
    f"/api/v1/namespaces/{NS}/events": {
        "items": [
            {
                "reason": "RolledBack",
                "involvedObject": {"kind": "DeepSeekDeployment", "name": NAME},
                "lastTimestamp": "2",
            },
            {"reason": "Pulled", "involvedObject": {"kind": "Pod", "name": "r1-aaa-0"}, "lastTimestamp": "1"},
            {
                "reason": "Other",
                "involvedObject": {"kind": "Pod", "name": "someone-else"},
                "lastTimestamp": "0",
            },
        ]
    },
    "/api/v1/nodes": {
        "items": [
            {
                "metadata": {
                    "name": "gpu-0",
                    "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "zone": "a"},
                },
                "status": {"allocatable": {"nvidia.com/gpu": "8"}},
            },
            {"metadata": {"name": "cpu-0", "labels": {}}, "status": {"allocatable": {"cpu": "8"}}},
        ]
    },
    "/api/v1/pods": {"items": []},
}


def get(path: str, query: list[tuple[str, str]] | None) -> Any:
    if path.endswith("/jobs"):
        raise dg.ReadError(f"GET {path}: HTTP 403: forbidden")
    if path in OBJECTS:
        return OBJECTS[path]
    if path.endswith(NAME) or "deepseekdeployments" in path:
        raise dg.ReadError(f"GET {path}: HTTP 404: not found")
    return {"items": []}


def get_text(path: str, query: list[tuple[str, str]] | None) -> str:
    params = dict(query or [])
    if params.get("previous"):
        raise dg.ReadError("HTTP 400: previous terminated container not found")
    return f"log of {path} {params['container']}\n"


def test_the_archive_holds_what_is_listed(tmp_path: Path) -> None:
    report = dg.collect(get, get_text, NS, NAME, now=lambda: NOW)
    files = report.files
    assert {
        "resource.yaml",
        "summary.txt",
        "events.yaml",
        "controllerrevisions.yaml",
        "objects/Deployment-r1-aaa.yaml",
        "objects/ConfigMap-golden-copy.yaml",
        "model-repository/r1-triton-repo-aaa.yaml",
        "pods/r1-aaa-0/pod.yaml",
        "pods/r1-aaa-0/triton.log",
        "pods/r1-aaa-0/triton.previous.log",
        "pods/r1-aaa-1/triton.previous.log",
        "nodes.yaml",
        "operator.log",
        "README.txt",
    } <= set(files)
    assert "p99 latency 600 ms" in files["summary.txt"] and "phase: RolledBack" in files["summary.txt"]
    # Revisions in order, events of the resource and its pods only, oldest first.
    assert files["controllerrevisions.yaml"].index("r1-aaa") < files["controllerrevisions.yaml"].index(
        "r1-bbb"
    )
    assert "someone-else" not in files["events.yaml"]
    assert files["events.yaml"].index("Pulled") < files["events.yaml"].index("RolledBack")
    assert "Pulled" in files["pods/r1-aaa-0/pod.yaml"]
    # A container that never restarted has no previous log, said so; one that did, the API's answer.
    assert "no previous instance" in files["pods/r1-aaa-0/triton.previous.log"]
    assert "previous terminated container not found" in files["pods/r1-aaa-1/triton.previous.log"]
    assert (
        "gpu-0" in files["nodes.yaml"]
        and "cpu-0" not in files["nodes.yaml"]
        and "zone" not in files["nodes.yaml"]
    )
    # What could not be read is said, and the rest is there.
    assert any("list Job" in p and "403" in p for p in report.problems)
    assert "could not be read:" in files["README.txt"] and "list Job" in files["README.txt"]
    out = tmp_path / "a.tar.gz"
    dg.write_archive(report, out, "folder")
    with tarfile.open(out) as tar:
        assert sorted(m.name for m in tar.getmembers()) == sorted(f"folder/{p}" for p in files)


def test_credentials_are_redacted_and_secret_references_kept() -> None:
    pod = dg.collect(get, get_text, NS, NAME, now=lambda: NOW).files["pods/r1-aaa-0/pod.yaml"]
    assert "hf_plaintext_oops" not in pod and "aws-oops" not in pod
    assert pod.count(dg.REDACTED) == 2
    assert "/models" in pod and "secretKeyRef" in pod and "managedFields" not in pod


def test_a_missing_resource_is_an_error_naming_it() -> None:
    with pytest.raises(OperatorError, match=r"DeepSeekDeployment llm/nope: .*404.*kubectl get dsd -A"):
        dg.collect(get, get_text, NS, "nope")


def test_alerts_about_the_resource_and_the_operator() -> None:
    alerts = [
        {"labels": {"alertname": "DeepSeekRolledBack", "namespace": NS, "name": NAME}},
        {"labels": {"alertname": "DeepSeekRolledBack", "namespace": NS, "name": "other"}},
        {"labels": {"alertname": "DeepSeekOperatorDown", "job": "deepseek-operator"}},
        {"labels": {"alertname": "KubeNodeNotReady", "node": "x"}},
    ]
    assert [a["labels"].get("name", "-") for a in dg.alerts_about(alerts, NS, NAME)] == [NAME, "-"]


def test_operator_log_lines_are_those_of_the_resource(tmp_path: Path) -> None:
    log = tmp_path / "op.log"
    log.write_text("llm/r1: Warning RolledBack: rolled back\nllm/r10: Normal Applied\nllm/r2: x\nstartup\n")
    report = dg.collect(get, get_text, NS, NAME, operator_logs=[str(log)], now=lambda: NOW)
    assert report.files["operator.log"] == f"[{log}] llm/r1: Warning RolledBack: rolled back\n"


def test_archive_name() -> None:
    assert dg.archive_name(NS, NAME, NOW) == "deepseek-diagnose-llm-r1-20261201T083000Z"
