"""Canary analysis and automatic rollback, against the real control plane and real Triton servers.

Every revision's pods run on kwok nodes (no network), so each revision is mapped, through the
operator's documented endpoints file, to a real Triton server (``StandInServer``: Triton from
nvidia-pytriton on the CPU) whose latency, error rate and answer quality each test controls.
"""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import REGISTRY

from deepseek_operator.api import names
from deepseek_operator.api.constants import GROUP, KIND, PLURAL, VERSION
from deepseek_operator.rollout.analysis import ENDPOINTS_ENV, map_revision
from deepseek_operator.sim.cluster import SimCluster
from deepseek_operator.sim.standin import StandInServer
from tests.support.plugin import start_operator_process, wait_for
from tests.support.pods import crash_loop

CASES = [
    ("What is 17 * 23? Answer with the number only.", {"contains": "391"}, "391"),
    ("What is the capital of France? Answer in one word.", {"regex": "(?i)paris"}, "Paris"),
    ("Is 97 a prime number? Answer yes or no.", {"regex": "(?i)\\byes\\b"}, "Yes"),
    ("Convert 2 kilometres to metres. Answer with the number only.", {"contains": "2000"}, "2000"),
]
ANSWERS = {prompt: answer for prompt, _, answer in CASES}
GOLDEN = "\n".join(json.dumps({"prompt": p, "expect": e, "maxTokens": 16}) for p, e, _ in CASES) + "\n"
INTERVAL = 2.0
FAILURE_LIMIT = 3


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, StandInServer]]:
    """Two real Triton servers: one for the good revision, one for the revision under test."""
    started: dict[str, StandInServer] = {}
    try:
        for role in ("good", "new"):
            started[role] = StandInServer(ANSWERS, name=f"standin-{role}")
            started[role].start()
        yield started
    finally:
        for server in started.values():
            server.stop()


