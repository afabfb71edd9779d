"""Multi-node replicas on the real LeaderWorkerSet controller (sigs.k8s.io/lws, hack/tools.versions).

The simulated cluster runs with ``with_components=("lws",)`` (``sim up --with lws``): the real
controller, its CRDs and its webhooks. A DeepSeek-R1 resource on 2 nodes x 8 H100 then gets real
leader and worker pods, with the names, hostnames and LWS_* environment the controller gives them;
the test runs the leader's own host-list shell with replica 1's real environment, checks every
NCCL variable of the plan on every pod and on mpirun's ``-x`` list, and rolls a canary back that
answers worse. The pods run on kwok nodes (no processes), so each revision's leader address is
mapped, through the operator's endpoints file, to a stand-in OpenAI-compatible server
(tests/support/openai_standin.py) as trtllm-serve would answer.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from deepseek_operator.api import names
from deepseek_operator.api.constants import GROUP, KIND, PLURAL, VERSION
from deepseek_operator.kube import client as kube
from deepseek_operator.rollout.analysis import ENDPOINTS_ENV, map_revision
from deepseek_operator.sim.cluster import SimCluster
from tests.support.openai_standin import OpenAIStandIn, openai_standin
from tests.support.plugin import apply_crds, model_namespace, own_cluster, wait_for

RIGHT = {"17 * 23": " 391", "capital of France": " Paris", "Reply with OK": "OK"}
GOLDEN = (
    "\n".join(
        json.dumps(c)
        for c in (
            {"prompt": "What is 17 * 23? Answer with the number only.", "expect": {"contains": "391"}},
            {"prompt": "What is the capital of France?", "expect": {"regex": "(?i)paris"}},
            {"prompt": "Reply with OK.", "expect": {"equals": "OK"}},
        )
    )
    + "\n"
)
INTERVAL = 2.0


def _right(prompt: str) -> str:
    return next((v for k, v in RIGHT.items() if k in prompt), "?")


@pytest.fixture(scope="module")
def lws_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    """Six H100 nodes of 8 (two 2-node replicas and a 2-node canary) and the real LWS controller;
    the operator's client and kopf are pointed at it for the module, and back afterwards."""
    cluster = SimCluster(gpus="h100:6x8", cpu_nodes=1, with_components=("lws",))
    with own_cluster(cluster, tmp_path_factory.mktemp("lws") / "endpoints.yaml") as started:
        yield started


@pytest.fixture(scope="module")
def api(lws_cluster: SimCluster) -> Any:
    api = lws_cluster.api_client()
    apply_crds(api)  # the project's CRDs; the LeaderWorkerSet API is the controller's own
    return api


@pytest.fixture
def lws_operator(api: Any) -> Iterator[Any]:
    from kopf.testing import KopfRunner  # noqa: PLC0415

    args = ["run", "--standalone", "--all-namespaces", "-m", "deepseek_operator.handlers", "--verbose"]
    with KopfRunner(args, timeout=60) as runner:
        yield runner
    assert runner.exception is None, f"operator raised: {runner.exception!r}\n{runner.output[-4000:]}"
    assert runner.exit_code == 0, runner.output[-4000:]


@pytest.fixture
def ns(api: Any) -> Iterator[str]:
    with model_namespace(api, "lws", GOLDEN) as name:
        yield name


def _body() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": "r1"},
        "spec": {
            "model": {
                "id": "deepseek-ai/DeepSeek-R1",
                "source": {"pvc": {"claimName": "model-store", "path": "deepseek/r1"}},
                "revision": "main",
            },
            "gpu": {"products": ["NVIDIA-H100-80GB-HBM3"]},
            "replicas": 2,
            "rollout": {
                "canary": {"replicas": 1, "successfulAnalyses": 20},
                "analysis": {
                    "interval": f"{INTERVAL:g}s",
                    "failureLimit": 3,
                    "maxP99LatencyMs": 2000,
                    "maxErrorRate": 0.05,
                    "accuracy": {"goldenSet": {"configMapName": "golden"}, "minScore": 0.5, "maxDrop": 0.1},
                },
            },
        },
    }


class R1:
    def __init__(self, api: Any, ns: str) -> None:
        self.custom, self.core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        self.api, self.ns, self.body = api, ns, _body()

    def apply(self) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.ns,
            PLURAL,
            "r1",
            copy.deepcopy(self.body),
            field_manager="test-user",
            _content_type="application/apply-patch+yaml",
        )

    def status(self) -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, "r1").get("status")
            or {}
        )

    def revisions(self) -> dict[str, Any]:
        return dict(self.status().get("revisions") or {})

    def wait(self, predicate: Any, timeout: float, what: str) -> Any:
        return wait_for(
            predicate, timeout, what=what, detail=lambda: f"status: {json.dumps(self.status(), indent=1)}"
        )

    def map(self, revision: str, server: OpenAIStandIn) -> None:
        map_revision(os.environ[ENDPOINTS_ENV], f"{self.ns}/r1/{revision}", server.address, "")

    def pods(self, revision: str) -> list[Any]:
        selector = f"{names.REVISION_LABEL}={revision}"
        return [
            p
            for p in self.core.list_namespaced_pod(self.ns, label_selector=selector).items
            if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
        ]

    def plan(self, revision: str) -> dict[str, Any]:
        name = names.controller_revision_name("r1", revision)
        record = kube.request(
            self.api, "GET", f"/apis/apps/v1/namespaces/{self.ns}/controllerrevisions/{name}"
        )
        return dict(record["data"]["plan"])


