"""``deepseek-operator demo``: the operator serving the sample models on the simulated cluster.

Starts a simulated cluster with mixed GPU pools, installs the CRD, runs the
operator, applies the samples, waits until they are Ready, shows what the
operator made of them (placement, pods on GPU nodes), shows a bad spec being
refused at admission, then a rollout: r1-qwen-7b moves to a new checkpoint whose
answers are slow (a real Triton server from nvidia-pytriton stands in for each
revision's pods) and the operator rolls it back on its own. Then it stops
everything (unless ``--keep``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from deepseek_operator.api.constants import GPU_COUNT_LABEL, GPU_PRODUCT_LABEL, GROUP, KIND, PLURAL, VERSION
from deepseek_operator.api.types import Phase
from deepseek_operator.kube import client as kube
from deepseek_operator.rollout.analysis import map_revision
from deepseek_operator.sim.cluster import SimCluster
from deepseek_operator.sim.tools import repo_root, tool_path

DEMO_GPUS = "h100:2x8,a100-80gb:1x4,h200:1x8"
NAMESPACE = "llm"


def _say(message: str = "") -> None:
    print(message, flush=True)


def _apply_docs(api: Any, path: Path, namespace: str | None) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        kube.server_side_apply(api, doc, "demo-user", namespace)
    return docs


def _kubectl(cluster: SimCluster, *args: str) -> str:
    proc = subprocess.run(
        [str(tool_path("kubectl")), *args],
        env=cluster.kubectl_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.stdout + proc.stderr


def _dsd(api: Any, name: str) -> dict[str, Any]:
    obj = kube.request(api, "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}/{name}")
    assert isinstance(obj, dict)
    return obj


def _until(what: str, get: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := get():
            return got
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def _map(endpoints: Path, name: str, revision: str, server: Any) -> None:
    map_revision(endpoints, f"{NAMESPACE}/{name}/{revision}", server.http_address, server.metrics_url)


def _rollout_act(api: Any, cluster: SimCluster, endpoints: Path) -> bool:
    """r1-qwen-7b: a good revision verified by analysis, then a slow checkpoint rolled back."""
    from deepseek_operator.sim.standin import StandInServer  # noqa: PLC0415 - needs the sim extra

    name = "r1-qwen-7b"
    cm = kube.request(api, "GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps/{name}-golden")
    cases = [json.loads(line) for line in cm["data"]["golden.jsonl"].splitlines() if line.strip()]
    answers = dict(zip([c["prompt"] for c in cases], ["391", "Paris", "Yes", "2000"], strict=False))
    good, new = StandInServer(answers, name="demo-good"), StandInServer(answers, name="demo-new")
    try:
        good.start()
        new.start()
        stable = _dsd(api, name)["status"]["revisions"]["stable"]
        _map(endpoints, name, stable, good)
        _say(f"   revision {stable} is served by a real Triton at {good.http_address} (nvidia-pytriton)")
        spec = _dsd(api, name)["spec"]
        spec["rollout"]["analysis"]["interval"] = "2s"
        kube.server_side_apply(
            api,
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": name}, "spec": spec},
            "demo-user",
            NAMESPACE,
        )
        _say("   analysis interval set to 2s (not part of the revision: no pod changes)")
        _until(
            "the revision verified",
            lambda: (_dsd(api, name)["status"].get("revisions") or {}).get("verified"),
        )
        a = _dsd(api, name)["status"]["analysis"]
        _say(
            f"   verified: p99 {a['p99LatencyMs']} ms, error rate {a['errorRate']}, "
            f"golden-set score {a['accuracy']}"
        )
        new.set_behaviour(latency_ms=800)
        spec["model"]["revision"] = "v2"
        kube.server_side_apply(
            api,
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": name}, "spec": spec},
            "demo-user",
            NAMESPACE,
        )
        canary = _until("a canary", lambda: (_dsd(api, name)["status"].get("revisions") or {}).get("canary"))
        _map(endpoints, name, canary, new)
        started = time.monotonic()
        _say(
            f"   checkpoint v2 -> canary {canary}, served by a Triton that now answers in 800 ms "
            "(max p99 500 ms)"
        )
        rollback = _until("a rollback", lambda: _dsd(api, name)["status"].get("lastRollback"))
        _say(
            f"   rolled back after {time.monotonic() - started:.1f} s: {rollback['from']} -> {rollback['to']}"
        )
        _say(f"   reason: {rollback['reason']}")
        time.sleep(1)
        _say(_kubectl(cluster, "get", "dsd", name, "-n", NAMESPACE))
        _say(
            _kubectl(
                cluster, "get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={name}"
            )
        )
        return True
    except TimeoutError as e:
        _say(f"   {e}")
        return False
    finally:
        good.stop()
        new.stop()


def _deployments(api: Any) -> list[dict[str, Any]]:
    data = kube.request(api, "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}")
    return list(data["items"])


def _say_autoscaling(api: Any) -> None:
    """Each autoscaling sample's Autoscaling condition: what its HPA sees, or the missing hop."""
    for item in _deployments(api):
        for cond in (item.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Autoscaling":
                name = item["metadata"]["name"]
                _say(f"   {name}: Autoscaling {cond['status']} {cond['reason']}: {cond['message']}")


def _settle_autoscaling(api: Any, timeout: float) -> None:
    """Wait (at most ``timeout`` s) until every autoscaling sample's HPA gets its metrics."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reasons = [
            c.get("reason")
            for item in _deployments(api)
            for c in (item.get("status") or {}).get("conditions") or []
            if c.get("type") == "Autoscaling"
        ]
        if all(r == "Active" for r in reasons):
            return
        time.sleep(1)


def _monitoring_available() -> bool:
    """Whether `sim up --with monitoring` can run here (Debian's prometheus, the cached adapter)."""
    import shutil  # noqa: PLC0415

    from deepseek_operator.errors import ToolsMissingError  # noqa: PLC0415

    try:
        tool_path("prometheus-adapter")
    except ToolsMissingError:
        return False
    return shutil.which("prometheus") is not None


def run_demo(gpus: str = DEMO_GPUS, keep: bool = False, timeout: float = 180.0) -> int:
    """Run the demo; returns the process exit code (0: every sample reached Ready, 2: pytriton missing)."""
    if importlib.util.find_spec("pytriton") is None:
        print(
            "error: the demo's stand-in Triton needs nvidia-pytriton: pip install 'deepseek-operator[sim]'",
            file=sys.stderr,
        )
        return 2
    root = repo_root()
    samples = sorted(
        p for p in (root / "manifests" / "samples").glob("*.yaml") if f"kind: {KIND}" in p.read_text()
    )
    _say(f"== starting a simulated cluster: GPU pools {gpus}, plus one CPU node")
    started = time.monotonic()
    # With Prometheus and prometheus-adapter at hand the sample's HPA gets real GPU utilization
    # (docs/autoscaling.md); without them its Autoscaling condition says which hop is missing.
    extras = ("monitoring",) if _monitoring_available() else ()
    cluster = SimCluster(gpus=gpus, cpu_nodes=1, with_components=extras, progress=lambda m: _say(f"   {m}"))
    cluster.start()
    operator: subprocess.Popen[bytes] | None = None
    try:
        _say(f"   ready in {time.monotonic() - started:.1f} s: KUBECONFIG={cluster.kubeconfig}")
        _say(_kubectl(cluster, "get", "nodes", "-L", GPU_PRODUCT_LABEL, "-L", GPU_COUNT_LABEL))
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        kube.reset_api_client()
        api = cluster.api_client()

        _say("== installing the CRD and starting the operator (deepseek-operator run)")
        for crd in sorted((root / "crds").glob("*.yaml")):
            _apply_docs(api, crd, None)
        time.sleep(2)  # Established
        log = cluster.workdir / "logs" / "operator.log"
        endpoints = cluster.workdir / "endpoints.yaml"
        endpoints.write_text("{}\n")
        operator = subprocess.Popen(
            [sys.executable, "-m", "deepseek_operator", "run", "--endpoints", str(endpoints)],
            env=cluster.kubectl_env(),
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        kube.request(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": NAMESPACE}})
        _apply_docs(api, root / "manifests" / "samples" / "model-store-pvc.yaml", NAMESPACE)
        _apply_docs(api, root / "manifests" / "samples" / "hf-token-secret.yaml", NAMESPACE)

        _say(
            f"== applying {len(samples)} samples to namespace {NAMESPACE}: "
            + ", ".join(p.name for p in samples)
        )
        for sample in samples:
            _apply_docs(api, sample, NAMESPACE)

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = _deployments(api)
            phases = {i["metadata"]["name"]: (i.get("status") or {}).get("phase") for i in items}
            if len(items) == len(samples) and all(p == Phase.READY for p in phases.values()):
                break
            time.sleep(1)
        # The adapter serves a new pod's series after its next relist (1 s here): give the HPAs
        # a moment to get their metrics before showing them.
        _settle_autoscaling(api, 20.0 if extras else 0.0)
        _say(f"== after {time.monotonic() - started:.0f} s:")
        _say(_kubectl(cluster, "get", "dsd", "-n", NAMESPACE))
        for item in _deployments(api):
            placement = (item.get("status") or {}).get("placement", {})
            _say(f"   {item['metadata']['name']}: {json.dumps(placement, sort_keys=True)}")
        _say("")
        _say(_kubectl(cluster, "get", "pods", "-n", NAMESPACE, "-o", "wide"))
        _say(_kubectl(cluster, "get", "deploy,svc,job,pdb,hpa,configmap", "-n", NAMESPACE))
        _say_autoscaling(api)

        _say("== a spec the API server refuses (tensorParallel 3, both pvc and uri):")
        bad = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": "bad", "namespace": NAMESPACE},
            "spec": {
                "model": {
                    "id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
                    "source": {"pvc": {"claimName": "model-store"}, "uri": "hf://x/y"},
                },
                "gpu": {"tensorParallel": 3},
            },
        }
        proc = subprocess.run(
            [str(tool_path("kubectl")), "apply", "-f", "-"],
            input=json.dumps(bad),
            text=True,
            env=cluster.kubectl_env(),
            capture_output=True,
            timeout=60,
        )
        _say("   " + (proc.stderr or proc.stdout).strip())

        ready = [i for i in _deployments(api) if (i.get("status") or {}).get("phase") == Phase.READY]
        ok = len(ready) == len(samples)
        _say(f"== {len(ready)}/{len(samples)} samples Ready")
        _say("== a rollout that goes wrong: r1-qwen-7b moves to checkpoint v2, whose answers are slow")
        ok = _rollout_act(api, cluster, endpoints) and ok
        if keep:
            _say(f"KUBECONFIG={cluster.kubeconfig}")
            _say("the cluster and the operator stay up; Ctrl-C stops them")
            stop = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            stop.wait()
        return 0 if ok else 1
    finally:
        if operator is not None and operator.poll() is None:
            operator.send_signal(signal.SIGTERM)
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()
        cluster.stop()
        _say("== stopped: every process ended, temporary files removed")
