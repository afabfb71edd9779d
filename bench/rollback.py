"""Time from drift onset to traffic back on the good revision, on the simulated cluster.

Starts the simulated control plane (kube-apiserver, etcd, controller-manager, scheduler, kwok
GPU nodes), the operator (``deepseek-operator run`` in a child process) and two real Triton
servers (nvidia-pytriton on the CPU) that stand in for the revisions' pods. For each scenario
it deploys a fresh DeepSeekDeployment, lets the new revision pass analysis, then makes the
revision under test slow (its p99 goes over ``maxP99LatencyMs``) and measures, from that
moment:

- **decision**: until ``status.lastRollback`` is written;
- **traffic**: until the Service's EndpointSlices list only ready pods of the good revision
  (what kube-proxy routes to), i.e. traffic is back on the good revision.

Scenarios:

- ``canary``: the canary drifts; the stable revision is still serving, so traffic only has to
  leave the canary;
- ``promoted-standby``: a promoted revision drifts; the previous revision is kept warm
  (``standbyReplicas`` = replicas), so moving back is a label change;
- ``promoted-cold``: the same without a standby; the previous revision's pods start from zero.
  Pods on kwok nodes start in about a second; a real Triton/TensorRT-LLM pod loading a model
  takes minutes, which is what a standby saves (the figure here is the operator's part only).

Usage::

    .venv/bin/python bench/rollback.py                   # 3 runs of each scenario, interval 2s
    .venv/bin/python bench/rollback.py --runs 5 --interval 5s --failure-limit 3

Prints a table; the figures are in docs/rollout.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from deepseek_operator.api import names
from deepseek_operator.api.constants import GROUP, KIND, PLURAL, VERSION
from deepseek_operator.api.spec import parse_duration
from deepseek_operator.kube import client as kube
from deepseek_operator.rollout.analysis import ENDPOINTS_ENV, map_revision
from deepseek_operator.sim.cluster import SimCluster
from deepseek_operator.sim.standin import StandInServer
from deepseek_operator.sim.tools import repo_root

NAMESPACE = "bench"
PROMPTS = {
    "What is 17 * 23? Answer with the number only.": ("391", {"contains": "391"}),
    "What is the capital of France? Answer in one word.": ("Paris", {"regex": "(?i)paris"}),
    "Convert 2 kilometres to metres. Answer with the number only.": ("2000", {"contains": "2000"}),
}


def _say(text: str) -> None:
    print(text, flush=True)


class Bench:
    def __init__(self, api: Any, endpoints: Path, interval: str, failure_limit: int) -> None:
        self.api, self.endpoints = api, endpoints
        self.interval, self.failure_limit = interval, failure_limit
        self.good = StandInServer({p: a for p, (a, _) in PROMPTS.items()}, name="bench-good")
        self.new = StandInServer({p: a for p, (a, _) in PROMPTS.items()}, name="bench-new")

    def _path(self, name: str = "") -> str:
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}"
        return f"{base}/{name}" if name else base

    def status(self, name: str) -> dict[str, Any]:
        obj = kube.request(self.api, "GET", self._path(name))
        return dict(obj.get("status") or {})

    def wait(self, name: str, predicate: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(name)
            if got := predicate(status):
                return got
            time.sleep(0.1)
        raise SystemExit(f"{name}: timed out waiting for {what}: {json.dumps(self.status(name))[:2000]}")

    def map(self, name: str, revision: str, server: StandInServer) -> None:
        map_revision(
            self.endpoints, f"{NAMESPACE}/{name}/{revision}", server.http_address, server.metrics_url
        )

    def apply(self, name: str, checkpoint: str, standby: int, successes: int) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "model": {
                    "id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
                    "source": {"pvc": {"claimName": "model-store", "path": "deepseek/r1-qwen-7b"}},
                    "revision": checkpoint,
                },
                "engine": {"runtime": "tensorrt-llm", "precision": "bf16"},
                "gpu": {"products": ["NVIDIA-H100-80GB-HBM3"], "perReplica": 1},
                "replicas": 2,
                "rollout": {
                    "canary": {"replicas": 1, "successfulAnalyses": successes},
                    "analysis": {
                        "interval": self.interval,
                        "failureLimit": self.failure_limit,
                        "maxP99LatencyMs": 300,
                        "accuracy": {"goldenSet": {"configMapName": "golden"}, "minScore": 0.5},
                    },
                    "standbyReplicas": standby,
                },
            },
        }
        kube.server_side_apply(self.api, body, "bench")

    def traffic(self, name: str) -> set[str]:
        """Revisions of the ready endpoints the Service routes to."""
        slices = kube.request(
            self.api,
            "GET",
            f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices",
            query=[("labelSelector", f"kubernetes.io/service-name={names.serving_name(name)}")],
        )
        pods = {
            p["metadata"]["name"]: p["metadata"]["labels"].get(names.REVISION_LABEL)
            for p in kube.request(
                self.api,
                "GET",
                f"/api/v1/namespaces/{NAMESPACE}/pods",
                query=[("labelSelector", f"{names.DEPLOYMENT_LABEL}={name}")],
            )["items"]
        }
        found = set()
        for s in slices.get("items", []):
            for ep in s.get("endpoints") or []:
                ref = (ep.get("targetRef") or {}).get("name")
                if (ep.get("conditions") or {}).get("ready") and ref:
                    found.add(pods.get(ref, "?"))
        return found

    def run(self, scenario: str, index: int) -> tuple[float, float]:
        name = f"{scenario}-{index}"
        self.good.set_behaviour()
        self.new.set_behaviour()
        promoted = scenario != "canary"
        standby = 2 if scenario == "promoted-standby" else 0
        self.apply(name, "main", standby, successes=2)
        first = self.wait(name, lambda s: (s.get("revisions") or {}).get("stable"), 60, "a stable revision")
        self.map(name, first, self.good)
        self.wait(
            name, lambda s: (s.get("revisions") or {}).get("verified"), 60, "the first revision verified"
        )
        self.apply(name, "v2", standby, successes=2 if promoted else 50)
        second = self.wait(name, lambda s: (s.get("revisions") or {}).get("canary"), 60, "a canary")
        self.map(name, second, self.new)
        if promoted:
            self.wait(name, lambda s: (s.get("revisions") or {}).get("stable") == second, 90, "promotion")
            deadline = time.monotonic() + 60
            while self.traffic(name) != {second} and time.monotonic() < deadline:
                time.sleep(0.2)
            if standby:
                self.wait(
                    name,
                    lambda s: s.get("readyReplicas") == 2,
                    60,
                    "the promoted revision ready",
                )
                time.sleep(3)  # the standby's pods ready too
        else:
            self.wait(
                name,
                lambda s: any(
                    h.get("revision") == second and h.get("verdict") == "Pass"
                    for h in (s.get("analysis") or {}).get("history") or []
                ),
                60,
                "a passing canary analysis",
            )
        self.new.set_behaviour(latency_ms=600)
        onset = time.monotonic()
        decision = traffic = None
        deadline = onset + 120
        while (decision is None or traffic is None) and time.monotonic() < deadline:
            if decision is None and self.status(name).get("lastRollback"):
                decision = time.monotonic() - onset
            if traffic is None and self.traffic(name) == {first}:
                traffic = time.monotonic() - onset
            time.sleep(0.05)
        if decision is None or traffic is None:
            raise SystemExit(f"{name}: no rollback within 120 s: {json.dumps(self.status(name))[:2000]}")
        kube.request(self.api, "DELETE", self._path(name))
        return decision, traffic


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--interval", default="2s")
    parser.add_argument("--failure-limit", type=int, default=3)
    parser.add_argument("--scenarios", nargs="+", default=["canary", "promoted-standby", "promoted-cold"])
    args = parser.parse_args()

    root = repo_root()
    cluster = SimCluster(gpus="h100:2x8", cpu_nodes=0, progress=lambda m: _say(f"   {m}"))
    cluster.start()
    operator: subprocess.Popen[bytes] | None = None
    bench: Bench | None = None
    try:
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        kube.reset_api_client()
        api = cluster.api_client()
        for crd in sorted((root / "crds").glob("*.yaml")):
            for doc in yaml.safe_load_all(crd.read_text()):
                if doc:
                    kube.server_side_apply(api, doc, "bench")
        time.sleep(2)
        endpoints = cluster.workdir / "endpoints.yaml"
        endpoints.write_text("{}\n")
        env = {**cluster.kubectl_env(), ENDPOINTS_ENV: str(endpoints)}
        log = cluster.workdir / "logs" / "operator.log"
        operator = subprocess.Popen(
            [sys.executable, "-m", "deepseek_operator", "run"],
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        kube.request(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": NAMESPACE}})
        for doc in yaml.safe_load_all((root / "manifests" / "samples" / "model-store-pvc.yaml").read_text()):
            if doc:
                kube.server_side_apply(api, doc, "bench", NAMESPACE)
        golden = "".join(json.dumps({"prompt": p, "expect": e}) + "\n" for p, (_, e) in PROMPTS.items())
        kube.server_side_apply(
            api,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "golden"},
                "data": {"golden.jsonl": golden},
            },
            "bench",
            NAMESPACE,
        )
        bench = Bench(api, endpoints, args.interval, args.failure_limit)
        bench.good.start()
        bench.new.start()
        interval_s = parse_duration(args.interval, "--interval")
        bound = interval_s * args.failure_limit
        _say(
            f"== interval {args.interval}, failureLimit {args.failure_limit}: "
            f"the contract's bound is {bound:g} s + a few"
        )
        rows = []
        for scenario in args.scenarios:
            decisions, traffics = [], []
            for i in range(args.runs):
                d, t = bench.run(scenario, i)
                decisions.append(d)
                traffics.append(t)
                _say(
                    f"   {scenario} run {i + 1}: rollback decided {d:5.1f} s, "
                    f"traffic on the good revision {t:5.1f} s"
                )
            rows.append((scenario, decisions, traffics))
        _say("")
        _say(f"{'scenario':<18} {'runs':>4} {'decision median/max (s)':>24} {'traffic median/max (s)':>24}")
        for scenario, ds, ts in rows:
            _say(
                f"{scenario:<18} {len(ds):>4} {statistics.median(ds):>15.1f} / {max(ds):<6.1f} "
                f"{statistics.median(ts):>15.1f} / {max(ts):<6.1f}"
            )
        return 0
    finally:
        if bench is not None:
            bench.good.stop()
            bench.new.stop()
        if operator is not None and operator.poll() is None:
            operator.send_signal(signal.SIGTERM)
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
