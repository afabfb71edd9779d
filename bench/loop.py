"""The operator's reconcile loop on the simulated cluster: latency, throughput, footprint, idle cost.

Starts one simulated cluster (``SimCluster``: kube-apiserver, etcd, controller-manager,
scheduler, kwok GPU nodes), installs the CRD and runs the operator as a child process
(``python -m deepseek_operator run``, ``KUBECONFIG`` set, log in the cluster's workdir), as
``bench/rollback.py`` does. Every DeepSeekDeployment is the tiny model
``deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B`` on one GPU, one replica, reading the PVC of
``manifests/samples/model-store-pvc.yaml`` (applied first into each namespace). The figures:

1. **apply -> Ready, one resource, against the floor.** ``--runs`` times for each path, each in a
   fresh namespace (deleted, and waited gone, after the run):

   - *operator*: from the server-side apply of one DeepSeekDeployment until ``status.phase`` is
     ``Ready`` and its ``Ready`` condition is ``True``. Two paths: ``tensorrt-llm`` (an engine
     build Job, then the serving Deployment) and ``pytorch`` (the serving Deployment only).
   - *floor*: the same work done by hand on the same cluster in the same order: a batch/v1 Job of
     one pod requesting ``nvidia.com/gpu: 1`` (toleration ``nvidia.com/gpu`` Exists NoSchedule),
     waited until its ``Complete`` condition is True, then an apps/v1 Deployment of one such pod,
     waited until ``readyReplicas == 1``. For the PyTorch path the floor is the Deployment alone.
     It is what the control plane and kwok take anyway (scheduling, the Job controller, kwok's
     1 s Job pod, the Deployment and ReplicaSet controllers); the ratio operator/floor is the
     price of the operator's loop on top.

   Both sides are timed from the first apply to readiness seen by the same method: a GET of the
   single object every 5 ms. Operator and floor runs alternate, so drift of the cluster
   touches both alike.
2. **N at once.** For each N of ``--sizes``: N DeepSeekDeployments (engine and PyTorch path
   alternating, or ``--bulk-runtime``) are applied from ``--threads`` threads as fast as the
   API server takes them, into one namespace per size; the time runs from the first apply until
   ALL are Ready (a watch on the namespace's DeepSeekDeployments). A fresh operator process
   runs each size (the previous size's namespace is deleted, and its pods gone, before), so
   its peak RSS (``VmHWM`` of /proc/PID/status at the end; ``VmRSS`` sampled every second) and
   CPU seconds (utime+stime of /proc/PID/stat over SC_CLK_TCK, over the phase) are the size's
   own. ``--ready-timeout`` ends a size with the count of Ready resources.
3. **idle.** Then everything is left alone for ``--idle-seconds``:

   - API requests, from kube-apiserver's own ``apiserver_request_total`` (``/metrics``, scraped
     with the admin token before and after), summed by verb and resource. The same window
     length is measured again with the operator stopped (SIGTERM, waited; nothing else
     changes), and the difference is the operator's share. WATCH requests are counted apart
     (a watch is counted when it ends: these are renewals). Per resource per minute =
     non-watch requests (operator minus baseline) / N / minutes.
   - writes: the resourceVersion of every DeepSeekDeployment, Deployment, ReplicaSet, Job,
     ConfigMap, Service, PDB, ControllerRevision and Pod in the namespace, listed at the start
     and the end of the window: objects changed, created or deleted.
   - the operator's CPU seconds in the window.

4. **tables.** One Markdown table per N (time to all Ready, Ready/s, peak RSS, CPU s, idle
   requests per resource per minute, idle watch requests, idle writes) and one of apply->Ready
   (operator vs floor, both paths). ``--json FILE`` writes every figure.

The cluster gets ``ceil(max(N)/8) + 4`` GPU nodes of 8 GPUs (``--gpu-nodes`` overrides). The
simulator allows 64 nodes per pool, so beyond 64 nodes further pools of other 80 GB-class
products are added (h100, a100-80gb, h100-pcie, h200) and every DeepSeekDeployment allows all
products used. It has 64 pre-provisioned PersistentVolumes (Retain: a deleted PVC does not give
its volume back); the benchmark adds more when its namespaces need more.

Usage::

    .venv/bin/python bench/loop.py                                   # long: about an hour
    .venv/bin/python bench/loop.py --runs 2 --sizes 5,20 --idle-seconds 30
    .venv/bin/python bench/loop.py --skip-single --sizes 1000 --idle-sizes 1000 --json /tmp/l.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import yaml
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from deepseek_operator.api import names
from deepseek_operator.api.constants import GROUP, KIND, LABEL_MANAGED_BY, MANAGED_BY, PLURAL, VERSION
from deepseek_operator.kube import client as kube
from deepseek_operator.sim.cluster import SimCluster, free_port
from deepseek_operator.sim.gpus import GPU_PRODUCTS, MAX_NODES_PER_POOL, volume_manifests
from deepseek_operator.sim.tools import parse_versions, repo_root, versions_file

CHECKOUT = Path(__file__).resolve().parents[1]  # for git; crds/ and samples come from repo_root()
MODEL = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
RUNTIMES = ("tensorrt-llm", "pytorch")
POOLS = ("h100", "a100-80gb", "h100-pcie", "h200")  # 80 GB class or more; 64 nodes each at most
GPUS_PER_NODE = 8
HEADROOM_NODES = 4
SIM_PVS = 64  # what SimCluster pre-provisions
POLL_SECONDS = 0.005  # one GET of one object every 5 ms: fine-grained enough for a 60 ms floor
CLK_TCK = os.sysconf("SC_CLK_TCK")
MANAGER = "bench-loop"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# Kinds whose resourceVersions are compared over the idle window (the DeepSeekDeployments too).
CHILD_KINDS = (
    ("apps/v1", "Deployment"),
    ("apps/v1", "ReplicaSet"),
    ("batch/v1", "Job"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
    ("apps/v1", "ControllerRevision"),
    ("v1", "Pod"),
)
SETTLE_SECONDS = 60.0  # after the nodes register, kwok and the node controller GET+PATCH every node
AFTER_STOP_SECONDS = 3.0
# Requests of the control plane only, whatever the windows' luck: kwok's node status heartbeats
# (a GET and a PATCH of each node every 300-330 s) and leases (kwok's node leases, the
# controllers'). The operator makes none of them: it LISTs nodes and, run standalone, holds no
# lease. They are shown, but left out of the operator's per-resource figures.
NOT_OPERATOR = frozenset(
    {
        "GET nodes",
        "PATCH nodes",
        "PATCH nodes/status",
        "PUT nodes/status",
        "GET leases.coordination.k8s.io",
        "PUT leases.coordination.k8s.io",
        "POST leases.coordination.k8s.io",
    }
)
TOOL_KEYS = ("KUBERNETES_VERSION", "ETCD_VERSION", "KWOK_VERSION")
_LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class BenchError(Exception):
    """Something the benchmark cannot go on from (the operator died, the cluster failed)."""


def say(text: str = "") -> None:
    print(text, flush=True)


def dsd_path(namespace: str, name: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return f"{base}/{name}" if name else base


def is_dsd_ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    if status.get("phase") != "Ready":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def get(api: Any, path: str) -> dict[str, Any] | None:
    """The object at ``path``, or None when there is none."""
    try:
        result = kube.request(api, "GET", path)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    return dict(result) if isinstance(result, dict) else None


def poll_until(api: Any, path: str, check: Callable[[dict[str, Any]], bool], deadline: float) -> bool:
    """GET ``path`` every 5 ms until ``check`` holds (True) or the deadline passes (False)."""
    while time.monotonic() < deadline:
        obj = get(api, path)
        if obj is not None and check(obj):
            return True
        time.sleep(POLL_SECONDS)
    return False


def stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


# ---- the operator process ------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def proc_status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def cpu_by_process(operator_pid: int) -> dict[str, float]:
    """CPU seconds of every process on the machine so far, summed by name; the operator and this
    benchmark under their own names."""
    out: dict[str, float] = defaultdict(float)
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            comm = (entry / "comm").read_text().strip()
            cpu = proc_cpu_seconds(pid)
        except (OSError, ValueError, IndexError):
            continue
        name = "operator" if pid == operator_pid else "benchmark" if pid == me else comm
        out[name] += cpu
    return dict(out)


class RssSampler(threading.Thread):
    """VmRSS of a process every second; the largest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.max_kib, self.samples = pid, 0, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(OSError, ValueError):
                self.max_kib = max(self.max_kib, proc_status_kib(self.pid, "VmRSS"))
                self.samples += 1
            self._stop_event.wait(1.0)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class Operator:
    """``python -m deepseek_operator run`` in a child process, started and stopped on demand."""

    def __init__(self, cluster: SimCluster, verbose: bool = False) -> None:
        self.cluster = cluster
        self.verbose = verbose  # the operator's debug log (each pass's timings) in its log file
        self.log_path = cluster.workdir / "logs" / "operator.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise BenchError("the operator is not running")
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self, timeout: float = 90.0) -> float:
        """Start it and wait until its liveness endpoint answers; the seconds that took."""
        self.stop()
        port = free_port()
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"\n==== bench/loop.py: operator start {self.starts + 1}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "deepseek_operator",
                    "run",
                    "--liveness",
                    f"http://127.0.0.1:{port}/healthz",
                    *(["--verbose"] if self.verbose else []),
                ],
                env=self.cluster.kubectl_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stopped by us (SIGTERM, then SIGKILL), not by the terminal's ^C
            )
        self.starts += 1
        self._wait_live(f"http://127.0.0.1:{port}/healthz", started + timeout)
        return time.monotonic() - started

    def _wait_live(self, url: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            self.check()
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=2) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.2)
        raise BenchError(f"the operator did not answer on {url} in time\n{self.tail()}")

    def check(self) -> None:
        """Raise :class:`BenchError` with the end of its log if it has exited."""
        if self.popen is not None and self.popen.poll() is not None:
            code = self.popen.returncode
            self.popen = None
            raise BenchError(f"the operator exited with code {code}; its log ends with:\n{self.tail()}")

    def stop(self, grace: float = 30.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=grace)
        self.popen = None

    def tail(self, lines: int = 50) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no operator log)"
        return f"---- last {lines} lines of {self.log_path}\n" + "\n".join(text.splitlines()[-lines:])