def _env(pod: Any) -> dict[str, str]:
    return {e.name: e.value for e in pod.spec.containers[0].env or [] if e.value is not None}


def _host_list(leader: Any) -> list[str]:
    """Run the leader's own host-list shell (from its real command) with its real LWS environment."""
    script = leader.spec.containers[0].command[2]
    line = next(s for s in script.splitlines() if s.startswith("LEADER_HOST="))
    env = {**_env(leader), "PATH": os.environ["PATH"]}
    done = subprocess.run(
        ["bash", "-c", f'{line}; echo "$HOSTS"'], env=env, capture_output=True, text=True, check=True
    )
    return [h.rsplit(":", 1)[0] for h in done.stdout.strip().split(",")]


def test_r1_on_two_nodes_gets_real_groups_mpi_hosts_nccl_and_a_rollback(
    api: Any, ns: str, lws_operator: Any
) -> None:
    r = R1(api, ns)
    with openai_standin(_right) as good, openai_standin(lambda p: " I cannot say.") as bad:
        r.apply()
        stable = r.wait(lambda: r.revisions().get("stable"), 30, "a stable revision")
        r.map(stable, good)
        lws_name = names.workload_name("r1", stable)
        # The real controller: 2 groups of a leader and a worker, with its names and environment.
        pods = r.wait(
            lambda: len(p := r.pods(stable)) == 4 and p, 60, "four Running pods of the stable revision"
        )
        by_name = {p.metadata.name: p for p in pods}
        assert sorted(by_name) == sorted(f"{lws_name}-{g}{s}" for g in (0, 1) for s in ("", "-1"))
        assert len({p.spec.node_name for p in pods}) == 4  # one pod per 8-GPU node
        for name, pod in by_name.items():
            assert pod.spec.hostname == name and pod.spec.subdomain == lws_name
            assert _env(pod)["LWS_GROUP_SIZE"] == "2"
        leader1 = by_name[f"{lws_name}-1"]
        assert _env(leader1)["LWS_LEADER_ADDRESS"] == f"{lws_name}-1.{lws_name}.{ns}"
        # Replica 1's MPI host list names replica 1's pods (leader first), nothing of replica 0.
        assert _host_list(leader1) == [f"{lws_name}-1.{lws_name}.{ns}", f"{lws_name}-1-1.{lws_name}.{ns}"]
        assert _host_list(by_name[f"{lws_name}-0"]) == [
            f"{lws_name}-0.{lws_name}.{ns}",
            f"{lws_name}-0-1.{lws_name}.{ns}",
        ]
        # Every NCCL variable of the plan's profile reaches every rank: in every pod's environment,
        # and forwarded by mpirun -x to the ranks it starts through the agent.
        plan = r.plan(stable)
        assert (plan["tensor_parallel"], plan["expert_parallel"], plan["nodes_per_replica"]) == (16, 16, 2)
        nccl = {k for k, _ in plan["nccl_env"]} | {"NCCL_DEBUG"}
        assert len(nccl) > 1
        mpirun = next(
            s for s in leader1.spec.containers[0].command[2].splitlines() if s.startswith("exec mpirun")
        )
        for key in nccl:
            assert f"-x {key} " in mpirun, key
            for pod in pods:
                assert key in _env(pod), (pod.metadata.name, key)
        r.wait(
            lambda: r.status().get("phase") == "Ready" and r.revisions().get("verified"),
            60,
            "Ready and verified",
        )
        history = r.status()["analysis"]["history"]
        assert any(h["revision"] == stable and h.get("accuracy") == 1.0 for h in history)

        # A canary of a new checkpoint revision that answers worse is analysed and rolled back.
        r.body["spec"]["model"]["revision"] = "v2"
        r.apply()
        canary = r.wait(lambda: r.revisions().get("canary"), 30, "a canary revision")
        r.map(canary, bad)
        canary_pods = r.wait(
            lambda: len(p := r.pods(canary)) == 2 and p, 60, "the canary's leader and worker"
        )
        assert {p.metadata.name for p in canary_pods} == {
            f"{names.workload_name('r1', canary)}-0",
            f"{names.workload_name('r1', canary)}-0-1",
        }
        rolled = r.wait(lambda: r.status().get("lastRollback"), 60, "a rollback")
        assert (rolled["from"], rolled["to"]) == (canary, stable)
        assert "accuracy" in rolled["reason"] or "score" in rolled["reason"]
        assert any(p.startswith("What is") for p in bad.prompts)  # the canary was asked, through its leader
        revs = r.revisions()
        assert revs["stable"] == stable and canary in revs["failed"]
        wait_for(lambda: not r.pods(canary), timeout=60, what="the canary's pods gone")
        assert len(r.pods(stable)) == 4