class Endpoints:
    """The operator's endpoints file (revision -> Triton address), edited by the test."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        path.write_text("{}\n")

    def map(self, namespace: str, name: str, revision: str, server: StandInServer) -> None:
        with self.lock:
            map_revision(self.path, f"{namespace}/{name}/{revision}", server.http_address, server.metrics_url)


@pytest.fixture
def endpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, servers: dict[str, StandInServer]
) -> Endpoints:
    for server in servers.values():
        server.set_behaviour(latency_ms=0, error_rate=0, quality=1.0)
    eps = Endpoints(tmp_path / "endpoints.yaml")
    monkeypatch.setenv(ENDPOINTS_ENV, str(eps.path))
    return eps


def _body(name: str, replicas: int = 2, **rollout: Any) -> dict[str, Any]:
    analysis = {
        "interval": f"{INTERVAL:g}s",
        "failureLimit": FAILURE_LIMIT,
        "maxP99LatencyMs": 300,
        "maxErrorRate": 0.05,
        "accuracy": {
            "goldenSet": {"configMapName": "golden", "key": "golden.jsonl"},
            "minScore": 0.5,
            "maxDrop": 0.1,
        },
    }
    analysis.update(rollout.pop("analysis", {}))
    spec: dict[str, Any] = {
        "model": {
            "id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
            "source": {"pvc": {"claimName": "model-store", "path": "deepseek/r1-qwen-7b"}},
            "revision": "main",
        },
        "engine": {
            "runtime": "tensorrt-llm",
            "precision": "bf16",
            "maxInputTokens": 2048,
            "maxOutputTokens": 256,
        },
        "gpu": {"products": ["NVIDIA-H100-80GB-HBM3"], "perReplica": 1},
        "replicas": replicas,
        "rollout": {"canary": {"replicas": 1, "successfulAnalyses": 3}, "analysis": analysis, **rollout},
    }
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": name}, "spec": spec}


class Rollout:
    """One DeepSeekDeployment under test, with its namespace and the endpoints file."""

    def __init__(self, kube_api: Any, namespace: str, eps: Endpoints, body: dict[str, Any]) -> None:
        self.api = client.CustomObjectsApi(kube_api)
        self.core = client.CoreV1Api(kube_api)
        self.apps = client.AppsV1Api(kube_api)
        self.ns, self.eps, self.body = namespace, eps, body
        self.name = body["metadata"]["name"]

    def golden(self, text: str = GOLDEN) -> None:
        cm = {"metadata": {"name": "golden"}, "data": {"golden.jsonl": text}}
        try:
            self.core.replace_namespaced_config_map("golden", self.ns, cm)
        except client.exceptions.ApiException:
            self.core.create_namespaced_config_map(self.ns, cm)

    def apply(self) -> None:
        self.api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.ns,
            PLURAL,
            self.name,
            copy.deepcopy(self.body),
            field_manager="test-user",
            _content_type="application/apply-patch+yaml",
        )

    def get(self) -> dict[str, Any]:
        obj = self.api.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, self.name)
        assert isinstance(obj, dict)
        return obj

    def status(self) -> dict[str, Any]:
        return dict(self.get().get("status") or {})

    def revisions(self) -> dict[str, Any]:
        return dict(self.status().get("revisions") or {})

    def condition(self, kind: str) -> dict[str, Any]:
        return next((c for c in self.status().get("conditions") or [] if c["type"] == kind), {})

    def wait(self, predicate: Any, timeout: float, what: str) -> Any:
        """wait_for, with the resource's status in the failure message."""
        return wait_for(
            predicate, timeout, what=what, detail=lambda: f"status: {json.dumps(self.status(), indent=1)}"
        )

    def map(self, revision: str, server: StandInServer) -> None:
        self.eps.map(self.ns, self.name, revision, server)

    def first(self, server: StandInServer) -> str:
        """Deploy the first revision, serve it from ``server``, wait until it is Ready and verified."""
        self.golden()
        self.apply()
        stable = self.wait(lambda: self.revisions().get("stable"), timeout=30, what="a stable revision")
        self.map(stable, server)
        self.wait(
            lambda: self.status().get("phase") == "Ready" and self.revisions().get("verified"),
            timeout=60,
            what="the first revision Ready and verified by analysis",
        )
        return str(stable)

    def change(self, server: StandInServer, checkpoint: str = "v2") -> str:
        """Move to a new checkpoint revision; serve the canary from ``server``."""
        self.body["spec"]["model"]["revision"] = checkpoint
        self.apply()
        canary = self.wait(lambda: self.revisions().get("canary"), timeout=30, what="a canary revision")
        self.map(canary, server)
        return str(canary)

    def traffic_revisions(self) -> set[str]:
        """Revisions of the pods the Service sends traffic to (ready and labelled)."""
        selector = names.label_selector(
            {**names.selector(self.name, names.COMPONENT_SERVING), names.TRAFFIC_LABEL: names.TRAFFIC_ON}
        )
        pods = self.core.list_namespaced_pod(self.ns, label_selector=selector).items
        return {
            p.metadata.labels[names.REVISION_LABEL]
            for p in pods
            if p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        }

    def events(self, reason: str) -> list[Any]:
        items = self.core.list_namespaced_event(self.ns).items
        return [e for e in items if e.reason == reason and e.involved_object.kind == KIND]

    def workload_replicas(self, revision: str) -> int | None:
        try:
            dep = self.apps.read_namespaced_deployment(names.workload_name(self.name, revision), self.ns)
        except client.exceptions.ApiException as e:
            if e.status == 404:
                return None
            raise
        return int(dep.spec.replicas or 0)