# ---- the cluster -----------------------------------------------------------------------------


def gpu_pools(nodes: int) -> tuple[str, list[str]]:
    """A SimCluster ``gpus`` spec of ``nodes`` 8-GPU nodes, and the GPU products it has."""
    if nodes > MAX_NODES_PER_POOL * len(POOLS):
        raise BenchError(f"{nodes} GPU nodes: the simulator allows {MAX_NODES_PER_POOL} per pool")
    parts, products = [], []
    for pool in POOLS:
        count = min(nodes, MAX_NODES_PER_POOL)
        if count <= 0:
            break
        parts.append(f"{pool}:{count}x{GPUS_PER_NODE}")
        products.append(GPU_PRODUCTS[pool].product)
        nodes -= count
    return ",".join(parts), products


def add_volumes(api: Any, cluster: SimCluster, needed: int) -> int:
    """Add PersistentVolumes beyond the simulator's own when ``needed`` PVCs will bind; how many."""
    extra = max(0, needed - SIM_PVS)
    for i, pv in enumerate(volume_manifests(count=extra, host_dir=str(cluster.workdir / "volumes"))):
        pv["metadata"]["name"] = f"bench-pv-{i:04d}"
        pv["spec"]["hostPath"]["path"] = str(cluster.workdir / "volumes" / f"bench-pv-{i:04d}")
        kube.request(api, "POST", "/api/v1/persistentvolumes", body=pv)
    return extra


def install_crds(api: Any) -> None:
    for crd in sorted((repo_root() / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(crd.read_text()):
            if doc:
                kube.server_side_apply(api, doc, MANAGER)
    name = f"{PLURAL}.{GROUP}"
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
    established = poll_until(
        api,
        path,
        lambda o: any(
            c.get("type") == "Established" and c.get("status") == "True"
            for c in (o.get("status") or {}).get("conditions") or []
        ),
        time.monotonic() + 30,
    )
    if not established:
        raise BenchError(f"the CRD {name} is not Established after 30 s")


@dataclass
class Bench:
    """What every phase shares."""

    args: argparse.Namespace
    cluster: SimCluster
    api: Any
    operator: Operator
    products: list[str]
    pvc_docs: list[dict[str, Any]]
    ready_at: float = field(default_factory=time.monotonic)  # when the cluster was up

    def namespace(self, name: str, pvc: bool) -> None:
        kube.request(self.api, "POST", "/api/v1/namespaces", body={"metadata": {"name": name}})
        if pvc:
            for doc in self.pvc_docs:
                kube.server_side_apply(self.api, doc, MANAGER, name)

    def dsd(self, namespace: str, name: str, runtime: str) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "model": {
                    "id": MODEL,
                    "source": {"pvc": {"claimName": "model-store", "path": "deepseek/r1-qwen-1.5b"}},
                },
                "engine": {"runtime": runtime, "precision": "bf16"},
                "gpu": {"products": self.products, "perReplica": 1},
                "replicas": 1,
            },
        }


