"""The whole path: CRD applied, operator running, status recorded, deletion clean."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kopf.testing import KopfRunner
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deepseek_operator.api.constants import FIELD_MANAGER, GROUP, KIND, PLURAL, VERSION
from deepseek_operator.api.types import Phase
from deepseek_operator.kube import client as kube
from deepseek_operator.sim.tools import repo_root
from tests.support.plugin import Kubectl, wait_for


def _sample() -> dict[str, Any]:
    docs = yaml.safe_load_all((repo_root() / "manifests" / "samples" / "r1-distill-qwen-7b.yaml").read_text())
    doc = next(d for d in docs if d["kind"] == KIND)
    assert isinstance(doc, dict)
    return doc


def _get(api: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    assert isinstance(obj, dict)
    return obj


def _ready_condition(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions", []):
        if cond["type"] == "Ready":
            return dict(cond)
    return None


def test_operator_records_status_and_deletion_leaves_nothing(
    kube_api: Any, namespace: str, model_store: str, operator: Any, kubectl: Kubectl
) -> None:
    api, core = client.CustomObjectsApi(kube_api), client.CoreV1Api(kube_api)
    applied = _sample()
    api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "r1-qwen-7b",
        copy.deepcopy(applied),
        field_manager="test-user",
        _content_type="application/apply-patch+yaml",
    )

    obj = wait_for(
        lambda: (
            (o := _get(api, namespace, "r1-qwen-7b"))
            and (o.get("status") or {}).get("observedGeneration") == 1
            and o
        ),
        what="status.observedGeneration == 1",
    )
    ready = _ready_condition(obj)
    assert ready is not None and ready["observedGeneration"] == 1
    assert ready["status"] in ("True", "False") and ready["reason"] and ready["lastTransitionTime"]
    assert obj["status"]["phase"] in list(Phase)
    # What the user applied is exactly what they read back: the operator never writes spec.
    assert obj["spec"] == applied["spec"]

    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=r1-qwen-7b").items
    assert any(e.reason == "Applied" and e.involved_object.kind == KIND for e in events)

    # kubectl sees the resource through its short name and category, with the printer columns.
    table = kubectl("get", "dsd", "-n", namespace).stdout
    assert table.split()[:10] == [
        "NAME",
        "MODEL",
        "PRECISION",
        "GPUS",
        "REPLICAS",
        "READY",
        "PHASE",
        "P99",
        "ACCURACY",
        "AGE",
    ]
    assert "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B" in table and obj["status"]["phase"] in table
    assert "r1-qwen-7b" in kubectl("get", "deepseek", "-n", namespace).stdout

    # A spec change is a new generation, and the status follows it.
    changed = copy.deepcopy(applied)
    changed["spec"]["engine"]["maxOutputTokens"] = 2048
    api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "r1-qwen-7b",
        changed,
        field_manager="test-user",
        _content_type="application/apply-patch+yaml",
    )
    obj = wait_for(
        lambda: (
            (o := _get(api, namespace, "r1-qwen-7b")) and o["status"].get("observedGeneration") == 2 and o
        ),
        what="status.observedGeneration == 2",
    )
    assert _ready_condition(obj)["observedGeneration"] == 2  # type: ignore[index]
    assert obj["spec"] == changed["spec"]

    # Something owned by the resource goes with it.
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {
                "name": "owned-by-r1",
                "ownerReferences": [
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": KIND,
                        "name": "r1-qwen-7b",
                        "uid": obj["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            }
        },
        field_manager=FIELD_MANAGER,
    )
    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "r1-qwen-7b")
    wait_for(lambda: _get(api, namespace, "r1-qwen-7b") is None, what="the resource to be deleted")

    def configmap_gone() -> bool:
        try:
            core.read_namespaced_config_map("owned-by-r1", namespace)
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(configmap_gone, timeout=60, what="the owned ConfigMap to be garbage-collected")


def test_operator_resumes_existing_resources(
    kube_api: Any, namespace: str, crds: list[str], sim_cluster: Any
) -> None:
    """A resource created while no operator runs gets its status once one starts."""
    api = client.CustomObjectsApi(kube_api)
    body = _sample()
    body["metadata"]["name"] = "created-before"
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert (_get(api, namespace, "created-before") or {}).get("status") is None

    args = ["run", "--standalone", "--all-namespaces", "-m", "deepseek_operator.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        wait_for(
            lambda: (
                ((_get(api, namespace, "created-before") or {}).get("status") or {}).get("observedGeneration")
                == 1
            ),
            what="status after resume",
        )
    assert runner.exception is None
    assert runner.exit_code == 0


def test_deleting_the_namespace_is_quiet(
    kube_api: Any, new_namespace: Callable[[], str], operator: KopfRunner, caplog: pytest.LogCaptureFixture
) -> None:
    """A namespace deleted under a running resource: the namespace controller deletes the children
    and the resource in no set order, and the operator, seeing children gone, neither warns nor
    reports errors (the API server refuses new objects there, and nothing there can be fixed)."""
    api, core = client.CustomObjectsApi(kube_api), client.CoreV1Api(kube_api)
    ns = new_namespace()
    samples = repo_root() / "manifests" / "samples"
    (pvc,) = [d for d in yaml.safe_load_all((samples / "model-store-pvc.yaml").read_text()) if d]
    kube.server_side_apply(kube_api, pvc, "user", ns)
    body = _sample()
    body["spec"]["engine"] = {"runtime": "pytorch", "precision": "bf16"}
    api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        PLURAL,
        "r1-qwen-7b",
        body,
        field_manager="test-user",
        _content_type="application/apply-patch+yaml",
    )
    wait_for(
        lambda: ((_get(api, ns, "r1-qwen-7b") or {}).get("status") or {}).get("phase") == "Ready",
        timeout=60,
        what="the resource Ready",
    )
    caplog.set_level(logging.DEBUG)
    said = len(caplog.records)
    core.delete_namespace(ns)

    def gone() -> bool:
        try:
            core.read_namespace(ns)
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, timeout=90, what=f"namespace {ns} gone")
    time.sleep(2)  # what the last watch events set off

    def about(r: logging.LogRecord) -> bool:  # kopf's own records name their object in k8s_ref
        return ns in r.getMessage() or (getattr(r, "k8s_ref", None) or {}).get("namespace") == ns

    after = [r for r in caplog.records[said:] if about(r)]
    assert after, "the operator said nothing about the namespace's resource"
    said_out = [(r.levelno, r.getMessage()) for r in after]
    noisy = [m for level, m in said_out if level >= logging.WARNING or "ReconcileError" in m]
    assert noisy == [], "\n".join(noisy)
    # Refused once, the resource gets no more passes (each would be refused again) until it is gone.
    refused = [m for _, m in said_out if "no more passes for it" in m]
    assert len(refused) <= 1, "\n".join(refused)
