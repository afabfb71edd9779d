"""The simulated cluster behaves like a real one: scheduler, controllers, GC, RBAC, GPU nodes."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deepseek_operator.api.constants import GPU_COUNT_LABEL, GPU_RESOURCE, GPU_TAINT_KEY
from deepseek_operator.builders.serving import GPU_TOLERATION
from deepseek_operator.sim.cluster import SimCluster
from tests.support.plugin import Kubectl, wait_for


def _gpu_pod(name: str, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "tolerations": [GPU_TOLERATION],
            "containers": [
                {"name": "main", "image": "busybox", "resources": {"limits": {GPU_RESOURCE: str(gpus)}}}
            ],
        },
    }


def test_reports_a_real_version(sim_cluster: SimCluster, kube_api: Any) -> None:
    info = client.VersionApi(kube_api).get_code()
    assert info.git_version == "v1.37.2"


def test_gpu_nodes_are_ready_with_gpus(kubectl: Kubectl) -> None:
    nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    gpu_nodes = {n["metadata"]["name"]: n for n in nodes if GPU_RESOURCE in n["status"]["allocatable"]}
    assert set(gpu_nodes) == {"gpu-h100-0", "gpu-h100-1", "gpu-a100-80gb-0", "gpu-h200-0"}
    for name, node in gpu_nodes.items():
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", name
        expected = "4" if "a100" in name else "8"
        assert node["status"]["allocatable"][GPU_RESOURCE] == expected
        assert node["metadata"]["labels"][GPU_COUNT_LABEL] == expected
        assert node["spec"]["taints"][0]["key"] == GPU_TAINT_KEY


def test_scheduler_places_gpu_pod_and_it_runs(kube_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, _gpu_pod("two-gpus", 2))
    pod = wait_for(
        lambda: (p := core.read_namespaced_pod("two-gpus", namespace)).status.phase == "Running" and p,
        what="pod two-gpus Running",
    )
    assert pod.spec.node_name.startswith("gpu-")


def test_pod_asking_for_more_gpus_than_any_node_stays_pending(kube_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, _gpu_pod("sixteen-gpus", 16))

    def unschedulable() -> Any:
        pod = core.read_namespaced_pod("sixteen-gpus", namespace)
        for cond in pod.status.conditions or []:
            if cond.type == "PodScheduled" and cond.status == "False":
                return cond
        return None

    cond = wait_for(unschedulable, what="the scheduler's verdict")
    assert cond.reason == "Unschedulable"
    assert f"Insufficient {GPU_RESOURCE}" in cond.message
    assert core.read_namespaced_pod("sixteen-gpus", namespace).status.phase == "Pending"


def test_pod_without_toleration_is_kept_off_gpu_nodes(kube_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    pod = _gpu_pod("no-toleration", 1)
    del pod["spec"]["tolerations"]
    core.create_namespaced_pod(namespace, pod)

    def verdict() -> Any:
        p = core.read_namespaced_pod("no-toleration", namespace)
        return next((c for c in p.status.conditions or [] if c.type == "PodScheduled"), None)

    cond = wait_for(verdict, what="the scheduler's verdict")
    assert cond.status == "False"
    assert "untolerated taint" in cond.message


def test_deployment_becomes_available_and_gc_removes_dependents(kube_api: Any, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "web", "image": "nginx"}]},
                },
            },
        },
    )

    def available() -> bool:
        d = apps.read_namespaced_deployment("web", namespace)
        conds = {c.type: c.status for c in d.status.conditions or []}
        return conds.get("Available") == "True" and d.status.available_replicas == 2

    wait_for(available, timeout=60, what="Deployment web Available")
    assert len(apps.list_namespaced_replica_set(namespace, label_selector="app=web").items) == 1
    assert len(core.list_namespaced_pod(namespace, label_selector="app=web").items) == 2

    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Background")
    wait_for(
        lambda: (
            not apps.list_namespaced_replica_set(namespace, label_selector="app=web").items
            and not core.list_namespaced_pod(namespace, label_selector="app=web").items
        ),
        timeout=60,
        what="the garbage collector to remove the ReplicaSet and pods",
    )


def test_owner_reference_cascade_for_any_object(kube_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {
                "name": "dependent",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
                ],
            }
        },
    )
    core.delete_namespaced_config_map("owner", namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_config_map("dependent", namespace)
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, timeout=60, what="the dependent ConfigMap to be collected")


def test_rbac_is_enforced_for_an_unprivileged_user(sim_cluster: SimCluster, namespace: str) -> None:
    core = client.CoreV1Api(sim_cluster.api_client(developer=True))
    with pytest.raises(ApiException) as info:
        core.list_namespaced_pod(namespace)
    assert info.value.status == 403
    assert "sim-developer" in str(info.value.body)


def test_unauthenticated_requests_are_refused(sim_cluster: SimCluster) -> None:
    assert sim_cluster.pki is not None
    ctx = ssl.create_default_context(cafile=str(sim_cluster.pki.ca_cert))
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(sim_cluster.server + "/api/v1/namespaces", context=ctx, timeout=10)
    assert info.value.code in (401, 403)