def delete_namespaces(bench: Bench, names: Iterable[str], timeout: float) -> float:
    """Delete namespaces and wait until they (and so their pods) are gone; the seconds it took.

    When they are still there at the timeout (a broken operator keeps its finalizers), the
    DeepSeekDeployments' finalizers are removed by hand, said so, and waited again."""
    names = list(names)
    started = time.monotonic()
    for name in names:
        with contextlib.suppress(ApiException):
            kube.request(bench.api, "DELETE", f"/api/v1/namespaces/{name}")
    if _wait_gone(bench.api, names, started + timeout):
        return time.monotonic() - started
    say(f"   ! namespaces still there after {timeout:.0f} s: removing the finalizers by hand")
    for name in names:
        _strip_finalizers(bench.api, name)
    if not _wait_gone(bench.api, names, time.monotonic() + 120):
        raise BenchError(f"namespaces {names} are not gone; the cluster is stuck")
    return time.monotonic() - started


def _wait_gone(api: Any, names: list[str], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if all(get(api, f"/api/v1/namespaces/{n}") is None for n in names):
            return True
        time.sleep(0.25)
    return False


def _strip_finalizers(api: Any, namespace: str) -> None:
    with contextlib.suppress(ApiException):
        for item in kube.request(api, "GET", dsd_path(namespace)).get("items", []):
            with contextlib.suppress(ApiException):
                kube.request(
                    api,
                    "PATCH",
                    dsd_path(namespace, item["metadata"]["name"]),
                    body={"metadata": {"finalizers": None}},
                    content_type="application/merge-patch+json",
                )


# ---- 1. apply -> Ready of one resource, and the floor ----------------------------------------


def _gpu_pod(restart: str) -> dict[str, Any]:
    return {
        "restartPolicy": restart,
        "tolerations": [GPU_TOLERATION],
        "containers": [
            {
                "name": "main",
                "image": "busybox",
                "resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}},
            }
        ],
    }


def floor_job(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "floor-build", "namespace": namespace},
        "spec": {"backoffLimit": 0, "template": {"spec": _gpu_pod("Never")}},
    }


def floor_deployment(namespace: str) -> dict[str, Any]:
    labels = {"app": "floor-serve"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "floor-serve", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": _gpu_pod("Always")},
        },
    }


def job_complete(obj: dict[str, Any]) -> bool:
    conds = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Complete" and c.get("status") == "True" for c in conds)


def one_ready(obj: dict[str, Any]) -> bool:
    return (obj.get("status") or {}).get("readyReplicas") == 1


def time_operator(bench: Bench, namespace: str, runtime: str) -> float | None:
    body = bench.dsd(namespace, "tiny", runtime)
    started = time.monotonic()
    kube.server_side_apply(bench.api, body, MANAGER)
    if poll_until(bench.api, dsd_path(namespace, "tiny"), is_dsd_ready, started + bench.args.ready_timeout):
        return time.monotonic() - started
    obj = get(bench.api, dsd_path(namespace, "tiny")) or {}
    status = json.dumps(obj.get("status"))[:600]
    say(f"   ! {namespace}/tiny not Ready in {bench.args.ready_timeout:.0f} s: status {status}")
    say(bench.operator.tail())
    return None


def time_floor(bench: Bench, namespace: str, runtime: str) -> float | None:
    deadline = time.monotonic() + bench.args.ready_timeout
    started = time.monotonic()
    if runtime == "tensorrt-llm":
        job = floor_job(namespace)
        kube.server_side_apply(bench.api, job, MANAGER)
        path = kube.resource_path("batch/v1", "Job", namespace, "floor-build")
        if not poll_until(bench.api, path, job_complete, deadline):
            say(f"   ! floor Job in {namespace} not Complete in time")
            return None
    kube.server_side_apply(bench.api, floor_deployment(namespace), MANAGER)
    path = kube.resource_path("apps/v1", "Deployment", namespace, "floor-serve")
    if not poll_until(bench.api, path, one_ready, deadline):
        say(f"   ! floor Deployment in {namespace} not ready in time")
        return None
    return time.monotonic() - started


def time_same_objects(bench: Bench, namespace: str, template: list[dict[str, Any]]) -> float | None:
    """The objects the operator made for one PyTorch-path resource (captured from its namespace,
    renamed), applied by hand in the operator's order: the serving Deployment, then the rest
    together; timed until the Deployment is ready.
    It is the floor with the operator's real pod (init containers, volumes, probes, affinity), so
    operator / this is the loop's own share."""
    # Not the operator's: its informers select what it manages, and would spend time on these.
    ours = json.dumps({LABEL_MANAGED_BY: MANAGED_BY})[1:-1]
    theirs = json.dumps({LABEL_MANAGED_BY: MANAGER})[1:-1]
    docs = json.loads(json.dumps(floor_copies(template, "tiny", namespace, 1)).replace(ours, theirs))
    (d,) = [d for d in docs if d["kind"] == "Deployment"]
    rest = [d for d in docs if d["kind"] != "Deployment"]
    deadline = time.monotonic() + bench.args.ready_timeout
    started = time.monotonic()
    kube.server_side_apply(bench.api, d, MANAGER)
    threads = [threading.Thread(target=kube.server_side_apply, args=(bench.api, d, MANAGER)) for d in rest]
    for t in threads:
        t.start()
    path = kube.resource_path("apps/v1", "Deployment", namespace, d["metadata"]["name"])
    ok = poll_until(bench.api, path, _deployment_ready, deadline)
    for t in threads:
        t.join()
    return time.monotonic() - started if ok else None


@dataclass
class SingleResult:
    runtime: str
    operator_s: list[float] = field(default_factory=list)
    floor_s: list[float] = field(default_factory=list)
    operator_timeouts: int = 0
    floor_timeouts: int = 0
    cleanup_s: list[float] = field(default_factory=list)
    same_s: list[float] = field(default_factory=list)  # the operator's own objects, by hand

    def ratio(self, floor: list[float] | None = None) -> float | None:
        floor = self.floor_s if floor is None else floor
        if not self.operator_s or not floor:
            return None
        return statistics.median(self.operator_s) / statistics.median(floor)


