"""Autoscaling end to end on the simulated cluster, with every real component of the chain:

dcgm-exporter's format (the stand-in, sim/monitoring.py) and a real Triton (its queue) ->
a real Prometheus (Debian's, 1 s scrapes) -> the real prometheus-adapter v0.12.0 with the rules
the project ships (builders/autoscaling.py), registered as the aggregated custom metrics API ->
the real HPA controller of kube-controller-manager (sync period 1 s here) -> the serving
Deployment or LeaderWorkerSet (the real LWS controller) -> pods kwok runs -> the resource's status.

The cluster runs with ``sim up --with monitoring,lws``'s components. Scale-down stabilization is
shortened in the resources' specs, the HPA sync period in this cluster only.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from deepseek_operator.api import names
from deepseek_operator.api.constants import GROUP, KIND, PLURAL, VERSION
from deepseek_operator.rollout.analysis import ENDPOINTS_ENV, map_revision
from deepseek_operator.sim.cluster import SimCluster
from deepseek_operator.sim.monitoring import Monitoring
from deepseek_operator.sim.standin import StandInServer
from tests.support.openai_standin import OpenAIStandIn, openai_standin
from tests.support.plugin import apply_crds, model_namespace, own_cluster, wait_for

GPU = "DCGM_FI_DEV_GPU_UTIL"
TRT = {"runtime": "tensorrt-llm", "precision": "bf16", "maxInputTokens": 2048, "maxOutputTokens": 256}
CASES = [("What is 2+2?", {"contains": "4"}, "4")]
GOLDEN = "\n".join(json.dumps({"prompt": p, "expect": e, "maxTokens": 8}) for p, e, _ in CASES) + "\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    c = SimCluster(gpus="h100:5x8", cpu_nodes=1, with_components=("monitoring", "lws"), hpa_sync_period="1s")
    with own_cluster(c, tmp_path_factory.mktemp("autoscaling") / "endpoints.yaml") as started:
        yield started


@pytest.fixture(scope="module")
def mon(cluster: SimCluster) -> Monitoring:
    assert cluster.monitoring is not None
    return cluster.monitoring  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def api(cluster: SimCluster) -> Any:
    api = cluster.api_client()
    apply_crds(api)
    return api


@pytest.fixture(scope="module")
def triton() -> Iterator[StandInServer]:
    server = StandInServer({p: a for p, _, a in CASES}, name="standin-autoscaling")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def operator(api: Any) -> Iterator[Any]:
    from kopf.testing import KopfRunner  # noqa: PLC0415

    args = ["run", "--standalone", "--all-namespaces", "-m", "deepseek_operator.handlers", "--verbose"]
    with KopfRunner(args, timeout=60) as runner:
        yield runner
    assert runner.exception is None, f"operator raised: {runner.exception!r}\n{runner.output[-4000:]}"
    assert runner.exit_code == 0, runner.output[-4000:]


@pytest.fixture
def ns(api: Any, operator: Any) -> Iterator[str]:
    with model_namespace(api, "as", GOLDEN) as name:
        yield name


def _spec(model: str, path: str, autoscaling: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "model": {
            "id": model,
            "source": {"pvc": {"claimName": "model-store", "path": path}},
            "revision": "main",
        },
        "gpu": {"products": ["NVIDIA-H100-80GB-HBM3"], **extra.pop("gpu", {})},
        "autoscaling": autoscaling,
        "rollout": {
            "canary": {"replicas": 1, "successfulAnalyses": 2},
            "analysis": {
                "interval": "1s",
                "failureLimit": 3,
                "maxP99LatencyMs": 5000,
                "maxErrorRate": 0.05,
                "accuracy": {"goldenSet": {"configMapName": "golden"}, "minScore": 0.5, "maxDrop": 0.5},
            },
        },
        **extra,
    }


def _qwen(auto: dict[str, Any]) -> dict[str, Any]:
    """A one-GPU TensorRT-LLM model (served by Triton: the stand-in answers its analyses)."""
    return _spec(
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "deepseek/r1-qwen-7b",
        auto,
        engine=TRT,
        gpu={"perReplica": 1},
    )


class Resource:
    def __init__(self, api: Any, ns: str, name: str, spec: dict[str, Any]) -> None:
        self.custom, self.core, self.apps = (
            client.CustomObjectsApi(api),
            client.CoreV1Api(api),
            client.AppsV1Api(api),
        )
        self.api, self.ns, self.name = api, ns, name
        self.body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name},
            "spec": spec,
        }

    def apply(self) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, self.name, copy.deepcopy(self.body),
            field_manager="test-user", _content_type="application/apply-patch+yaml",
        )  # fmt: skip

    def status(self) -> dict[str, Any]:
        got = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, self.name)
        return dict(got.get("status") or {})

    def condition(self, kind: str) -> dict[str, Any]:
        return next((c for c in self.status().get("conditions") or [] if c["type"] == kind), {})

    def wait(self, predicate: Any, timeout: float, what: str) -> Any:
        return wait_for(
            predicate, timeout, what=what, detail=lambda: f"status: {json.dumps(self.status(), indent=1)}"
        )

    def revisions(self) -> dict[str, Any]:
        return dict(self.status().get("revisions") or {})

    def map(self, revision: str, server: Any) -> None:
        if isinstance(server, OpenAIStandIn):  # trtllm-serve's OpenAI API (multi-node replicas)
            map_revision(os.environ[ENDPOINTS_ENV], f"{self.ns}/{self.name}/{revision}", server.address, "")
            return
        map_revision(
            os.environ[ENDPOINTS_ENV],
            f"{self.ns}/{self.name}/{revision}",
            server.http_address,
            server.metrics_url,
        )

    def running_pods(self, revision: str) -> list[Any]:
        selector = f"{names.REVISION_LABEL}={revision}"
        return [
            p
            for p in self.core.list_namespaced_pod(self.ns, label_selector=selector).items
            if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
        ]

    def deployment_replicas(self, revision: str) -> int:
        dep = self.apps.read_namespaced_deployment(names.workload_name(self.name, revision), self.ns)
        return int(dep.spec.replicas or 0)

    def first(self, server: Any) -> str:
        self.apply()
        stable = str(self.wait(lambda: self.revisions().get("stable"), 30, "a stable revision"))
        self.map(stable, server)
        self.wait(lambda: self.status().get("phase") == "Ready", 60, "phase Ready")
        return stable

    def scaled_to(self, revision: str, n: int) -> bool:
        """n pods Running and the status showing them (the HPA's count, ready replicas)."""
        st = self.status()
        auto = st.get("autoscaling") or {}
        return (
            len(self.running_pods(revision)) == n
            and st.get("readyReplicas") == n
            and auto.get("currentReplicas") == n
        )


def test_gpu_utilization_scales_the_deployment_and_status_names_a_missing_hop(
    api: Any, ns: str, mon: Monitoring, triton: StandInServer
) -> None:
    auto = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetGPUUtilization": 70,
        "scaleDownStabilizationSeconds": 3,
    }
    r = Resource(api, ns, "qwen", _qwen(auto))
    mon.exporter.set(GPU, 20, namespace=ns)
    stable = r.first(triton)
    r.wait(lambda: r.condition("Autoscaling").get("reason") == "Active", 30, "Autoscaling Active")
    assert f"{GPU} 20/70" in r.condition("Autoscaling")["message"]
    assert r.status()["autoscaling"]["metrics"] == [{"name": GPU, "target": "70", "current": "20"}]

    # Above the target: the HPA adds replicas up to maxReplicas; kwok runs them; status follows.
    mon.exporter.set(GPU, 90, namespace=ns)
    r.wait(lambda: r.scaled_to(stable, 3), 60, "3 replicas Running and in status")
    # At 3 replicas the HPA wants ceil(3 * 90/70) = 4 > maxReplicas; it says ScalingLimited on its
    # next sync after the third pod's metric arrives, which may come after the 3 are Running.
    r.wait(lambda: "limited" in r.condition("Autoscaling").get("message", ""), 60, "ScalingLimited in status")

    # A canary during autoscaling: it runs beside the 3; promoted, the new stable starts with 3.
    # Utilization at the target from here: the HPA keeps whatever count it finds (within its 10 %
    # tolerance), so a count of 3 on the promoted revision is the operator's, not a new scale-up.
    mon.exporter.set(GPU, 70, namespace=ns)
    r.body["spec"]["model"]["revision"] = "v2"
    r.apply()
    canary = str(r.wait(lambda: r.revisions().get("canary"), 30, "a canary"))
    r.map(canary, triton)
    assert r.deployment_replicas(stable) == 3
    r.wait(lambda: r.revisions().get("stable") == canary, 60, "the canary promoted")
    # A promotion writes its status first and then the counts (a crash in between is resumed
    # from the status), so the count may arrive just after the status says promoted.
    r.wait(lambda: r.deployment_replicas(canary) == 3, 20, "the count the HPA had reached, kept at promotion")
    r.wait(lambda: r.scaled_to(canary, 3), 60, "the new stable revision at 3 replicas")

    # Low utilization: down to minReplicas after the (shortened) stabilization window.
    mon.exporter.set(GPU, 10, namespace=ns)
    r.wait(lambda: r.scaled_to(canary, 1), 60, "scaled down to 1")

    # The adapter stops: the condition names that hop (the API does not answer / not Available).
    assert mon.adapter is not None
    mon.adapter.stop()
    try:
        r.wait(
            lambda: r.condition("Autoscaling").get("reason") == "MetricsUnavailable", 60, "MetricsUnavailable"
        )
        message = r.condition("Autoscaling")["message"]
        assert "prometheus-adapter" in message and (
            "not Available" in message or "does not answer" in message
        )
    finally:
        mon.adapter.start()
    r.wait(lambda: r.condition("Autoscaling").get("reason") == "Active", 60, "Active again")

    # No APIService at all: said as such.
    mon.unregister_api_service()
    try:
        r.wait(
            lambda: (
                "no APIService v1beta1.custom.metrics.k8s.io" in r.condition("Autoscaling").get("message", "")
            ),
            30,
            "MetricsUnavailable naming the missing APIService",
        )
        assert r.condition("Autoscaling")["status"] == "False"
    finally:
        mon.register_api_service()
        mon.wait_api_service()
    r.wait(lambda: r.condition("Autoscaling").get("reason") == "Active", 60, "Active again")


