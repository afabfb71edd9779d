"""Time from a GPU-utilization change to new pods Running and the status showing them, hop by hop.

Starts the simulated control plane (its kube-controller-manager runs the real HPA controller),
the dcgm-exporter stand-in, a real Prometheus, the real prometheus-adapter as the custom metrics
API (sim/monitoring.py), a real Triton stand-in for analyses, and the operator
(``deepseek-operator run`` in a child process). A DeepSeekDeployment with ``autoscaling``
(1..2 replicas, target 70 %) runs at 20 %; then the exporter is set to 90 % and, from that
moment, the bench records when each hop first shows it:

- **prometheus**: an instant query returns 90 for the pod (the scrape interval);
- **adapter**: ``/apis/custom.metrics.k8s.io/v1beta1/namespaces/NS/pods/*/DCGM_FI_DEV_GPU_UTIL``
  answers 90 (the adapter queries Prometheus live; its relist only finds *new* series);
- **hpa**: the HPA's ``status.desiredReplicas`` is 2 (the HPA sync period);
- **workload**: the serving Deployment's ``spec.replicas`` is 2;
- **running**: 2 pods Running and Ready (kwok: about a second; a real model loads for minutes);
- **status**: the resource's ``status.readyReplicas`` is 2;
- **hpa-status**: its ``status.autoscaling.currentReplicas`` is 2 (the HPA's own count, which the
  HPA writes at its next sync after the pods run).

Profiles (each a fresh cluster, since the HPA sync period is a kube-controller-manager flag):

- ``tuned``: scrape 1 s, adapter relist 1 s, HPA sync 1 s (what the tests run);
- ``defaults``: scrape 15 s (the GPU Operator's dcgm-exporter ServiceMonitor interval), relist
  30 s, HPA sync 15 s (kube-controller-manager's default);
- ``scrape-15s`` / ``sync-15s``: one of them at its default, the rest tuned.

Usage::

    .venv/bin/python bench/autoscaling.py                       # 3 runs of tuned and defaults
    .venv/bin/python bench/autoscaling.py --runs 5 --profiles tuned scrape-15s sync-15s

Prints a table; the figures are in docs/autoscaling.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
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
from deepseek_operator.sim.monitoring import Monitoring
from deepseek_operator.sim.standin import StandInServer
from deepseek_operator.sim.tools import repo_root

NS = "bench"
GPU = "DCGM_FI_DEV_GPU_UTIL"
HOPS = ("prometheus", "adapter", "hpa", "workload", "running", "status", "hpa-status")
PROFILES = {  # scrape interval, adapter relist, HPA sync period
    "tuned": ("1s", "1s", "1s"),
    "defaults": ("15s", "30s", "15s"),
    "scrape-15s": ("15s", "1s", "1s"),
    "sync-15s": ("1s", "1s", "15s"),
}
PROMPT = "What is 2+2?"


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
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
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": 2,
                "targetGPUUtilization": 70,
                "scaleDownStabilizationSeconds": 0,
                # The scale-up policy (at most scaleUpStep replicas per period) would hold back
                # every run after the first for its 180 s; the bench measures the chain.
                "scaleUpPeriodSeconds": 1,
            },
            "rollout": {
                "analysis": {
                    "interval": "30s",
                    "maxP99LatencyMs": 5000,
                    "accuracy": {"goldenSet": {"configMapName": "golden"}, "minScore": 0.5},
                }
            },
        },
    }


class Bench:
    def __init__(
        self,
        cluster: SimCluster,
        mon: Monitoring,
        api: Any,
        endpoints: Path,
        triton: StandInServer,
        phase_s: float,
    ) -> None:
        self.cluster, self.mon, self.api, self.endpoints, self.triton = cluster, mon, api, endpoints, triton
        self.phase_s = phase_s  # the longest of the scrape interval and the HPA sync period

    def _get(self, path: str) -> Any:
        try:
            return kube.request(self.api, "GET", path)
        except Exception:
            return None

    def status(self, name: str) -> dict[str, Any]:
        obj = self._get(f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}/{name}") or {}
        return dict(obj.get("status") or {})

    def wait(self, predicate: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = predicate()
            if got:
                return got
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}")

    def ready_pods(self, revision: str) -> int:
        pods = (
            self._get(f"/api/v1/namespaces/{NS}/pods?labelSelector={names.REVISION_LABEL}%3D{revision}") or {}
        )
        return sum(
            1
            for p in pods.get("items") or []
            if not p["metadata"].get("deletionTimestamp")
            and any(
                c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or []
            )
        )

    def deploy(self, name: str) -> str:
        kube.server_side_apply(self.api, copy.deepcopy(_body(name)), "bench", NS)
        revision = str(
            self.wait(lambda: (self.status(name).get("revisions") or {}).get("stable"), 60, "stable")
        )
        map_revision(
            self.endpoints, f"{NS}/{name}/{revision}", self.triton.http_address, self.triton.metrics_url
        )
        self.wait(lambda: self.status(name).get("phase") == "Ready", 120, "phase Ready")
        return revision

    def run(self, name: str, revision: str) -> dict[str, float]:
        """One scale-up from 1 to 2, and back to 1 afterwards."""
        self.mon.exporter.set(GPU, 20, namespace=NS)
        self.wait(
            lambda: (self.status(name).get("autoscaling") or {}).get("currentReplicas") == 1, 120, "1 replica"
        )
        self.wait(
            lambda: [v for _, v in self.mon.custom_metric(NS, GPU)] == ["20"], 120, "the adapter serving 20"
        )
        hpa_path = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{names.serving_name(name)}"
        dep_path = f"/apis/apps/v1/namespaces/{NS}/deployments/{names.workload_name(name, revision)}"
        checks = {
            # the pod's own series (a scaled-down pod's series may linger until its staleness marker)
            "prometheus": lambda: (
                self.mon.prometheus.values(f'{GPU}{{namespace="{NS}",pod="{pod}"}}') == [90.0]
            ),
            "adapter": lambda: [v for _, v in self.mon.custom_metric(NS, GPU)] == ["90"],
            "hpa": lambda: ((self._get(hpa_path) or {}).get("status") or {}).get("desiredReplicas") == 2,
            "workload": lambda: ((self._get(dep_path) or {}).get("spec") or {}).get("replicas") == 2,
            "running": lambda: self.ready_pods(revision) == 2,
            "status": lambda: self.status(name).get("readyReplicas") == 2,
            "hpa-status": lambda: (self.status(name).get("autoscaling") or {}).get("currentReplicas") == 2,
        }
        (pod,) = [p for p, _ in self.mon.custom_metric(NS, GPU)]
        # The waits above end just after a scrape and an HPA sync; change at a random phase of
        # them, as a real load change would.
        time.sleep(random.uniform(0.0, self.phase_s))
        seen: dict[str, float] = {}
        t0 = time.monotonic()
        self.mon.exporter.set(GPU, 90, namespace=NS)
        while len(seen) < len(HOPS):
            now = time.monotonic() - t0
            if now > 180:
                raise RuntimeError(f"timed out; seen so far: {seen}")
            for hop in HOPS:
                if hop not in seen and checks[hop]():
                    seen[hop] = time.monotonic() - t0
            time.sleep(0.1)
        self.mon.exporter.set(GPU, 20, namespace=NS)
        self.wait(lambda: self.ready_pods(revision) == 1, 180, "back to 1 replica")
        return seen


def profile(name: str, runs: int) -> list[dict[str, float]]:
    scrape, relist, sync = PROFILES[name]
    _say(f"== {name}: scrape {scrape}, adapter relist {relist}, HPA sync {sync}")
    root = repo_root()
    cluster = SimCluster(gpus="h100:1x8", cpu_nodes=0, hpa_sync_period=sync)
    cluster.start()
    operator: subprocess.Popen[bytes] | None = None
    mon = Monitoring(cluster, workdir=cluster.workdir / "monitoring", adapter=True, scrape_interval=scrape,
                     relist_interval=relist)  # fmt: skip
    triton = StandInServer({PROMPT: "4"}, name="standin-bench-autoscaling")
    try:
        mon.start()
        triton.start()
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
        log = cluster.workdir / "logs" / "operator.log"
        operator = subprocess.Popen(
            [sys.executable, "-m", "deepseek_operator", "run"],
            env={**cluster.kubectl_env(), ENDPOINTS_ENV: str(endpoints)},
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        kube.request(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": NS}})
        for doc in yaml.safe_load_all((root / "manifests" / "samples" / "model-store-pvc.yaml").read_text()):
            if doc:
                kube.server_side_apply(api, doc, "bench", NS)
        case = json.dumps({"prompt": PROMPT, "expect": {"contains": "4"}}) + "\n"
        golden = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "golden"},
            "data": {"golden.jsonl": case},
        }
        kube.server_side_apply(api, golden, "bench", NS)
        phase = max(parse_duration(scrape, "scrape"), parse_duration(sync, "sync"))
        bench = Bench(cluster, mon, api, endpoints, triton, phase)
        revision = bench.deploy("r1")
        out = []
        for i in range(runs):
            seen = bench.run("r1", revision)
            _say(f"   run {i + 1}: " + ", ".join(f"{h} {seen[h]:5.1f} s" for h in HOPS))
            out.append(seen)
        return out
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(30)
        triton.stop()
        mon.stop()
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profiles", nargs="+", default=["tuned", "defaults"], choices=sorted(PROFILES))
    args = parser.parse_args()
    rows = [(p, profile(p, args.runs)) for p in args.profiles]
    _say("")
    _say("seconds from the utilization change until each hop shows it (median / max of the runs)")
    _say(f"{'profile':<12}" + "".join(f"{h:>15}" for h in HOPS))
    for name, runs in rows:
        cells = [
            f"{statistics.median(r[h] for r in runs):6.1f} / {max(r[h] for r in runs):<6.1f}" for h in HOPS
        ]
        _say(f"{name:<12}" + "".join(f"{c:>16}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