def single_run(bench: Bench, result: SingleResult, index: int) -> bool:
    """One operator run and one floor run (fresh namespaces, deleted after); False on a timeout."""
    short = "trt" if result.runtime == "tensorrt-llm" else "pt"
    op_ns, floor_ns = f"single-{short}-{index}", f"floor-{short}-{index}"
    same_ns = f"same-{short}-{index}"
    bench.namespace(op_ns, pvc=True)
    op = time_operator(bench, op_ns, result.runtime)
    bench.namespace(floor_ns, pvc=False)
    fl = time_floor(bench, floor_ns, result.runtime)
    same, spaces = None, [op_ns, floor_ns]
    if op is not None and result.runtime == "pytorch":  # (a build Job's copy needs its selector redone)
        bench.namespace(same_ns, pvc=True)
        spaces.append(same_ns)
        same = time_same_objects(bench, same_ns, capture_children(bench, op_ns, "tiny"))
        if same is not None:
            result.same_s.append(same)
    result.cleanup_s.append(delete_namespaces(bench, spaces, bench.args.ready_timeout))
    if op is None:
        result.operator_timeouts += 1
    else:
        result.operator_s.append(op)
    if fl is None:
        result.floor_timeouts += 1
    else:
        result.floor_s.append(fl)
    by_hand = f", its objects by hand {fmt(same)} s" if same is not None else ""
    say(f"   {result.runtime:<12} run {index + 1}: operator {fmt(op)} s, floor {fmt(fl)} s{by_hand}")
    return op is not None


def single_phase(bench: Bench, report: Callable[[list[SingleResult]], None]) -> None:
    say(f"== 1. apply -> Ready of one resource ({bench.args.runs} runs per path), operator vs floor")
    say(f"   operator started in {bench.operator.start():.1f} s")
    results: list[SingleResult] = []
    for runtime in RUNTIMES:
        result = SingleResult(runtime)
        results.append(result)
        for i in range(bench.args.runs):
            ok = single_run(bench, result, i)
            report(results)  # what is measured so far survives an interrupt
            if not ok:
                say(f"   ! the operator timed out: the other runs of {runtime} are skipped")
                break
    bench.operator.stop()


# ---- 2. N at once ----------------------------------------------------------------------------


class ReadyWatcher(threading.Thread):
    """Watches a namespace's DeepSeekDeployments (or another collection: ``collection`` is (group,
    version, plural), ``check`` says when one is ready); notes when each wanted one is first ready."""

    def __init__(
        self,
        api: Any,
        namespace: str,
        wanted: set[str],
        collection: tuple[str, str, str] = (GROUP, VERSION, PLURAL),
        check: Callable[[dict[str, Any]], bool] = is_dsd_ready,
    ) -> None:
        super().__init__(daemon=True)
        self.custom = k8s.CustomObjectsApi(api)
        self.namespace, self.wanted = namespace, wanted
        self.collection, self.check = collection, check
        self.ready: dict[str, float] = {}  # name -> time.monotonic() when first seen Ready
        self.listening, self.done = threading.Event(), threading.Event()
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def run(self) -> None:
        while not self._stop_event.is_set() and not self.done.is_set():
            try:
                self._list_and_watch()
            except Exception as e:  # a broken watch is re-listed; the benchmark must not hang on it
                self.errors.append(f"{type(e).__name__}: {e}"[:300])
                self._stop_event.wait(1.0)

    def _note(self, obj: dict[str, Any]) -> None:
        name = obj.get("metadata", {}).get("name")
        if name in self.wanted and name not in self.ready and self.check(obj):
            self.ready[name] = time.monotonic()
            if len(self.ready) == len(self.wanted):
                self.done.set()

    def _list_and_watch(self) -> None:
        group, version, plural = self.collection
        listing = self.custom.list_namespaced_custom_object(group, version, self.namespace, plural)
        for obj in listing.get("items", []):
            self._note(obj)
        version = listing["metadata"]["resourceVersion"]
        self.listening.set()
        while not self._stop_event.is_set() and not self.done.is_set():
            version = self._watch_from(version)
            if not version:
                return  # expired: list again

    def _watch_from(self, version: str) -> str:
        w = watch.Watch()
        group, api_version, plural = self.collection
        for event in w.stream(
            self.custom.list_namespaced_custom_object,
            group,
            api_version,
            self.namespace,
            plural,
            resource_version=version,
            timeout_seconds=5,
        ):
            obj = event["object"]
            if event["type"] == "ERROR":
                return ""
            version = obj["metadata"]["resourceVersion"]
            self._note(obj)
            if self._stop_event.is_set() or self.done.is_set():
                w.stop()
                break
        return version


@dataclass
class Window:
    """One idle window: API requests by verb and resource, writes, operator CPU."""

    seconds: float
    requests: dict[str, float]
    writes: dict[str, int]
    cpu_s: float | None


@dataclass
class Idle:
    operator: Window
    baseline: Window
    delta: dict[str, float]  # operator minus baseline, by "VERB resource"
    nonwatch_per_resource_per_min: float
    watch_requests: float
    writes: int
    excluded: list[str] = field(default_factory=list)  # keys left out of the two figures above


@dataclass
class SizeResult:
    n: int
    runtimes: dict[str, int]
    apply_s: float
    apply_errors: int
    ready: int
    all_ready_s: float | None
    first_ready_s: float | None
    ready_per_s: float
    peak_rss_mib: float
    sampled_rss_mib: float
    cpu_s: float
    operator_start_s: float
    watch_errors: list[str]
    idle: Idle | None = None
    cleanup_s: float | None = None
    # CPU seconds by process name during the phase (the control plane, kwok, the operator, this
    # benchmark), and the API requests the phase made (non-watch, by "VERB resource").
    cpu_by_process: dict[str, float] = field(default_factory=dict)
    requests: dict[str, float] = field(default_factory=dict)
    floor: FloorResult | None = None


def bulk_runtimes(args: argparse.Namespace, n: int) -> list[str]:
    if args.bulk_runtime == "alternate":
        return [RUNTIMES[i % 2] for i in range(n)]
    return [args.bulk_runtime] * n


def apply_all(bench: Bench, bodies: list[dict[str, Any]]) -> int:
    """Server-side apply every body from a few threads; the number that failed."""

    def one(body: dict[str, Any]) -> str:
        try:
            kube.server_side_apply(bench.api, body, MANAGER)
        except Exception as e:
            return f"{body['metadata']['name']}: {type(e).__name__}: {e}"[:300]
        return ""

    with ThreadPoolExecutor(max_workers=bench.args.threads) as pool:
        errors = [e for e in pool.map(one, bodies) if e]
    if errors:
        say(f"   ! {len(errors)} applies failed, the first: {errors[0]}")
    return len(errors)


def wait_all(bench: Bench, watcher: ReadyWatcher, deadline: float) -> None:
    """Until every resource is Ready, the deadline passes, or the operator dies."""
    while time.monotonic() < deadline and not watcher.done.is_set():
        bench.operator.check()
        watcher.done.wait(min(1.0, max(0.0, deadline - time.monotonic())))


