"""The operator builds, updates, leaves alone, survives a kill, and deletes the serving stack
on the real control plane (the simulated cluster), for every sample."""

from __future__ import annotations

import copy
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY

from deepseek_operator.api import names
from deepseek_operator.api.constants import GROUP, KIND, PLURAL, VERSION
from deepseek_operator.kube import client as kube
from deepseek_operator.sim.cluster import SimCluster
from deepseek_operator.sim.tools import repo_root
from tests.support.plugin import Kubectl, start_operator_process, wait_for

SAMPLES = sorted(
    p for p in (repo_root() / "manifests" / "samples").glob("*.yaml") if f"kind: {KIND}" in p.read_text()
)
# (apiVersion, kind, plural) of every kind the operator may create.
CHILD_KINDS = [
    ("v1", "ConfigMap", "configmaps"),
    ("v1", "Service", "services"),
    ("apps/v1", "Deployment", "deployments"),
    ("batch/v1", "Job", "jobs"),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ("apps/v1", "ControllerRevision", "controllerrevisions"),
]


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _apply(api: Any, namespace: str, doc: dict[str, Any]) -> None:
    """Server-side apply as a user would (`kubectl apply --server-side`), under the user's field manager."""
    kube.server_side_apply(api, doc, "user", namespace)


def _dsd(api: Any, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    assert isinstance(obj, dict)
    return obj


def _children(api: Any, namespace: str, name: str) -> dict[str, list[dict[str, Any]]]:
    """Every object of the child kinds labelled as belonging to ``name``, by kind."""
    out: dict[str, list[dict[str, Any]]] = {}
    for api_version, kind, plural in CHILD_KINDS:
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        data = kube.request(
            api,
            "GET",
            f"{base}/namespaces/{namespace}/{plural}",
            query=[("labelSelector", names.label_selector(names.owned_selector(name)))],
        )
        out[kind] = data["items"]
    return out


def _status(api: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(((_dsd(api, namespace, name) or {}).get("status")) or {})


def _wait_phase(api: Any, namespace: str, name: str, phase: str, timeout: float = 90) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        obj = _dsd(api, namespace, name) or {"metadata": {}}
        status = obj.get("status") or {}
        current = status.get("observedGeneration") == obj["metadata"].get("generation")
        return status if current and status.get("phase") == phase else None

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (status := reached()) is not None:
            return status
        time.sleep(0.25)
    pytest.fail(f"{name} did not reach phase {phase} in {timeout}s; status: {_status(api, namespace, name)}")


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_sample_converges_with_owned_labelled_children(
    kube_api: Any, namespace: str, model_store: str, operator: Any, kubectl: Kubectl, sample: Path
) -> None:
    docs = _docs(sample)
    (dsd,) = [d for d in docs if d["kind"] == KIND]
    name = dsd["metadata"]["name"]
    for doc in docs:
        _apply(kube_api, namespace, doc)

    status = _wait_phase(kube_api, namespace, name, "Ready")
    obj = _dsd(kube_api, namespace, name)
    assert obj is not None
    assert obj["spec"] == dsd["spec"], "the operator must not add to or change spec"
    assert status["readyReplicas"] >= 1
    assert status["placement"]["gpusPerReplica"] >= 1
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"

    children = _children(kube_api, namespace, name)
    expected = {
        "ConfigMap": 1,
        "Service": 1,
        "Deployment": 1,
        "PodDisruptionBudget": 1,
        "Job": 1 if status["placement"]["runtime"] == "tensorrt-llm" else 0,
        "HorizontalPodAutoscaler": 1 if "autoscaling" in dsd["spec"] else 0,
        "ControllerRevision": 1,
    }
    assert {k: len(v) for k, v in children.items()} == expected
    for kind, items in children.items():
        for item in items:
            (ref,) = item["metadata"]["ownerReferences"]
            assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
                KIND,
                name,
                obj["metadata"]["uid"],
                True,
            ), kind
            assert item["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "deepseek-operator"
            assert item["metadata"]["labels"]["app.kubernetes.io/instance"] == name

    # The serving pods landed on the GPU product the spec asked for, through the real scheduler.
    pods = (
        client.CoreV1Api(kube_api)
        .list_namespaced_pod(
            namespace, label_selector=names.label_selector(names.selector(name, names.COMPONENT_SERVING))
        )
        .items
    )
    nodes = {n.metadata.name: n for n in client.CoreV1Api(kube_api).list_node().items}
    dep = client.AppsV1Api(kube_api).read_namespaced_deployment(
        names.workload_name(name, status["revisions"]["stable"]), namespace
    )
    terms = dep.spec.template.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    allowed = set(terms.node_selector_terms[0].match_expressions[0].values)
    assert status["placement"]["gpuProduct"] == dsd["spec"]["gpu"]["products"][0]  # first choice had room
    if status["placement"]["runtime"] == "tensorrt-llm":
        assert allowed == {status["placement"]["gpuProduct"]}  # an engine is built for one GPU type
    assert allowed <= set(dsd["spec"]["gpu"]["products"])
    for pod in pods:
        assert pod.status.phase == "Running"
        assert nodes[pod.spec.node_name].metadata.labels["nvidia.com/gpu.product"] in allowed

    table = kubectl("get", "dsd", name, "-n", namespace).stdout.splitlines()
    assert table[0].split() == [
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
    assert table[1].split()[:2] == [name, dsd["spec"]["model"]["id"]] and "Ready" in table[1].split()


def _seven_b() -> list[dict[str, Any]]:
    return _docs(repo_root() / "manifests" / "samples" / "r1-distill-qwen-7b.yaml")


def _replica_sets(api: Any, namespace: str, name: str) -> list[Any]:
    return list(
        client.AppsV1Api(api)
        .list_namespaced_replica_set(
            namespace, label_selector=names.label_selector(names.owned_selector(name))
        )
        .items
    )


def test_pod_affecting_changes_roll_new_pods_and_scaling_does_not(
    kube_api: Any, namespace: str, model_store: str, operator: Any
) -> None:
    docs = _seven_b()
    (dsd,) = [d for d in docs if d["kind"] == KIND]
    for doc in docs:
        _apply(kube_api, namespace, doc)
    first = _wait_phase(kube_api, namespace, "r1-qwen-7b", "Ready")["revisions"]["stable"]
    assert len(_replica_sets(kube_api, namespace, "r1-qwen-7b")) == 1

    # Replicas and analysis thresholds: same revision, same ReplicaSet, scaled.
    changed = copy.deepcopy(dsd)
    changed["spec"]["replicas"] = 2
    changed["spec"]["rollout"]["analysis"]["maxP99LatencyMs"] = 800
    _apply(kube_api, namespace, changed)
    status = wait_for(
        lambda: (
            (s := _status(kube_api, namespace, "r1-qwen-7b")).get("observedGeneration") == 2
            and s.get("readyReplicas") == 2
            and s
        ),
        timeout=60,
        what="2 ready replicas",
    )
    assert status["revisions"]["stable"] == first
    (rs,) = _replica_sets(kube_api, namespace, "r1-qwen-7b")
    assert rs.spec.replicas == 2

    # A pod-affecting field: a new revision, started as a canary of its own (one replica, its
    # own Deployment and ReplicaSet) beside the two stable replicas, which are not touched. Its
    # promotion needs passing analyses: tests/integration/test_rollout.py.
    changed["spec"]["engine"]["maxOutputTokens"] = 2048
    _apply(kube_api, namespace, changed)
    status = wait_for(
        lambda: (
            (s := _status(kube_api, namespace, "r1-qwen-7b")).get("observedGeneration") == 3
            and s.get("phase") == "Canary"
            and s.get("readyReplicas") == 3
            and s
        ),
        timeout=90,
        what="the new revision running as a canary",
    )
    second = status["revisions"]["canary"]
    assert second != first and status["revisions"]["stable"] == first
    sets = _replica_sets(kube_api, namespace, "r1-qwen-7b")
    assert len(sets) == 2
    by_revision = {r.spec.template.metadata.labels[names.REVISION_LABEL]: r for r in sets}
    assert by_revision[second].status.ready_replicas == 1
    assert (
        by_revision[first].status.ready_replicas == 2 and by_revision[first].metadata.uid == rs.metadata.uid
    )


def _resource_versions(api: Any, namespace: str, name: str) -> dict[str, str]:
    found = {f"{KIND}/{name}": (_dsd(api, namespace, name) or {})["metadata"]["resourceVersion"]}
    for kind, items in _children(api, namespace, name).items():
        for item in items:
            found[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    for rs in _replica_sets(api, namespace, name):
        found[f"ReplicaSet/{rs.metadata.name}"] = rs.metadata.resource_version
    return found


def test_idle_seconds_bring_no_write_while_analyses_run(
    kube_api: Any, namespace: str, model_store: str, operator: Any
) -> None:
    """The only time-driven work of a converged resource is its analyses: with the sample's
    analysis every 2 s instead of every 30 s, 24 idle seconds hold 12 of them (the sample's own
    interval would need 6 minutes) and bring no write to the resource or any of its children."""
    docs = _seven_b()
    for doc in docs:
        if doc["kind"] == KIND:
            doc["spec"]["rollout"]["analysis"]["interval"] = "2s"
        _apply(kube_api, namespace, doc)
    _wait_phase(kube_api, namespace, "r1-qwen-7b", "Ready")
    time.sleep(6)  # three analyses after convergence
    before = _resource_versions(kube_api, namespace, "r1-qwen-7b")
    assert len(before) >= 6
    analyses = _analyses(namespace, "r1-qwen-7b")
    time.sleep(24)
    assert _resource_versions(kube_api, namespace, "r1-qwen-7b") == before
    assert _analyses(namespace, "r1-qwen-7b") - analyses >= 8, "the analyses ran meanwhile"


def _analyses(namespace: str, name: str) -> float:
    """Analyses the operator (in this process) has run for the resource, whatever their verdict."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "deepseek_operator_analyses"
        for sample in metric.samples
        if sample.name.endswith("_total")
        and sample.labels.get("namespace") == namespace
        and sample.labels.get("name") == name
    )


@pytest.fixture
def operator_process(sim_cluster: SimCluster, crds: list[str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Operator processes the test starts (`deepseek-operator run`); all are killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _start_operator(sim_cluster: SimCluster, procs: list[subprocess.Popen[bytes]], log: Path) -> None:
    procs.append(start_operator_process(sim_cluster, log))


def test_operator_killed_mid_reconcile_converges_without_duplicates(
    kube_api: Any,
    namespace: str,
    model_store: str,
    sim_cluster: SimCluster,
    operator_process: list[Any],
    tmp_path: Path,
) -> None:
    log = tmp_path / "operator.log"
    _start_operator(sim_cluster, operator_process, log)
    time.sleep(3)  # logged in and watching
    for doc in _seven_b():
        _apply(kube_api, namespace, doc)
    # Kill it (SIGKILL, no clean-up) as soon as the first child object exists.
    wait_for(
        lambda: any(_children(kube_api, namespace, "r1-qwen-7b").values()),
        interval=0.02,
        what="the first child object",
    )
    operator_process[0].send_signal(signal.SIGKILL)
    operator_process[0].wait()
    partial = {k: len(v) for k, v in _children(kube_api, namespace, "r1-qwen-7b").items()}

    _start_operator(sim_cluster, operator_process, log)
    status = _wait_phase(kube_api, namespace, "r1-qwen-7b", "Ready")
    children = _children(kube_api, namespace, "r1-qwen-7b")
    counts = {k: len(v) for k, v in children.items()}
    assert counts == {
        "ConfigMap": 1,
        "Service": 1,
        "Deployment": 1,
        "Job": 1,
        "PodDisruptionBudget": 1,
        "HorizontalPodAutoscaler": 0,
        "ControllerRevision": 1,
    }, (partial, counts)
    assert status["observedGeneration"] == 1
    uid = (_dsd(kube_api, namespace, "r1-qwen-7b") or {})["metadata"]["uid"]
    for items in children.values():
        for item in items:
            assert item["metadata"]["ownerReferences"][0]["uid"] == uid
    operator_process[1].send_signal(signal.SIGTERM)
    assert operator_process[1].wait(timeout=30) == 0, log.read_text()[-3000:]


def test_spec_the_operator_cannot_serve_leaves_serving_untouched(
    kube_api: Any, namespace: str, model_store: str, operator: Any
) -> None:
    docs = _seven_b()
    (dsd,) = [d for d in docs if d["kind"] == KIND]
    for doc in docs:
        _apply(kube_api, namespace, doc)
    _wait_phase(kube_api, namespace, "r1-qwen-7b", "Ready")
    stable = _status(kube_api, namespace, "r1-qwen-7b")["revisions"]["stable"]
    dep_before = client.AppsV1Api(kube_api).read_namespaced_deployment(
        names.workload_name("r1-qwen-7b", stable), namespace
    )

    # Valid for the schema, but the engine path has nowhere to cache an engine built from a uri.
    bad = copy.deepcopy(dsd)
    bad["spec"]["model"]["source"] = {"uri": "s3://models/qwen-7b"}
    _apply(kube_api, namespace, bad)
    status = _wait_phase(kube_api, namespace, "r1-qwen-7b", "Degraded")
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Progressing"]["reason"] == "InvalidSpec"
    assert "spec.engine.cacheClaimName" in conds["Progressing"]["message"]
    assert conds["Ready"]["status"] == "True"  # the earlier revision still serves
    dep_after = client.AppsV1Api(kube_api).read_namespaced_deployment(
        names.workload_name("r1-qwen-7b", stable), namespace
    )
    # Untouched by the operator: same spec (generation) and the same applied content. (Its
    # resourceVersion may move: the Deployment controller still writes its status after the
    # pods said the revision is Ready.)
    assert dep_after.metadata.generation == dep_before.metadata.generation
    assert dep_after.metadata.annotations == dep_before.metadata.annotations
    assert dep_after.spec == dep_before.spec
    events = (
        client.CoreV1Api(kube_api)
        .list_namespaced_event(namespace, field_selector="involvedObject.name=r1-qwen-7b")
        .items
    )
    assert any(
        e.type == "Warning" and e.reason == "InvalidSpec" and "cacheClaimName" in e.message for e in events
    )

    # Fixing the spec brings it back.
    _apply(kube_api, namespace, dsd)
    _wait_phase(kube_api, namespace, "r1-qwen-7b", "Ready")


def test_deleting_the_resource_removes_everything_it_owns(
    kube_api: Any, namespace: str, model_store: str, operator: Any
) -> None:
    sample = repo_root() / "manifests" / "samples" / "r1-distill-llama-70b-fp8.yaml"
    for doc in _docs(sample):
        _apply(kube_api, namespace, doc)
    _wait_phase(kube_api, namespace, "r1-llama-70b", "Ready")
    assert sum(len(v) for v in _children(kube_api, namespace, "r1-llama-70b").values()) == 7

    client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "r1-llama-70b"
    )
    wait_for(lambda: _dsd(kube_api, namespace, "r1-llama-70b") is None, what="the resource gone")
    wait_for(
        lambda: (
            not any(_children(kube_api, namespace, "r1-llama-70b").values())
            and not _replica_sets(kube_api, namespace, "r1-llama-70b")
            and not client.CoreV1Api(kube_api)
            .list_namespaced_pod(namespace, label_selector=f"{names.DEPLOYMENT_LABEL}=r1-llama-70b")
            .items
        ),
        timeout=90,
        what="every owned object to be garbage-collected",
    )