def _flood(address: str, stop: threading.Event, threads: int = 24) -> list[threading.Thread]:
    body = json.dumps({
        "inputs": [
            {"name": "text_input", "datatype": "BYTES", "shape": [1, 1], "data": ["What is 2+2?"]},
            {"name": "max_tokens", "datatype": "INT32", "shape": [1, 1], "data": [8]},
        ]
    }).encode()  # fmt: skip

    def run() -> None:
        while not stop.is_set():
            req = urllib.request.Request(
                f"http://{address}/v2/models/ensemble/infer", data=body, method="POST"
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    resp.read()
            except OSError:
                pass

    out = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for t in out:
        t.start()
    return out


def test_the_queue_signal_scales_up_while_gpu_utilization_stays_low(
    api: Any, ns: str, mon: Monitoring, triton: StandInServer
) -> None:
    auto = {
        "minReplicas": 1, "maxReplicas": 3, "targetGPUUtilization": 70, "scaleDownStabilizationSeconds": 3,
        "queue": {"signal": "pendingRequests", "target": 2},
    }  # fmt: skip
    r = Resource(api, ns, "queued", _qwen(auto))
    mon.exporter.set(GPU, 10, namespace=ns)
    stable = r.first(triton)
    (pod,) = r.running_pods(stable)
    # Prometheus scrapes Triton's own metrics as the pod's (a PodMonitor gives these labels).
    mon.prometheus.add_job(
        "triton", [triton.metrics_url.split("/")[2]], labels={"namespace": ns, "pod": pod.metadata.name}
    )
    stop = threading.Event()
    triton.set_behaviour(latency_ms=1500)
    threads = _flood(triton.http_address, stop)
    try:
        mon.prometheus.wait_for(
            f'sum(nv_inference_pending_request_count{{namespace="{ns}"}})',
            lambda v: bool(v) and v[0] >= 4,
            30,
        )
        r.wait(lambda: len(r.running_pods(stable)) >= 2, 60, "a scale-up on the queue")

        def metrics() -> dict[str, Any]:
            return {m["name"]: m for m in r.status()["autoscaling"]["metrics"]}

        r.wait(lambda: all("current" in m for m in metrics().values()), 30, "both metrics in status")
        assert float(metrics()[GPU]["current"]) < 70  # GPU utilization stayed low
        assert metrics()["triton_pending_requests"]["target"] == "2"
        assert float(metrics()["triton_pending_requests"]["current"].rstrip("m")) > 0
    finally:
        stop.set()
        triton.set_behaviour(latency_ms=0)
        for t in threads:
            t.join(35)
        mon.prometheus.remove_job("triton")


def test_a_leaderworkerset_scales_by_whole_groups(
    api: Any, ns: str, mon: Monitoring, triton: StandInServer
) -> None:
    auto = {
        "minReplicas": 1,
        "maxReplicas": 2,
        "targetGPUUtilization": 70,
        "scaleDownStabilizationSeconds": 3,
    }
    r = Resource(api, ns, "r1", _spec("deepseek-ai/DeepSeek-R1", "deepseek/r1", auto))
    mon.exporter.set(GPU, 20, namespace=ns)
    with openai_standin(lambda p: " 4") as server:
        _lws_scales(api, ns, mon, r, r.first(server))


def _lws_scales(api: Any, ns: str, mon: Monitoring, r: Resource, stable: str) -> None:
    lws = client.CustomObjectsApi(api)
    path = ("leaderworkerset.x-k8s.io", "v1", ns, "leaderworkersets", names.workload_name("r1", stable))
    assert lws.get_namespaced_custom_object(*path)["spec"]["replicas"] == 1
    size = len(r.running_pods(stable))
    assert size >= 2  # one group: a leader and its workers
    mon.exporter.set(GPU, 95, namespace=ns)
    r.wait(lambda: lws.get_namespaced_custom_object(*path)["spec"]["replicas"] == 2, 60, "2 groups")
    r.wait(lambda: len(r.running_pods(stable)) == 2 * size and r.status().get("readyReplicas") == 2, 60,
           "the second group Running and in status")  # fmt: skip
    mon.exporter.set(GPU, 5, namespace=ns)
    r.wait(lambda: lws.get_namespaced_custom_object(*path)["spec"]["replicas"] == 1, 60, "back to 1 group")