def bulk_size(bench: Bench, n: int) -> SizeResult:
    namespace = f"bulk-{n}"
    bench.namespace(namespace, pvc=True)
    start_s = bench.operator.start()
    runtimes = bulk_runtimes(bench.args, n)
    bodies = [bench.dsd(namespace, f"m{i:04d}", rt) for i, rt in enumerate(runtimes)]
    watcher = ReadyWatcher(bench.api, namespace, {b["metadata"]["name"] for b in bodies})
    watcher.start()
    if not watcher.listening.wait(30):
        raise BenchError(f"the watch on {namespace} did not start: {watcher.errors[-1:]}")
    sampler = RssSampler(bench.operator.pid)
    sampler.start()
    requests0, procs0 = scrape_requests(bench.cluster), cpu_by_process(bench.operator.pid)
    cpu0, started = proc_cpu_seconds(bench.operator.pid), time.monotonic()
    errors = apply_all(bench, bodies)
    apply_s = time.monotonic() - started
    try:
        wait_all(bench, watcher, started + bench.args.ready_timeout)
    finally:
        watcher.stop()
        sampler.stop()
    ended = time.monotonic()
    procs = diff_counts(procs0, cpu_by_process(bench.operator.pid))
    requests = {
        k: v
        for k, v in diff_counts(requests0, scrape_requests(bench.cluster)).items()
        if not k.startswith("WATCH")
    }
    times = sorted(t - started for t in watcher.ready.values())
    complete = len(times) == n
    elapsed = times[-1] if complete else ended - started
    return SizeResult(
        n=n,
        runtimes={rt: runtimes.count(rt) for rt in set(runtimes)},
        apply_s=apply_s,
        apply_errors=errors,
        ready=len(times),
        all_ready_s=times[-1] if complete else None,
        first_ready_s=times[0] if times else None,
        ready_per_s=len(times) / elapsed if elapsed > 0 else 0.0,
        peak_rss_mib=proc_status_kib(bench.operator.pid, "VmHWM") / 1024,
        sampled_rss_mib=sampler.max_kib / 1024,
        cpu_s=proc_cpu_seconds(bench.operator.pid) - cpu0,
        operator_start_s=start_s,
        watch_errors=watcher.errors[:5],
        cpu_by_process={k: round(v, 1) for k, v in sorted(procs.items(), key=lambda kv: -kv[1]) if v >= 0.5},
        requests=dict(sorted(requests.items(), key=lambda kv: -kv[1])),
    )


# ---- 2b. the floor of N at once: the operator's objects, applied by hand ---------------------

# What the operator creates for one PyTorch-path resource (its pods come from the Deployment).
FLOOR_KINDS = (
    ("v1", "configmaps"),
    ("apps/v1", "deployments"),
    ("v1", "services"),
    ("policy/v1", "poddisruptionbudgets"),
    ("apps/v1", "controllerrevisions"),
    ("autoscaling/v2", "horizontalpodautoscalers"),
)
_DROP_META = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "ownerReferences", "generation")


def _collection(api_version: str, plural: str, namespace: str) -> str:
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{root}/namespaces/{namespace}/{plural}"


def capture_children(bench: Bench, namespace: str, owner: str) -> list[dict[str, Any]]:
    """The objects the operator made for ``owner``, as a user would apply them: no server-set
    metadata, no owner reference (the owner is gone when they are applied), no status."""
    out = []
    selector = f"{names.DEPLOYMENT_LABEL}={owner}"
    for api_version, plural in FLOOR_KINDS:
        listing = kube.request(
            bench.api, "GET", _collection(api_version, plural, namespace), query=[("labelSelector", selector)]
        )
        kind = listing.get("kind", "").removesuffix("List")
        for item in listing.get("items", []):
            item.pop("status", None)
            meta = item["metadata"]
            for key in _DROP_META:
                meta.pop(key, None)
            meta.get("annotations", {}).pop("deployment.kubernetes.io/revision", None)
            if kind == "Service":
                for key in ("clusterIP", "clusterIPs"):
                    item["spec"].pop(key, None)
            out.append({"apiVersion": api_version, "kind": kind, **item})
    return out


def floor_copies(template: list[dict[str, Any]], owner: str, namespace: str, n: int) -> list[dict[str, Any]]:
    """``n`` copies of ``template``, ``owner`` renamed in every name and label."""
    text = json.dumps(template)
    docs = []
    for i in range(n):
        for doc in json.loads(text.replace(owner, f"f{i:04d}")):
            doc["metadata"]["namespace"] = namespace
            docs.append(doc)
    return docs


def _deployment_ready(obj: dict[str, Any]) -> bool:
    want = int((obj.get("spec") or {}).get("replicas", 1))
    return int((obj.get("status") or {}).get("readyReplicas") or 0) >= want


@dataclass
class FloorResult:
    n: int
    objects: int
    apply_s: float
    apply_errors: int
    ready: int
    all_ready_s: float | None
    cpu_by_process: dict[str, float]
    requests: dict[str, float]


def bulk_floor(bench: Bench, n: int, template: list[dict[str, Any]], owner: str) -> FloorResult:
    """The same objects the operator made for ``n`` resources, applied by hand (server-side apply,
    from the same threads) with the operator stopped; timed until every Deployment is ready."""
    namespace = f"bulkfloor-{n}"
    bench.namespace(namespace, pvc=True)
    docs = floor_copies(template, owner, namespace, n)
    wanted = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    watcher = ReadyWatcher(bench.api, namespace, wanted, ("apps", "v1", "deployments"), _deployment_ready)
    watcher.start()
    if not watcher.listening.wait(30):
        raise BenchError(f"the watch on {namespace} did not start: {watcher.errors[-1:]}")
    requests0, procs0 = scrape_requests(bench.cluster), cpu_by_process(0)
    started = time.monotonic()
    errors = apply_all(bench, docs)
    apply_s = time.monotonic() - started
    try:
        deadline = started + bench.args.ready_timeout
        while time.monotonic() < deadline and not watcher.done.is_set():
            watcher.done.wait(1.0)
    finally:
        watcher.stop()
    procs = diff_counts(procs0, cpu_by_process(0))
    requests = diff_counts(requests0, scrape_requests(bench.cluster))
    times = sorted(t - started for t in watcher.ready.values())
    result = FloorResult(
        n=n,
        objects=len(docs),
        apply_s=apply_s,
        apply_errors=errors,
        ready=len(times),
        all_ready_s=times[-1] if len(times) == len(wanted) else None,
        cpu_by_process={k: round(v, 1) for k, v in sorted(procs.items(), key=lambda kv: -kv[1]) if v >= 0.5},
        requests={
            k: v for k, v in sorted(requests.items(), key=lambda kv: -kv[1]) if not k.startswith("WATCH")
        },
    )
    delete_namespaces(bench, [namespace], bench.args.ready_timeout)
    return result


