"""Encrypted weights against the real control plane: admission refuses what cannot be decrypted in
a pod (a uri source) and bad fields; a new revision whose key Secret is missing is named in
status and leaves the serving revision alone; once the Secret exists, the canary's pods carry the
decrypt init containers (the sample's TensorRT engine path: its build Job encrypts the engine)."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from deepseek_operator.api import names
from deepseek_operator.api.constants import GROUP, KIND, PLURAL, VERSION
from deepseek_operator.kube import client as kube
from deepseek_operator.sim.tools import repo_root
from tests.support.plugin import wait_for

pytestmark = pytest.mark.integration

SAMPLES = repo_root() / "manifests" / "samples"
ENCRYPTION = {"cipher": "sm4-gcm", "keySecret": {"name": "weights-key", "key": "key"}}


def _body() -> dict[str, Any]:
    (doc,) = [
        d
        for d in yaml.safe_load_all(Path(SAMPLES / "r1-distill-qwen-7b.yaml").read_text())
        if d and d["kind"] == KIND
    ]
    doc["spec"]["rollout"] = {"analysis": {"interval": "30s"}}  # no golden set to wait on
    return dict(doc)


def _get(api: Any, namespace: str, name: str) -> dict[str, Any]:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return dict(obj)


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def test_admission_refuses_what_cannot_be_decrypted_in_a_pod(
    kube_api: Any, namespace: str, crds: list[str]
) -> None:
    body = _body()
    body["spec"]["model"]["source"] = {"uri": "s3://bucket/r1-qwen-7b"}
    body["spec"]["model"]["encryption"] = copy.deepcopy(ENCRYPTION)
    with pytest.raises(client.exceptions.ApiException) as e:
        kube.server_side_apply(kube_api, body, "user", namespace)
    assert e.value.status == 422
    assert "spec.model.encryption: needs spec.model.source.pvc" in str(e.value.body)
    body = _body()
    body["spec"]["model"]["encryption"] = {"keySecret": {"name": "Bad_Name"}}
    with pytest.raises(client.exceptions.ApiException) as e:
        kube.server_side_apply(kube_api, body, "user", namespace)
    assert "spec.model.encryption.keySecret.name must be a DNS-1123 name" in str(e.value.body)
    body["spec"]["model"]["encryption"] = {"cipher": "des", "keySecret": {"name": "weights-key"}}
    with pytest.raises(client.exceptions.ApiException) as e:
        kube.server_side_apply(kube_api, body, "user", namespace)
    assert "spec.model.encryption.cipher" in str(e.value.body) and "sm4-gcm" in str(e.value.body)


def test_a_missing_key_secret_is_named_and_the_serving_revision_is_left_alone(
    kube_api: Any, namespace: str, model_store: str, operator: Any
) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    kube.server_side_apply(kube_api, _body(), "user", namespace)
    wait_for(
        lambda: (_get(kube_api, namespace, "r1-qwen-7b").get("status") or {}).get("phase") == "Ready",
        timeout=30,
        what="the unencrypted revision Ready",
    )
    before = _get(kube_api, namespace, "r1-qwen-7b")["status"]
    stable = before["revisions"]["stable"]
    workload = names.workload_name("r1-qwen-7b", stable)
    # The checkpoint is now encrypted on the volume; the user names a key Secret not created yet.
    encrypted = _body()
    encrypted["spec"]["model"]["encryption"] = copy.deepcopy(ENCRYPTION)
    kube.server_side_apply(kube_api, encrypted, "user", namespace)
    start = time.monotonic()

    def named() -> dict[str, Any] | None:
        status = _get(kube_api, namespace, "r1-qwen-7b").get("status") or {}
        cond = _condition(status, "Progressing")
        message = cond.get("message") or ""
        if cond.get("reason") == "SecretNotFound" and '"weights-key"' in message:
            return status
        return None

    status = wait_for(named, timeout=10, interval=0.1, what="SecretNotFound naming weights-key")
    print(f"missing key Secret named after {time.monotonic() - start:.2f} s")
    assert "spec.model.encryption.keySecret.name" in _condition(status, "Progressing")["message"]
    assert status["phase"] == "Degraded"  # still serving, the new revision waits
    assert _condition(status, "Ready")["status"] == "True"
    assert status["revisions"]["stable"] == stable and not status["revisions"].get("canary")
    deployments = apps.list_namespaced_deployment(namespace).items
    assert [d.metadata.name for d in deployments] == [workload]
    assert (deployments[0].status.ready_replicas or 0) >= 1
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=r1-qwen-7b").items
    assert any(e.reason == "SecretNotFound" and "weights-key" in e.message for e in events)
    # The Secret created: the new revision starts as a canary beside the stable one, its pods
    # decrypting with the key mounted into the decrypt init container only.
    core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "weights-key"}, "stringData": {"key": "dso-weights-key-v1:" + "ab" * 32}},
    )

    def canary() -> str:
        revisions = (_get(kube_api, namespace, "r1-qwen-7b").get("status") or {}).get("revisions") or {}
        return str(revisions.get("canary") or "")

    revision = wait_for(canary, timeout=15, what="a canary once the key Secret exists")
    dep = wait_for(
        lambda: next(
            (d for d in apps.list_namespaced_deployment(namespace).items if d.metadata.name != workload), None
        ),
        timeout=10,
        what="the canary's Deployment",
    )
    assert dep.metadata.name == names.workload_name("r1-qwen-7b", revision)
    pod = dep.spec.template.spec
    assert [c.name for c in pod.init_containers][:3] == [
        "decrypt-weights",
        "wait-for-engine",
        "decrypt-engine",
    ]
    # The engine path: the canary's build Job decrypts, builds and encrypts the engine into the cache.
    jobs = client.BatchV1Api(kube_api).list_namespaced_job(namespace).items
    (job,) = [j for j in jobs if (j.metadata.labels or {}).get(names.REVISION_LABEL) == revision]
    assert [c.name for c in job.spec.template.spec.containers] == ["encrypt-engine"]
    key_volumes = {
        v.name for v in pod.volumes if v.secret is not None and v.secret.secret_name == "weights-key"
    }
    assert key_volumes and {m.name for m in pod.containers[0].volume_mounts}.isdisjoint(key_volumes)
    assert apps.read_namespaced_deployment(workload, namespace).status.ready_replicas >= 1  # untouched