def _metric(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class Rig:
    """Everything a rollout test needs: the cluster, a namespace with the model store, the
    endpoints file and the Triton servers."""

    kube_api: Any
    namespace: str
    endpoints: Endpoints
    servers: dict[str, StandInServer]

    def rollout(self, body: dict[str, Any]) -> Rollout:
        return Rollout(self.kube_api, self.namespace, self.endpoints, body)


@pytest.fixture
def rig(
    kube_api: Any, namespace: str, model_store: str, endpoints: Endpoints, servers: dict[str, StandInServer]
) -> Rig:
    return Rig(kube_api, namespace, endpoints, servers)


def test_good_canary_is_promoted_after_the_required_passes(
    rig: Rig,
    operator: Any,
) -> None:
    r = rig.rollout(_body("good", standbyReplicas=1))
    stable = r.first(rig.servers["good"])
    canary = r.change(rig.servers["new"])
    r.wait(lambda: r.status().get("phase") == "Canary", timeout=20, what="phase Canary")
    r.wait(lambda: r.traffic_revisions() == {stable, canary}, timeout=20, what="traffic on both revisions")
    promoted = wait_for(
        lambda: r.revisions().get("stable") == canary and r.revisions(), timeout=60, what="promotion"
    )
    assert promoted["previous"] == stable and promoted["canary"] == ""
    status = r.status()
    passes = [h for h in status["analysis"]["history"] if h["revision"] == canary and h["role"] == "canary"]
    assert [h["verdict"] for h in passes if h["verdict"] != "Inconclusive"][-3:] == ["Pass"] * 3
    assert passes[-1]["accuracy"] == 1.0 and passes[-1]["baselineAccuracy"] == 1.0
    event = r.wait(lambda: r.events("Promoted"), timeout=10, what="a Promoted event")
    assert canary in event[0].message and "3 consecutive passing analyses" in event[0].message
    # The new revision serves all traffic; the old one is kept warm (standbyReplicas 1) without traffic.
    r.wait(lambda: r.traffic_revisions() == {canary}, timeout=20, what="traffic on the promoted revision")
    assert r.workload_replicas(canary) == 2 and r.workload_replicas(stable) == 1
    r.wait(lambda: r.status().get("phase") == "Ready", timeout=20, what="phase Ready after promotion")


def test_slow_canary_is_rolled_back_in_time_and_not_retried(
    rig: Rig,
    operator: Any,
) -> None:
    r = rig.rollout(_body("slow"))
    stable = r.first(rig.servers["good"])
    r.body["spec"]["rollout"]["canary"]["successfulAnalyses"] = 20  # keep the canary a canary while it drifts
    before = _metric(
        "deepseek_operator_rollbacks_total",
        {"namespace": rig.namespace, "name": "slow", "reason": "latency", "role": "canary"},
    )
    canary = r.change(rig.servers["new"])
    wait_for(
        lambda: any(
            h["verdict"] == "Pass" and h["revision"] == canary for h in r.status()["analysis"]["history"]
        ),
        timeout=30,
        what="a passing canary analysis before the drift",
    )
    rig.servers["new"].set_behaviour(latency_ms=600)
    drift = time.monotonic()
    rolled = r.wait(lambda: r.status().get("lastRollback"), timeout=30, what="a rollback")
    took = time.monotonic() - drift
    assert took <= INTERVAL * FAILURE_LIMIT + 5, f"rolled back {took:.1f}s after the drift"
    assert (rolled["from"], rolled["to"]) == (canary, stable)
    assert "p99 latency" in rolled["reason"] and "3 consecutive analyses" in rolled["reason"]
    revs = r.revisions()
    assert (revs["stable"], revs["canary"], revs["failed"]) == (stable, "", [canary])
    wait_for(
        lambda: r.traffic_revisions() == {stable}, timeout=10, what="traffic back on the stable revision"
    )
    event = r.wait(lambda: r.events("RolledBack"), timeout=10, what="a RolledBack event")
    assert "p99" in event[0].message and canary in event[0].message
    assert (
        _metric(
            "deepseek_operator_rollbacks_total",
            {"namespace": rig.namespace, "name": "slow", "reason": "latency", "role": "canary"},
        )
        == before + 1
    )
    assert (
        _metric(
            "deepseek_operator_drift_to_rollback_seconds_count", {"namespace": rig.namespace, "name": "slow"}
        )
        >= 1
    )
    r.wait(lambda: r.status().get("phase") == "RolledBack", timeout=20, what="phase RolledBack")
    cond = r.condition("RolledBack")
    assert cond["status"] == "True" and canary in cond["message"]
    # Not retried: the spec still names the failed revision, and nothing starts it again.
    time.sleep(INTERVAL * 3)
    assert r.revisions()["canary"] == "" and r.workload_replicas(canary) is None
    assert len(r.events("RolledBack")) == 1
    # Until the retry annotation is set.
    r.body["metadata"]["annotations"] = {names.RETRY_ANNOTATION: "1"}
    rig.servers["new"].set_behaviour(latency_ms=0)
    r.apply()
    r.wait(lambda: r.revisions().get("canary") == canary, timeout=20, what="the canary retried")


def test_canary_whose_score_drops_more_than_max_drop_is_rolled_back(
    rig: Rig,
    operator: Any,
) -> None:
    r = rig.rollout(_body("quality"))
    stable = r.first(rig.servers["good"])
    rig.servers["new"].set_behaviour(quality=0.75)  # 3 of 4 right: above minScore 0.5, a drop of 0.25
    canary = r.change(rig.servers["new"])
    rolled = r.wait(lambda: r.status().get("lastRollback"), timeout=40, what="a rollback")
    assert (rolled["from"], rolled["to"]) == (canary, stable)
    assert "dropped 0.250 below the serving revision's 1.000 (maxDrop 0.1)" in rolled["reason"]
    assert r.status()["analysis"]["accuracy"] == 0.75


def test_canary_whose_error_rate_is_too_high_is_rolled_back(
    rig: Rig,
    operator: Any,
) -> None:
    r = rig.rollout(_body("errors"))
    stable = r.first(rig.servers["good"])
    rig.servers["new"].set_behaviour(error_rate=0.5)
    canary = r.change(rig.servers["new"])
    rolled = r.wait(lambda: r.status().get("lastRollback"), timeout=40, what="a rollback")
    assert (rolled["from"], rolled["to"]) == (canary, stable)
    assert "error rate 0.500 > 0.05" in rolled["reason"]


def test_promoted_revision_that_slows_down_is_rolled_back_to_the_previous_one(
    rig: Rig,
    operator: Any,
) -> None:
    r = rig.rollout(_body("drift", standbyReplicas=1))
    first = r.first(rig.servers["good"])
    second = r.change(rig.servers["new"])
    r.wait(lambda: r.revisions().get("stable") == second, timeout=60, what="promotion")
    r.wait(lambda: r.traffic_revisions() == {second}, timeout=20, what="traffic on the promoted revision")
    rig.servers["new"].set_behaviour(latency_ms=600)
    drift = time.monotonic()
    r.wait(lambda: r.traffic_revisions() == {first}, timeout=30, what="traffic back on the first revision")
    took = time.monotonic() - drift
    assert took <= INTERVAL * FAILURE_LIMIT + 5, f"traffic back {took:.1f}s after the drift"
    rolled = r.status()["lastRollback"]
    assert (rolled["from"], rolled["to"], rolled["role"]) == (second, first, "stable")
    revs = r.revisions()
    assert (revs["stable"], revs["failed"]) == (first, [second])
    assert r.workload_replicas(first) == 2  # the standby grew back to the serving size


def test_malformed_golden_set_is_a_condition_not_a_rollback(
    rig: Rig,
    operator: Any,
) -> None:
    r = rig.rollout(_body("badgolden"))
    stable = r.first(rig.servers["good"])
    r.body["spec"]["rollout"]["canary"]["successfulAnalyses"] = 20  # keep the canary a canary while it drifts
    canary = r.change(rig.servers["new"])
    r.golden('{"prompt": "What is 17 * 23?", "expect": {"contains": "391"}}\n{"prompt": "no expect"}\n')
    cond = wait_for(
        lambda: (c := r.condition("AnalysisPassing")).get("reason") == "GoldenSetInvalid" and c,
        timeout=20,
        what="AnalysisPassing GoldenSetInvalid",
    )
    assert cond["status"] == "Unknown"
    assert "ConfigMap" in cond["message"] and "line 2" in cond["message"] and "expect" in cond["message"]
    time.sleep(INTERVAL * (FAILURE_LIMIT + 2))
    status = r.status()
    assert not status.get("lastRollback")
    assert (status["revisions"]["stable"], status["revisions"]["canary"]) == (stable, canary)
    assert r.traffic_revisions() == {stable, canary}
    assert r.workload_replicas(stable) == 2
    assert r.events("GoldenSetInvalid")


def test_first_deployment_that_fails_analysis_is_failed(
    rig: Rig,
    operator: Any,
) -> None:
    r = rig.rollout(_body("firstbad"))
    rig.servers["new"].set_behaviour(latency_ms=600)
    r.golden()
    r.apply()
    stable = r.wait(lambda: r.revisions().get("stable"), timeout=30, what="a stable revision")
    r.map(stable, rig.servers["new"])
    r.wait(lambda: r.status().get("phase") == "Failed", timeout=40, what="phase Failed")
    ready = r.condition("Ready")
    assert ready["status"] == "False" and ready["reason"] == "AnalysisFailed"
    assert "no earlier revision to roll back to" in ready["message"] and "p99 latency" in ready["message"]
    assert not r.status().get("lastRollback")
    assert r.events("AnalysisFailed")


def _free_gpus(kube_api: Any, product: str) -> int:
    from deepseek_operator.kube.inventory import gather_inventory  # noqa: PLC0415

    return sum(n.gpus_free for n in gather_inventory(api=kube_api) if n.gpu_product == product)


def test_canary_without_free_gpus_replaces_one_serving_replica(
    rig: Rig,
    operator: Any,
) -> None:
    a100 = "NVIDIA-A100-SXM4-80GB"
    wait_for(lambda: _free_gpus(rig.kube_api, a100) == 4, timeout=60, what="the A100 node free")
    body = _body("full", replicas=4)
    body["spec"]["gpu"]["products"] = [a100]
    r = rig.rollout(body)
    stable = r.first(rig.servers["good"])
    assert _free_gpus(rig.kube_api, a100) == 0
    canary = r.change(rig.servers["new"])
    revs = wait_for(lambda: (v := r.revisions()).get("canaryMode") and v, timeout=10, what="canary mode")
    assert revs["canaryMode"] == "ReplaceReplica" and revs["lent"] == 1
    event = r.wait(lambda: r.events("CanaryStarted"), timeout=10, what="a CanaryStarted event")
    assert "no free GPUs" in event[0].message
    assert "replacing a stable replica" in r.condition("Progressing")["message"]
    r.wait(lambda: r.traffic_revisions() == {stable, canary}, timeout=30, what="the canary serving")
    assert r.workload_replicas(stable) == 3
    r.wait(lambda: r.revisions().get("stable") == canary, timeout=60, what="the rollout completing")
    r.wait(lambda: r.workload_replicas(canary) == 4, timeout=20, what="the promoted revision at full size")
    r.wait(lambda: r.status().get("readyReplicas") == 4, timeout=30, what="4 ready replicas")


def _start_operator(sim_cluster: SimCluster, eps: Endpoints, log: Path) -> subprocess.Popen[bytes]:
    return start_operator_process(sim_cluster, log, {ENDPOINTS_ENV: str(eps.path)})


def test_operator_killed_mid_analysis_keeps_history_and_rolls_back_once(
    rig: Rig,
    sim_cluster: SimCluster,
    crds: list[str],
    tmp_path: Path,
) -> None:
    log = tmp_path / "operator.log"
    proc = _start_operator(sim_cluster, rig.endpoints, log)
    try:
        r = rig.rollout(_body("restart"))
        stable = r.first(rig.servers["good"])
        r.body["spec"]["rollout"]["canary"]["successfulAnalyses"] = (
            20  # keep the canary a canary while it drifts
        )
        canary = r.change(rig.servers["new"])
        rig.servers["new"].set_behaviour(latency_ms=600)
        # The canary may wait for GPUs that an earlier test's namespace still holds while it is
        # deleted; the failing streak starts once its pod serves.
        r.wait(lambda: canary in r.traffic_revisions(), timeout=60, what="the canary serving")
        r.wait(
            lambda: r.status().get("analysis", {}).get("consecutiveFailures") == 2,
            timeout=30,
            what="two failing analyses",
        )
        before = [h for h in r.status()["analysis"]["history"] if h["revision"] == canary]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc = _start_operator(sim_cluster, rig.endpoints, log)
        rolled = wait_for(
            lambda: r.status().get("lastRollback"), timeout=40, what="the rollback after restart"
        )
        assert (rolled["from"], rolled["to"]) == (canary, stable)
        history = r.status()["analysis"]["history"]
        # Nothing lost: the analyses from before the kill are still there, and the rollback came
        # from the streak they started.
        assert all(entry in history for entry in before)
        time.sleep(INTERVAL * 3)
        # ... and the operator restarting once more does not roll back again.
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc = _start_operator(sim_cluster, rig.endpoints, log)
        time.sleep(INTERVAL * 3)
        assert r.status()["lastRollback"] == rolled
        assert r.revisions()["failed"] == [canary]
        assert len(r.events("RolledBack")) == 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def test_autoscaled_promotion_keeps_the_count_the_hpa_reached(
    rig: Rig,
    operator: Any,
) -> None:
    body = _body("scaled")
    body["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 4}
    r = rig.rollout(body)
    stable = r.first(rig.servers["good"])
    autoscaling = client.AutoscalingV2Api(rig.kube_api)
    hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler(names.serving_name("scaled"), rig.namespace)
    assert hpa.spec.scale_target_ref.name == names.workload_name("scaled", stable)
    # The HPA scales the stable revision through the scale subresource (here by hand: the simulated
    # cluster has no GPU metrics); the operator leaves that count alone.
    r.apps.patch_namespaced_deployment_scale(
        names.workload_name("scaled", stable),
        rig.namespace,
        {"spec": {"replicas": 3}},
        field_manager="hpa-stand-in",
    )
    time.sleep(6)
    assert r.workload_replicas(stable) == 3
    canary = r.change(rig.servers["new"])
    assert r.workload_replicas(canary) == 1  # the rollout owns only the canary's size
    r.wait(lambda: r.revisions().get("stable") == canary, timeout=60, what="promotion")
    r.wait(lambda: r.workload_replicas(canary) == 3, timeout=20, what="the count the HPA had reached")
    r.wait(
        lambda: (
            autoscaling.read_namespaced_horizontal_pod_autoscaler(
                names.serving_name("scaled"), rig.namespace
            ).spec.scale_target_ref.name
            == names.workload_name("scaled", canary)
        ),
        timeout=10,
        what="the HPA on the promoted revision",
    )
    time.sleep(6)
    assert r.workload_replicas(canary) == 3  # and the operator does not take it back


def test_canary_whose_pods_crash_loop_is_rolled_back(rig: Rig, operator: Any) -> None:
    r = rig.rollout(_body("crashloop"))
    stable = r.first(rig.servers["good"])
    r.body["spec"]["model"]["revision"] = "broken"
    r.apply()
    canary = r.wait(lambda: r.revisions().get("canary"), timeout=30, what="a canary")
    selector = names.label_selector(names.revision_selector("crashloop", canary))
    pod = r.wait(
        lambda: next(iter(r.core.list_namespaced_pod(rig.namespace, label_selector=selector).items), None),
        timeout=30,
        what="the canary pod",
    )
    crash_loop(r.core, rig.namespace, pod.metadata.name)  # kwok plays no crashes itself
    rolled = r.wait(lambda: r.status().get("lastRollback"), timeout=30, what="a rollback")
    assert (rolled["from"], rolled["to"]) == (canary, stable)
    assert "pods not starting" in rolled["reason"] and "CrashLoopBackOff" in rolled["reason"]


def test_spec_back_at_the_stable_revision_aborts_the_canary(rig: Rig, operator: Any) -> None:
    r = rig.rollout(_body("abort"))
    stable = r.first(rig.servers["good"])
    r.body["spec"]["rollout"]["canary"]["successfulAnalyses"] = 20
    canary = r.change(rig.servers["new"])
    r.wait(lambda: r.workload_replicas(canary) == 1, timeout=20, what="the canary running")
    r.body["spec"]["model"]["revision"] = "main"
    r.apply()
    r.wait(lambda: r.revisions().get("canary") == "", timeout=20, what="the canary aborted")
    r.wait(lambda: r.workload_replicas(canary) is None, timeout=20, what="the canary workload removed")
    revs = r.revisions()
    assert revs["stable"] == stable and revs["failed"] == []  # aborted, not failed: it may come back
    assert r.events("CanaryAborted") and not r.status().get("lastRollback")
    r.wait(lambda: r.traffic_revisions() == {stable}, timeout=20, what="traffic on the stable revision only")