# ---- 3. idle ---------------------------------------------------------------------------------


def scrape_requests(cluster: SimCluster) -> dict[str, float]:
    """kube-apiserver's ``apiserver_request_total``, summed by "VERB resource[.group][/subresource]"."""
    assert cluster.pki is not None
    req = urllib.request.Request(cluster.server + "/metrics")
    req.add_header("Authorization", f"Bearer {cluster.admin_token}")
    ctx = ssl.create_default_context(cafile=str(cluster.pki.ca_cert))
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        text = resp.read().decode()
    totals: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels_text, value = line[len("apiserver_request_total{") :].rsplit("}", 1)
            totals[_request_key(dict(_LABEL_RE.findall(labels_text)))] += float(value)
    return dict(totals)


def _request_key(labels: dict[str, str]) -> str:
    resource = labels.get("resource", "")
    if not resource:
        return f"{labels.get('verb', '?')} (non-resource)"
    group = labels.get("group", "")
    sub = labels.get("subresource", "")
    return f"{labels.get('verb', '?')} {resource}{'.' + group if group else ''}{'/' + sub if sub else ''}"


def diff_counts(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    deltas = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(before) | set(after)}
    return {k: v for k, v in deltas.items() if v}


def snapshot_versions(api: Any, namespace: str) -> dict[tuple[str, str], str]:
    """(kind, name) -> resourceVersion of the DeepSeekDeployments and their children."""
    paths = [(KIND, dsd_path(namespace))]
    paths += [(kind, kube.resource_path(av, kind, namespace)) for av, kind in CHILD_KINDS]
    versions: dict[tuple[str, str], str] = {}
    for kind, path in paths:
        for item in kube.request(api, "GET", path).get("items", []):
            versions[(kind, item["metadata"]["name"])] = item["metadata"]["resourceVersion"]
    return versions


def count_writes(before: dict[tuple[str, str], str], after: dict[tuple[str, str], str]) -> dict[str, int]:
    """Objects changed, created or deleted between two snapshots, by "kind change"."""
    counts: dict[str, int] = defaultdict(int)
    for key in set(before) | set(after):
        if key not in before:
            counts[f"{key[0]} created"] += 1
        elif key not in after:
            counts[f"{key[0]} deleted"] += 1
        elif before[key] != after[key]:
            counts[f"{key[0]} changed"] += 1
    return dict(counts)


def window(bench: Bench, namespace: str, seconds: float, pid: int | None) -> Window:
    versions0 = snapshot_versions(bench.api, namespace)
    requests0 = scrape_requests(bench.cluster)
    cpu0 = proc_cpu_seconds(pid) if pid else None
    started = time.monotonic()
    time.sleep(seconds)
    cpu = proc_cpu_seconds(pid) - cpu0 if pid and cpu0 is not None else None
    requests = diff_counts(requests0, scrape_requests(bench.cluster))
    elapsed = time.monotonic() - started
    writes = count_writes(versions0, snapshot_versions(bench.api, namespace))
    return Window(elapsed, requests, writes, cpu)


def idle_phase(bench: Bench, namespace: str, n: int) -> Idle:
    seconds = bench.args.idle_seconds
    settle = SETTLE_SECONDS - (time.monotonic() - bench.ready_at)
    if settle > 0:  # the control plane's own burst right after the nodes register
        say(f"   waiting {settle:.0f} s more: the cluster's first {SETTLE_SECONDS:.0f} s are not idle")
        time.sleep(settle)
    say(f"   idle {seconds:g} s with the operator running ...")
    bench.operator.check()
    op = window(bench, namespace, seconds, bench.operator.pid)
    bench.operator.check()
    bench.operator.stop()
    time.sleep(AFTER_STOP_SECONDS)  # its watches end (and are counted) before the baseline starts
    say(f"   idle {seconds:g} s with the operator stopped (baseline) ...")
    base = window(bench, namespace, seconds, None)
    delta = {
        k: op.requests.get(k, 0.0) - base.requests.get(k, 0.0) for k in set(op.requests) | set(base.requests)
    }
    mine = {k: v for k, v in delta.items() if k not in NOT_OPERATOR}
    nonwatch = sum(v for k, v in mine.items() if not k.startswith("WATCH"))
    minutes = op.seconds / 60
    return Idle(
        operator=op,
        baseline=base,
        delta=delta,
        nonwatch_per_resource_per_min=nonwatch / max(n, 1) / minutes if minutes else 0.0,
        watch_requests=sum(v for k, v in mine.items() if k.startswith("WATCH")),
        writes=sum(op.writes.values()),
        excluded=sorted(k for k in delta if k in NOT_OPERATOR),
    )


def print_idle(idle: Idle, n: int) -> None:
    op, base = idle.operator, idle.baseline
    say(
        f"   idle: operator CPU {fmt(op.cpu_s)} s in {op.seconds:.0f} s; "
        f"non-watch requests per resource per minute {idle.nonwatch_per_resource_per_min:.2f} "
        f"(operator minus baseline, N={n}); watch requests {idle.watch_requests:g}"
    )
    say(f"   idle writes, operator window: {_counts_text(op.writes)}")
    say(f"   idle writes, baseline window: {_counts_text(base.writes)}")
    rows = sorted(idle.delta.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
    say(f"   {'requests (verb resource)':<52} {'operator':>9} {'baseline':>9} {'delta':>9} {'/res/min':>9}")
    for key, value in rows:
        if not (value or op.requests.get(key)):
            continue
        per = value / max(n, 1) / (op.seconds / 60)
        note = "  (control plane, left out)" if key in NOT_OPERATOR else ""
        say(
            f"   {key:<52} {op.requests.get(key, 0):>9g} {base.requests.get(key, 0):>9g} "
            f"{value:>9g} {per:>9.3f}{note}"
        )


def _counts_text(counts: dict[str, int]) -> str:
    if not counts:
        return "none"
    return f"{sum(counts.values())} (" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")"


def print_load(cpu: dict[str, float], requests: dict[str, float], indent: str = "   ") -> None:
    """Where a phase's CPU went (by process) and its API requests (the 16 most frequent)."""
    say(f"{indent}CPU seconds by process: " + ", ".join(f"{k} {v:g}" for k, v in cpu.items()))
    say(
        f"{indent}API requests ({sum(requests.values()):.0f}, not counting watches): "
        + ", ".join(f"{k} {v:g}" for k, v in list(requests.items())[:16])
    )


def run_size(bench: Bench, n: int) -> SizeResult:
    say(f"== 2. {n} resources at once (fresh operator process for this size)")
    result = bulk_size(bench, n)
    if result.all_ready_s is None:
        say(f"   ! timeout: {result.ready}/{n} Ready after {bench.args.ready_timeout:.0f} s")
        say(bench.operator.tail())
    say(
        f"   applied in {result.apply_s:.1f} s ({result.apply_errors} failed); "
        f"first Ready {fmt(result.first_ready_s, '.1f')} s, all Ready {fmt(result.all_ready_s, '.1f')} s "
        f"({result.ready}/{n}); {result.ready_per_s:.2f} Ready/s; peak RSS {result.peak_rss_mib:.0f} MiB; "
        f"CPU {result.cpu_s:.1f} s"
    )
    print_load(result.cpu_by_process, result.requests)
    if bench.args.idle_seconds > 0 and n in bench.args.idle_sizes and result.all_ready_s is None:
        say("   idle skipped: not all resources are Ready, so the loop is not idle")
    elif bench.args.idle_seconds > 0 and n in bench.args.idle_sizes:
        result.idle = idle_phase(bench, f"bulk-{n}", n)
        print_idle(result.idle, n)
    template: list[dict[str, Any]] = []
    if bench.args.bulk_floor and result.all_ready_s is not None:
        template = capture_children(bench, f"bulk-{n}", "m0000")
    if not bench.operator.running():
        bench.operator.start()  # its finalizers: the namespace goes only with the operator up
    result.cleanup_s = delete_namespaces(bench, [f"bulk-{n}"], bench.args.ready_timeout)
    say(f"   namespace bulk-{n} deleted, pods gone, in {result.cleanup_s:.1f} s")
    bench.operator.stop()
    if template:
        kinds = ", ".join(sorted(d["kind"] for d in template))
        say(f"== 2b. the floor of {n} at once: the objects of one resource ({kinds}) x {n}, by hand")
        result.floor = floor = bulk_floor(bench, n, template, "m0000")
        say(
            f"   {floor.objects} objects applied in {floor.apply_s:.1f} s ({floor.apply_errors} failed); "
            f"all {n} Deployments ready {fmt(floor.all_ready_s, '.1f')} s ({floor.ready}/{n})"
        )
        print_load(floor.cpu_by_process, floor.requests)
    return result


# ---- the report ------------------------------------------------------------------------------


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=CHECKOUT, timeout=20)
        return done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def header() -> dict[str, Any]:
    cpu_model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    tools = parse_versions(versions_file().read_text()) if versions_file().exists() else {}

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "?"

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "git_head": _run(["git", "rev-parse", "HEAD"]),
        "git_dirty": bool(_run(["git", "status", "--porcelain", "--untracked-files=no"])),
        "kopf": version("kopf"),
        "kubernetes_client": version("kubernetes"),
        "deepseek_operator": version("deepseek-operator"),
        "operator_source": str(Path(kube.__file__).resolve().parents[1]),
        "tools": {k: v for k, v in tools.items() if k in TOOL_KEYS},
    }


def print_header(h: dict[str, Any]) -> None:
    say(f"== machine: {h['nproc']} CPUs ({h['cpu_model']}), {h['memory_gib']} GiB, load {h['load_average']}")
    say(
        f"== versions: git {h['git_head']}{' (uncommitted changes)' if h['git_dirty'] else ''}, "
        f"kopf {h['kopf']}, kubernetes client {h['kubernetes_client']}, python {h['python']}, "
        f"tools {', '.join(f'{k}={v}' for k, v in h['tools'].items())}"
    )
    say(f"== operator source: {h['operator_source']}")


def single_table(results: list[SingleResult], out: TextIO = sys.stdout) -> None:
    print("\n### apply -> Ready, one resource (seconds, median (min-max))\n", file=out)
    print(
        "| path | runs | operator | floor | operator / floor | its objects by hand | operator / those |",
        file=out,
    )
    print("|---|---|---|---|---|---|---|", file=out)
    for r in results:
        op, fl, same = _spread(r.operator_s), _spread(r.floor_s), _spread(r.same_s)
        runs = f"{len(r.operator_s)}" + (f" (+{r.operator_timeouts} timeout)" if r.operator_timeouts else "")
        print(
            f"| {r.runtime} | {runs} | {op} | {fl} | {fmt(r.ratio(), '.1f')} | {same} "
            f"| {fmt(r.ratio(r.same_s), '.1f')} |",
            file=out,
        )
    out.flush()


def _spread(values: list[float]) -> str:
    """``median (min-max)``, or ``-`` when nothing was measured."""
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def growth_table(results: list[SizeResult], out: TextIO = sys.stdout) -> None:
    print("\n### N resources at once\n", file=out)
    print(
        "| N | all Ready (s) | floor (s) | Ready/s | peak RSS (MiB) | CPU (s) | idle req/resource/min "
        "| idle watch req | idle writes |",
        file=out,
    )
    print("|---|---|---|---|---|---|---|---|---|", file=out)
    for r in results:
        done = fmt(r.all_ready_s, ".1f") if r.all_ready_s is not None else f"timeout ({r.ready}/{r.n} Ready)"
        idle = r.idle
        floor = fmt(r.floor.all_ready_s, ".1f") if r.floor else "-"
        print(
            f"| {r.n} | {done} | {floor} | {r.ready_per_s:.2f} | {r.peak_rss_mib:.0f} | {r.cpu_s:.1f} "
            f"| {fmt(idle.nonwatch_per_resource_per_min) if idle else '-'} "
            f"| {f'{idle.watch_requests:g}' if idle else '-'} | {idle.writes if idle else '-'} |",
            file=out,
        )
    out.flush()


# ---- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per path of the one-resource figure")
    parser.add_argument("--sizes", default="10,100,300,1000", help="N of the bulk figure, comma-separated")
    parser.add_argument("--idle-seconds", type=float, default=300.0, help="idle window; 0 skips idle")
    parser.add_argument("--idle-sizes", default="", help="sizes to measure idle at (default: all)")
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds per size (and per run)")
    parser.add_argument("--bulk-runtime", choices=["alternate", *RUNTIMES], default="alternate")
    parser.add_argument("--threads", type=int, default=4, help="threads that apply the bulk resources")
    parser.add_argument("--gpu-nodes", type=int, default=0, help="GPU nodes (default ceil(max N/8)+4)")
    parser.add_argument(
        "--bulk-floor",
        action="store_true",
        help="after each size, apply the objects the operator made for it by hand, as the size's floor",
    )
    parser.add_argument("--operator-verbose", action="store_true", help="run the operator with --verbose")
    parser.add_argument("--skip-single", action="store_true")
    parser.add_argument("--skip-bulk", action="store_true")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="leave the cluster up until Ctrl-C")
    args = parser.parse_args(argv)
    args.sizes = [] if args.skip_bulk else [int(s) for s in args.sizes.split(",") if s.strip()]
    args.idle_sizes = [int(s) for s in args.idle_sizes.split(",") if s.strip()] or list(args.sizes)
    return args


def start_cluster(args: argparse.Namespace) -> tuple[SimCluster, list[str], float]:
    nodes = args.gpu_nodes or math.ceil(max(args.sizes, default=0) / GPUS_PER_NODE) + HEADROOM_NODES
    spec, products = gpu_pools(nodes)
    say(f"== starting the simulated cluster: {nodes} GPU nodes ({spec})")
    cluster = SimCluster(gpus=spec, cpu_nodes=0, progress=lambda m: say(f"   {m}"))
    started = time.monotonic()
    cluster.start(timeout=max(180.0, 3.0 * nodes))
    took = time.monotonic() - started
    say(f"   cluster ready in {took:.1f} s: KUBECONFIG={cluster.kubeconfig}")
    return cluster, products, took


def keep_up(bench: Bench) -> None:
    if not bench.operator.running():
        bench.operator.start()
    say("== --keep: the cluster and the operator stay up until Ctrl-C")
    say(f"KUBECONFIG={bench.cluster.kubeconfig}")
    say(f"   operator log: {bench.operator.log_path}")
    while True:
        time.sleep(3600)


def measure(bench: Bench, report: dict[str, Any]) -> None:
    args = bench.args
    if not args.skip_single and args.runs > 0:
        started = time.monotonic()
        try:
            single_phase(bench, lambda results: report.update(single=[_single_json(r) for r in results]))
        except BenchError as e:  # the operator died: say so and go on with the sizes
            say(f"   !! the one-resource figure failed: {e}")
            report["single_error"] = str(e)[:4000]
            bench.operator.stop()
            leftovers = [n for n in _namespaces(bench.api) if n.startswith(("single-", "floor-"))]
            recover(bench, leftovers)
        report["timings_s"]["single"] = time.monotonic() - started
    report["sizes"], report["failed_sizes"] = [], {}
    for n in args.sizes:
        started = time.monotonic()
        try:
            report["sizes"].append(asdict(run_size(bench, n)))
        except BenchError as e:  # the operator died or hung: say so, clean up, go on with the next size
            say(f"   !! size {n} failed: {e}")
            report["failed_sizes"][str(n)] = str(e)[:4000]
            recover(bench, [f"bulk-{n}"])
        report["timings_s"][f"size_{n}"] = time.monotonic() - started


def _single_json(result: SingleResult) -> dict[str, Any]:
    return {
        **asdict(result),
        "summary": {
            "operator": stats(result.operator_s),
            "floor": stats(result.floor_s),
            "ratio": result.ratio(),
        },
    }


def recover(bench: Bench, namespaces: list[str]) -> None:
    """After a failure: the namespaces deleted with a fresh operator (or without its finalizers)."""
    try:
        bench.operator.start()
    except BenchError as e:
        say(f"   !! the operator does not start again either: {_gist(str(e))}")
    delete_namespaces(bench, namespaces, 60)
    bench.operator.stop()


def _namespaces(api: Any) -> list[str]:
    return [i["metadata"]["name"] for i in kube.request(api, "GET", "/api/v1/namespaces").get("items", [])]


def print_report(report: dict[str, Any]) -> None:
    say("\n== results")
    print_header(report["header"])
    c = report["cluster"]
    say(f"== cluster: {c['gpu_nodes']} GPU nodes ({c['gpus']}), started in {c['start_s']:.1f} s")
    say("== between sizes: the namespace is deleted (pods gone); every size has a fresh operator process")
    if report.get("single_error"):
        say(f"   one resource: FAILED, {_gist(report['single_error'])}")
    if report.get("single"):
        single_table(
            [SingleResult(**{k: v for k, v in r.items() if k != "summary"}) for r in report["single"]]
        )
    if report.get("sizes"):
        growth_table([_size_from(r) for r in report["sizes"]])
    for n, error in (report.get("failed_sizes") or {}).items():
        say(f"   size {n}: FAILED, {_gist(error)}")
    parts = ", ".join(f"{k} {v:.0f}" for k, v in report["timings_s"].items())
    say(f"\n== wall time of each part (s): {parts}")


def finish(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """The tables of whatever was measured (also after a failure), and the JSON file."""
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        say(f"== figures written to {args.json}")


def _size_from(data: dict[str, Any]) -> SizeResult:
    idle = data.get("idle")
    fields = {**data, "idle": None, "floor": FloorResult(**data["floor"]) if data.get("floor") else None}
    result = SizeResult(**fields)
    if idle:
        result.idle = Idle(
            **{**idle, "operator": Window(**idle["operator"]), "baseline": Window(**idle["baseline"])}
        )
    return result


def _gist(error: str) -> str:
    """The first line of an error and the last line of the log it quotes."""
    lines = [line for line in error.splitlines() if line.strip()]
    return lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1].strip()}"


def _on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    report: dict[str, Any] = {"header": header(), "args": {k: str(v) for k, v in vars(args).items()}}
    report["timings_s"] = {}
    print_header(report["header"])
    cluster, products, start_s = start_cluster(args)
    report["cluster"] = {"gpus": cluster.gpus, "gpu_nodes": sum(p.nodes for p in cluster.pools)}
    report["cluster"]["start_s"] = report["timings_s"]["cluster_start"] = start_s
    operator = Operator(cluster, verbose=args.operator_verbose)
    try:
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        kube.reset_api_client()
        api = cluster.api_client()
        install_crds(api)
        pvc_path = repo_root() / "manifests" / "samples" / "model-store-pvc.yaml"
        pvc_docs = [d for d in yaml.safe_load_all(pvc_path.read_text()) if d]
        bench = Bench(args, cluster, api, operator, products, pvc_docs)
        extra = add_volumes(api, cluster, (0 if args.skip_single else 2 * args.runs) + len(args.sizes) + 2)
        report["cluster"]["extra_pvs"] = extra
        try:
            measure(bench, report)
        finally:
            finish(args, report)
        if args.keep:
            keep_up(bench)
        return 0
    except BenchError as e:
        say(f"!! {e}")
        return 1
    except KeyboardInterrupt:
        say("!! interrupted; stopping everything")
        return 130
    except Exception:
        say(operator.tail())
        raise
    finally:
        operator.stop()
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
