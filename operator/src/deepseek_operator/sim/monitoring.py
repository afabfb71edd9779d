"""Monitoring beside the simulated cluster: a dcgm-exporter stand-in and a real Prometheus.

What runs, all bound to 127.0.0.1 on free ports:

* :class:`DcgmExporterStandIn`: an HTTP server that serves ``/metrics`` in dcgm-exporter's
  exact text format, with dcgm-exporter's labels, for the GPUs of the simulated nodes. A GPU
  allocated to a pod (the pod is bound to the node and its container asks for
  ``nvidia.com/gpu``) carries ``container``/``namespace``/``pod``, as dcgm-exporter run with
  ``--kubernetes`` labels it; a GPU no pod holds is served without them. Values are set by
  tests (:meth:`DcgmExporterStandIn.set`).
* :class:`Prometheus`: Debian's ``prometheus`` binary (``hack/install-monitoring-tools.sh``)
  with a scrape configuration written at start (1 s scrape interval by default), reloaded when
  jobs or rule files change (``--web.enable-lifecycle``), and :meth:`Prometheus.query`.
* :class:`Monitoring`: both of them for one :class:`~deepseek_operator.sim.cluster.SimCluster`,
  the exporter scraped with ``honor_labels: true`` so its ``namespace``/``pod`` labels stay as
  they are.

A test::

    with Monitoring(cluster) as mon:            # or mon.start() ... mon.stop()
        mon.exporter.set("DCGM_FI_DEV_GPU_UTIL", 90, namespace="ns", pod="p-0")
        mon.prometheus.wait_for('DCGM_FI_DEV_GPU_UTIL{pod="p-0"}', lambda v: v == [90.0])
        mon.prometheus.query("avg by (pod) (DCGM_FI_DEV_GPU_UTIL)")   # [Sample(labels, value)]
        mon.prometheus.add_job("operator", ["127.0.0.1:8080"])       # more targets, reloaded
        mon.prometheus.set_rule_files([Path("rules.yaml")])          # PrometheusRule bodies

The facts about dcgm-exporter come from its source at tag 4.5.3-4.8.2 (NVIDIA/dcgm-exporter),
cited next to the code that uses them; tests/unit/test_sim_monitoring.py pins them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from deepseek_operator.api.constants import GPU_MEMORY_LABEL, GPU_PRODUCT_LABEL, GPU_RESOURCE
from deepseek_operator.errors import SimError, ToolsMissingError
from deepseek_operator.sim.procs import _die_with_parent, _https_ok, free_port

# ---- dcgm-exporter's counters and format -------------------------------------------------------


@dataclass(frozen=True)
class Counter:
    """One line of dcgm-exporter's counters CSV: ``DCGM FIELD, Prometheus metric type, help``.

    ``double`` says the DCGM field is ``DCGM_FT_DOUBLE``: dcgm-exporter prints those with Go's
    ``%f`` (six decimals) and ``DCGM_FT_INT64`` fields with ``%d``
    (internal/pkg/collector/gpu_collector.go ``toString``; field types from NVIDIA/DCGM
    dcgmlib/src/dcgm_fields.cpp, e.g. ``DCGM_FI_DEV_POWER_USAGE, DCGM_FT_DOUBLE``,
    ``DCGM_FI_PROF_PCIE_TX_BYTES, DCGM_FT_INT64``, the ``DCGM_FI_PROF_*`` ratios DOUBLE).
    """

    name: str
    prom_type: str
    help: str
    double: bool = False


# etc/default-counters.csv at dcgm-exporter 4.5.3-4.8.2: every uncommented metric line, in file
# order, help text as written there (DCGM_FI_DRIVER_VERSION is a `label` line: it becomes the
# DCGM_FI_DRIVER_VERSION label of every metric, see DRIVER_VERSION).
DEFAULT_COUNTERS: tuple[Counter, ...] = (
    Counter("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz)."),
    Counter("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz)."),
    Counter("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C)."),
    Counter("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)."),
    Counter("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", double=True),
    Counter(
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter", "Total energy consumption since boot (in mJ)."
    ),
    Counter("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries."),
    Counter("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)."),
    Counter("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %)."),
    Counter("DCGM_FI_DEV_ENC_UTIL", "gauge", "Encoder utilization (in %)."),
    Counter("DCGM_FI_DEV_DEC_UTIL", "gauge", "Decoder utilization (in %)."),
    Counter("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered."),
    Counter("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB)."),
    Counter("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB)."),
    Counter("DCGM_FI_DEV_FB_RESERVED", "gauge", "Framebuffer memory reserved (in MiB)."),
    Counter(
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
        "counter",
        "Total number of NVLink bandwidth counters for all lanes.",
    ),
    Counter("DCGM_FI_DEV_VGPU_LICENSE_STATUS", "gauge", "vGPU License status"),
    Counter(
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "counter",
        "Number of remapped rows for uncorrectable errors",
    ),
    Counter(
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "counter", "Number of remapped rows for correctable errors"
    ),
    Counter("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed"),
    Counter(
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active.", double=True
    ),
    Counter(
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "gauge",
        "Ratio of cycles the tensor (HMMA) pipe is active.",
        double=True,
    ),
    Counter(
        "DCGM_FI_PROF_DRAM_ACTIVE",
        "gauge",
        "Ratio of cycles the device memory interface is active sending or receiving data.",
        double=True,
    ),
    Counter(
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        "gauge",
        "The rate of data transmitted over the PCIe bus - including both protocol headers and data "
        "payloads - in bytes per second.",
    ),
    Counter(
        "DCGM_FI_PROF_PCIE_RX_BYTES",
        "gauge",
        "The rate of data received over the PCIe bus - including both protocol headers and data "
        "payloads - in bytes per second.",
    ),
)

# Commented out in default-counters.csv (and dcp-metrics-included.csv) at 4.5.3-4.8.2, but the
# usual dashboards chart them: a cluster that wants them adds these lines to its counters CSV
# (the chart's `arguments: [-f, custom.csv]`). Served by default here so dashboards and alerts
# can be tried; pass ``counters=DEFAULT_COUNTERS`` for exactly the default set.
PROFILING_EXTRAS: tuple[Counter, ...] = (
    Counter(
        "DCGM_FI_PROF_SM_ACTIVE",
        "gauge",
        "The ratio of cycles an SM has at least 1 warp assigned.",
        double=True,
    ),
    Counter(
        "DCGM_FI_PROF_SM_OCCUPANCY", "gauge", "The ratio of number of warps resident on an SM.", double=True
    ),
)
STAND_IN_COUNTERS = DEFAULT_COUNTERS + PROFILING_EXTRAS

DRIVER_VERSION = "570.172.08"  # the DCGM_FI_DRIVER_VERSION label every metric carries

# Label names. gpuMetricsFormat in internal/pkg/rendermetrics/render_metrics.go (4.5.3-4.8.2)
# writes, in this order: gpu, UUID (``uuid`` with --use-old-namespace), pci_bus_id, device,
# modelName, [GPU_I_PROFILE, GPU_I_ID for MIG], Hostname (when set), then the metric's Labels
# (label-type counters such as DCGM_FI_DRIVER_VERSION, sorted by Go's template map order), then
# its Attributes, sorted (container, namespace, pod added by the Kubernetes pod mapper in
# internal/pkg/transformation/kubernetes.go, pod_uid only with --kubernetes-enable-pod-uid;
# XID_ERRORS adds err_code and err_msg in gpu_collector.go). On main (commit d5e5f51, "Rename
# Hostname label to hostname") the host label is ``hostname``. Hostname is the NODE_NAME
# environment variable (internal/pkg/hostname/hostname.go), which the GPU Operator's DaemonSet
# sets to the node's name.
HOSTNAME_LABELS = ("Hostname", "hostname")

# Values an idle GPU reports when a test sets nothing (utilization and activity 0).
_IDLE: dict[str, float] = {
    "DCGM_FI_DEV_SM_CLOCK": 1980,
    "DCGM_FI_DEV_MEM_CLOCK": 2619,
    "DCGM_FI_DEV_MEMORY_TEMP": 30,
    "DCGM_FI_DEV_GPU_TEMP": 33,
    "DCGM_FI_DEV_POWER_USAGE": 70.0,
    "DCGM_FI_DEV_FB_USED": 0,
    "DCGM_FI_DEV_FB_RESERVED": 528,
}

# NVML's device names for the products sim/gpus.py puts on nodes (GPU Feature Discovery's
# nvidia.com/gpu.product label is that name with blanks replaced by dashes).
_MODEL_NAMES = {
    "NVIDIA-H100-80GB-HBM3": "NVIDIA H100 80GB HBM3",
    "NVIDIA-H100-PCIe": "NVIDIA H100 PCIe",
    "NVIDIA-H200": "NVIDIA H200",
    "NVIDIA-B200": "NVIDIA B200",
    "NVIDIA-A100-SXM4-80GB": "NVIDIA A100-SXM4-80GB",
    "NVIDIA-A100-SXM4-40GB": "NVIDIA A100-SXM4-40GB",
    "NVIDIA-L40S": "NVIDIA L40S",
    "NVIDIA-L4": "NVIDIA L4",
    "NVIDIA-A10G": "NVIDIA A10G",
    "NVIDIA-GeForce-RTX-4090": "NVIDIA GeForce RTX 4090",
}
# PCI bus numbers of the eight GPUs of an HGX H100 board, in nvidia-smi's order.
_PCI_BUSES = ("18", "2A", "3A", "5D", "9A", "AB", "BA", "DB")


def model_name(product_label: str) -> str:
    """NVML's device name for a GPU Feature Discovery ``nvidia.com/gpu.product`` value."""
    return _MODEL_NAMES.get(product_label, product_label.replace("-", " "))


def gpu_uuid(node: str, index: int) -> str:
    """A stable, GPU-like UUID (``GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``) for a simulated GPU."""
    h = hashlib.sha256(f"{node}/{index}".encode()).hexdigest()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def pci_bus_id(index: int) -> str:
    """dcgm-exporter's ``pci_bus_id`` (NVML's 8-digit domain form) for GPU ``index``."""
    bus = _PCI_BUSES[index] if index < len(_PCI_BUSES) else f"{0xE0 + index:02X}"
    return f"00000000:{bus}:00.0"


@dataclass(frozen=True)
class GPU:
    """One simulated GPU, and the container holding it (if any)."""

    node: str
    index: int
    product: str  # the node's nvidia.com/gpu.product
    memory_mib: int
    namespace: str = ""
    pod: str = ""
    container: str = ""
    pod_labels: Mapping[str, str] = field(default_factory=dict)


def format_value(value: float, counter: Counter) -> str:
    """The value as dcgm-exporter prints it: ``%f`` for DOUBLE fields, ``%d`` for INT64 ones."""
    return f"{float(value):f}" if counter.double else str(round(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def series_labels(gpu: GPU, counter: Counter, hostname_label: str = "Hostname") -> list[tuple[str, str]]:
    """The labels of one series, in the order dcgm-exporter writes them (see HOSTNAME_LABELS)."""
    labels = [
        ("gpu", str(gpu.index)),
        ("UUID", gpu_uuid(gpu.node, gpu.index)),
        ("pci_bus_id", pci_bus_id(gpu.index)),
        ("device", f"nvidia{gpu.index}"),
        ("modelName", model_name(gpu.product)),
        (hostname_label, gpu.node),
        ("DCGM_FI_DRIVER_VERSION", DRIVER_VERSION),
    ]
    attributes: dict[str, str] = {}
    if counter.name == "DCGM_FI_DEV_XID_ERRORS":
        attributes |= {"err_code": "0", "err_msg": "No Error"}
    if gpu.pod:
        attributes |= {"container": gpu.container, "namespace": gpu.namespace, "pod": gpu.pod}
    return labels + sorted(attributes.items())


def render(
    gpus: Sequence[GPU],
    value_of: Callable[[Counter, GPU], float],
    counters: Sequence[Counter] = STAND_IN_COUNTERS,
    hostname_label: str = "Hostname",
) -> str:
    """The ``/metrics`` body: per counter ``# HELP``, ``# TYPE``, then one line per GPU."""
    out: list[str] = []
    for counter in counters:
        out.append(f"# HELP {counter.name} {counter.help}")
        out.append(f"# TYPE {counter.name} {counter.prom_type}")
        for gpu in gpus:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in series_labels(gpu, counter, hostname_label))
            out.append(f"{counter.name}{{{labels}}} {format_value(value_of(counter, gpu), counter)}")
    return "\n".join(out) + "\n"


# ---- where the simulated GPUs are --------------------------------------------------------------


def _gpu_count(resources: Mapping[str, Any] | None) -> int:
    if not resources:
        return 0
    for key in ("limits", "requests"):
        raw = (resources.get(key) or {}).get(GPU_RESOURCE)
        if raw is not None:
            try:
                return int(str(raw))
            except ValueError:
                return 0
    return 0


@dataclass(frozen=True)
class SimNode:
    """What the exporter needs of a GPU node: its product label, GPU count and memory per GPU."""

    product: str
    gpus: int
    memory_mib: int


@dataclass
class _Holding:
    node: str
    namespace: str
    pod: str
    container: str
    labels: Mapping[str, str]
    gpus: list[int]


def _wanted(
    nodes: Mapping[str, SimNode], pods: Iterable[Mapping[str, Any]]
) -> dict[tuple[str, str], tuple[int, _Holding]]:
    """(pod uid, container) -> (GPUs it asks for, where) for every container that holds GPUs now."""
    wanted: dict[tuple[str, str], tuple[int, _Holding]] = {}
    for pod in pods:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        node = spec.get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if not node or node not in nodes or phase in ("Succeeded", "Failed"):
            continue
        if meta.get("deletionTimestamp"):
            continue
        for c in spec.get("containers") or []:
            n = _gpu_count(c.get("resources"))
            if n > 0:
                holding = _Holding(
                    node,
                    meta.get("namespace", ""),
                    meta.get("name", ""),
                    c["name"],
                    dict(meta.get("labels") or {}),
                    [],
                )
                wanted[(meta.get("uid", ""), c["name"])] = (n, holding)
    return wanted


class GPUAllocator:
    """Which pod's container holds which GPU of a node, as the device plugin hands them out.

    A container keeps its GPUs while its pod exists (the lowest free indices when first seen);
    they are freed when the pod is gone, being deleted, or finished.
    """

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], _Holding] = {}  # (pod uid, container) -> holding

    def assign(self, nodes: Mapping[str, SimNode], pods: Iterable[Mapping[str, Any]]) -> list[GPU]:
        """Every GPU of ``nodes``, each with the container that holds it (if any).

        ``pods`` are Pod objects as the API returns them; pods not bound to one of ``nodes``,
        finished, being deleted or asking for no GPU hold none.
        """
        wanted = _wanted(nodes, pods)
        self._held = {k: h for k, h in self._held.items() if k in wanted}
        used: dict[str, set[int]] = {}
        for h in self._held.values():
            used.setdefault(h.node, set()).update(h.gpus)
        for key, (n, holding) in wanted.items():
            if key in self._held:
                self._held[key].labels = holding.labels
                continue
            taken = used.setdefault(holding.node, set())
            holding.gpus = [i for i in range(nodes[holding.node].gpus) if i not in taken][:n]
            taken.update(holding.gpus)
            self._held[key] = holding
        owner = {(h.node, i): h for h in self._held.values() for i in h.gpus}
        out = []
        for name in sorted(nodes):
            node = nodes[name]
            for i in range(node.gpus):
                held = owner.get((name, i))
                if held is None:
                    out.append(GPU(name, i, node.product, node.memory_mib))
                else:
                    out.append(
                        GPU(
                            name,
                            i,
                            node.product,
                            node.memory_mib,
                            held.namespace,
                            held.pod,
                            held.container,
                            held.labels,
                        )
                    )
        return out


# ---- the exporter stand-in ---------------------------------------------------------------------


@dataclass
class _Rule:
    metric: str
    value: float
    namespace: str | None
    pod: str | None
    labels: Mapping[str, str] | None
    node: str | None

    def matches(self, gpu: GPU) -> bool:
        if self.node is not None and gpu.node != self.node:
            return False
        if self.namespace is not None and gpu.namespace != self.namespace:
            return False
        if self.pod is not None and gpu.pod != self.pod:
            return False
        return self.labels is None or (
            bool(gpu.pod) and all(gpu.pod_labels.get(k) == v for k, v in self.labels.items())
        )


class _ApiReader:
    """GETs against the API server with a bearer token (what the exporter needs: nodes, pods)."""

    def __init__(self, server: str, token: str, ca_cert: Path) -> None:
        self.server, self.token, self.ca_cert = server, token, ca_cert
        self._ctx: ssl.SSLContext | None = None

    def get(self, path: str) -> Any:
        if self._ctx is None:
            self._ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        req = urllib.request.Request(self.server + path)
        req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, context=self._ctx, timeout=10) as resp:
            return json.loads(resp.read())


class DcgmExporterStandIn:
    """dcgm-exporter's ``/metrics`` for every GPU of the simulated nodes, values set by tests.

    ``kubernetes=False`` serves no pod labels (dcgm-exporter without ``--kubernetes``);
    ``hostname_label="hostname"`` is main's spelling. Pods and nodes are read from the API
    server when ``/metrics`` is scraped (dcgm-exporter asks the kubelet's pod-resources API
    on every scrape too), at most every ``refresh_s`` seconds.
    """

    def __init__(
        self,
        server: str,
        token: str,
        ca_cert: Path,
        *,
        counters: Sequence[Counter] = STAND_IN_COUNTERS,
        hostname_label: str = "Hostname",
        kubernetes: bool = True,
        refresh_s: float = 0.5,
        port: int = 0,
    ) -> None:
        if hostname_label not in HOSTNAME_LABELS:
            raise SimError(f"hostname_label must be one of {HOSTNAME_LABELS}, got {hostname_label!r}")
        self.counters = tuple(counters)
        self.hostname_label = hostname_label
        self.kubernetes = kubernetes
        self.refresh_s = refresh_s
        self._api = _ApiReader(server, token, ca_cert)
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._allocator = GPUAllocator()
        self._gpus: list[GPU] = []
        self._read_at = 0.0
        self._started_at = time.monotonic()
        self._requested_port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.scrapes = 0

    @classmethod
    def for_cluster(cls, cluster: Any, **kwargs: Any) -> DcgmExporterStandIn:
        """One for a running :class:`~deepseek_operator.sim.cluster.SimCluster`."""
        assert cluster.pki is not None
        return cls(cluster.server, cluster.admin_token, cluster.pki.ca_cert, **kwargs)

    # ---- the API for tests

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise SimError("the dcgm-exporter stand-in is not started")
        return int(self._httpd.server_address[1])

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, a Prometheus target."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def set(
        self,
        metric: str,
        value: float,
        *,
        namespace: str | None = None,
        pod: str | None = None,
        labels: Mapping[str, str] | None = None,
        node: str | None = None,
    ) -> None:
        """Serve ``value`` for ``metric`` on the GPUs that match (all of them when nothing is given).

        ``namespace``/``pod`` match the pod holding the GPU, ``labels`` that pod's labels (a
        Deployment's selector, for instance), ``node`` the node. When several settings match a
        GPU, the latest wins: set all to 20, then one pod to 90.
        """
        names = {c.name for c in self.counters}
        if metric not in names:
            raise SimError(f"{metric} is not served by this exporter; served: {', '.join(sorted(names))}")
        with self._lock:
            self._rules = [
                r
                for r in self._rules
                if (r.metric, r.namespace, r.pod, r.labels, r.node) != (metric, namespace, pod, labels, node)
            ]
            self._rules.append(_Rule(metric, float(value), namespace, pod, labels, node))

    def reset(self) -> None:
        """Forget every value set: idle GPUs again."""
        with self._lock:
            self._rules.clear()

    def gpus(self) -> list[GPU]:
        """The GPUs as the next scrape sees them, with the pod holding each."""
        self._refresh(force=True)
        with self._lock:
            return list(self._gpus)

    def metrics_text(self) -> str:
        """What ``/metrics`` answers now."""
        self._refresh()
        with self._lock:
            return render(self._gpus, self._value, self.counters, self.hostname_label)

    def start(self) -> None:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                try:
                    body = exporter.metrics_text().encode()
                except (OSError, ValueError) as e:
                    self.send_error(500, str(e)[:200])
                    return
                exporter.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                # /set?metric=M&value=V[&namespace=NS][&pod=P][&node=N]: what set() does, for the
                # demo and for people trying an HPA by hand.
                url = urllib.parse.urlparse(self.path)
                q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
                if url.path != "/set" or "metric" not in q or "value" not in q:
                    self.send_error(400, "POST /set?metric=NAME&value=NUMBER[&namespace=NS][&pod=P][&node=N]")
                    return
                try:
                    exporter.set(
                        q["metric"], float(q["value"]), namespace=q.get("namespace"), pod=q.get("pod"),
                        node=q.get("node"),
                    )  # fmt: skip
                except (SimError, ValueError) as e:
                    self.send_error(400, str(e)[:200])
                    return
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._requested_port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="dcgm-exporter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> DcgmExporterStandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- internals

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._read_at < self.refresh_s:
            return
        nodes: dict[str, SimNode] = {}
        for n in self._api.get("/api/v1/nodes")["items"]:
            meta, status = n.get("metadata") or {}, n.get("status") or {}
            count = int(str((status.get("capacity") or {}).get(GPU_RESOURCE, "0")))
            if count > 0:
                labels = meta.get("labels") or {}
                nodes[meta["name"]] = SimNode(
                    labels.get(GPU_PRODUCT_LABEL, "NVIDIA-GPU"),
                    count,
                    int(labels.get(GPU_MEMORY_LABEL, "81559")),
                )
        pods = self._api.get("/api/v1/pods")["items"] if self.kubernetes else []
        gpus = self._allocator.assign(nodes, pods)
        with self._lock:
            self._gpus, self._read_at = gpus, now

    def _set_value(self, metric: str, gpu: GPU) -> float | None:
        for rule in reversed(self._rules):
            if rule.metric == metric and rule.matches(gpu):
                return rule.value
        return None

    def _value(self, counter: Counter, gpu: GPU) -> float:
        """A counter's value on a GPU: what a test set, else an idle GPU's (lock held)."""
        v = self._set_value(counter.name, gpu)
        if v is not None:
            return v
        if counter.name == "DCGM_FI_DEV_FB_FREE":
            used = self._set_value("DCGM_FI_DEV_FB_USED", gpu) or _IDLE["DCGM_FI_DEV_FB_USED"]
            reserved = self._set_value("DCGM_FI_DEV_FB_RESERVED", gpu) or _IDLE["DCGM_FI_DEV_FB_RESERVED"]
            return max(0.0, gpu.memory_mib - used - reserved)
        if counter.name == "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION":
            watts = self._set_value("DCGM_FI_DEV_POWER_USAGE", gpu) or _IDLE["DCGM_FI_DEV_POWER_USAGE"]
            return watts * 1000.0 * (time.monotonic() - self._started_at)  # mJ since "boot"
        return _IDLE.get(counter.name, 0.0)


# ---- Prometheus --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector."""

    labels: dict[str, str]
    value: float


def prometheus_binary() -> Path:
    """Debian's ``prometheus`` (or ``DSO_PROMETHEUS``); says how to install it when missing."""
    if override := os.environ.get("DSO_PROMETHEUS"):
        return Path(override)
    found = shutil.which("prometheus")
    if not found:
        raise ToolsMissingError(
            "prometheus is not installed; run hack/install-monitoring-tools.sh "
            "(Debian's 'prometheus' package, about 15 s)"
        )
    return Path(found)


@dataclass
class ScrapeJob:
    """A static scrape job: ``targets`` (``host:port``), each with the same extra ``labels``."""

    name: str
    targets: list[str]
    labels: dict[str, str] = field(default_factory=dict)
    honor_labels: bool = True
    metrics_path: str = "/metrics"
    scheme: str = "http"
    scrape_interval: str | None = None

    def config(self) -> dict[str, Any]:
        job: dict[str, Any] = {
            "job_name": self.name,
            "honor_labels": self.honor_labels,
            "metrics_path": self.metrics_path,
            "scheme": self.scheme,
            "static_configs": [{"targets": list(self.targets), "labels": dict(self.labels)}],
        }
        if self.scrape_interval:
            job["scrape_interval"] = self.scrape_interval
        return job


class Prometheus:
    """A real Prometheus on 127.0.0.1 with a configuration this object writes.

    Jobs and rule files can change while it runs (:meth:`add_job`, :meth:`set_rule_files`):
    the file is rewritten and Prometheus reloaded through ``/-/reload``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        jobs: Sequence[ScrapeJob] = (),
        rule_files: Sequence[Path] = (),
        port: int = 0,
    ) -> None:
        self.workdir = workdir
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.jobs: dict[str, ScrapeJob] = {j.name: j for j in jobs}
        self.rule_files = [Path(p) for p in rule_files]
        self._requested_port = port
        self.port = 0
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def config(self) -> dict[str, Any]:
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [j.config() for j in self.jobs.values()],
        }

    def start(self, timeout: float = 30.0) -> None:
        binary = prometheus_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self.port = self._requested_port or free_port()
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                [
                    str(binary),
                    f"--config.file={self.config_path}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                    "--storage.tsdb.retention.time=1h",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._popen.poll() is not None:
                raise SimError(
                    f"prometheus exited with code {self._popen.returncode}; log:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                if self._get("/-/ready", raw=True):
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise SimError(f"prometheus did not become ready in {timeout:.0f} s; log:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait(timeout=10)
        self._popen = None

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ---- changing what it scrapes and evaluates

    def add_job(self, name: str, targets: Sequence[str], **kwargs: Any) -> None:
        """Add (or replace) a static scrape job and reload."""
        self.jobs[name] = ScrapeJob(name, list(targets), **kwargs)
        self.reload()

    def remove_job(self, name: str) -> None:
        self.jobs.pop(name, None)
        self.reload()

    def set_rule_files(self, paths: Sequence[Path]) -> None:
        """Evaluate these rule files (recording and alerting rules) from now on."""
        self.rule_files = [Path(p) for p in paths]
        self.reload()

    def reload(self) -> None:
        """Rewrite the configuration and ask Prometheus to load it; raises if it refuses."""
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        if self.running():
            req = urllib.request.Request(self.url + "/-/reload", method="POST")
            try:
                with urllib.request.urlopen(req, timeout=10):
                    pass
            except urllib.error.HTTPError as e:
                raise SimError(f"prometheus refused its new configuration: {e.read().decode()[:500]}") from e

    # ---- asking it

    def _get(self, path: str, raw: bool = False) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            body = resp.read()
        return body if raw else json.loads(body)

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>`` and its ``data``; raises :class:`SimError` with Prometheus' error."""
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        try:
            answer = self._get(f"/api/v1/{path}{query}")
        except urllib.error.HTTPError as e:
            raise SimError(f"prometheus: {path}: HTTP {e.code}: {e.read().decode()[:300]}") from e
        if answer.get("status") != "success":
            raise SimError(f"prometheus: {path}: {answer.get('error')}")
        return answer["data"]

    def query(self, expr: str) -> list[Sample]:
        """An instant query; a vector's samples (a scalar as one sample with no labels)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "vector":
            return [Sample(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        raise SimError(f"prometheus: {expr!r} gave a {data['resultType']}, not a vector")

    def values(self, expr: str) -> list[float]:
        """The sample values of an instant query, sorted."""
        return sorted(s.value for s in self.query(expr))

    def targets(self) -> list[dict[str, Any]]:
        """The active targets (``labels``, ``health``, ``lastError``, ...)."""
        return list(self.api("targets")["activeTargets"])

    def wait_for(
        self, expr: str, predicate: Callable[[list[float]], bool], timeout: float = 30.0
    ) -> list[float]:
        """Poll ``expr`` until ``predicate(values)`` holds; raise with the last values if it never does."""
        deadline = time.monotonic() + timeout
        last: list[float] = []
        while True:
            with contextlib.suppress(SimError, OSError):
                last = self.values(expr)
                if predicate(last):
                    return last
            if time.monotonic() > deadline:
                raise SimError(
                    f"prometheus: {expr!r} did not reach the expected value in {timeout:.0f} s: {last}"
                )
            time.sleep(0.2)


# ---- prometheus-adapter -------------------------------------------------------------------------

ADAPTER_API_SERVICE = "v1beta1.custom.metrics.k8s.io"
ADAPTER_NAMESPACE = "monitoring"
ADAPTER_SERVICE = "prometheus-adapter"


def adapter_binary() -> Path:
    """prometheus-adapter from the tool cache (``hack/build-adapter.sh``)."""
    from deepseek_operator.sim.tools import tool_path  # noqa: PLC0415

    return tool_path("prometheus-adapter")


def api_service_objects(port: int) -> list[dict[str, Any]]:
    """The custom metrics APIService and the ``ExternalName`` Service (``localhost``) it points at:
    without ``--enable-aggregator-routing`` the API server dials the Service's name and port, so
    an adapter on 127.0.0.1 is reached with no kube-proxy (TESTBED.md)."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ADAPTER_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": ADAPTER_SERVICE, "namespace": ADAPTER_NAMESPACE},
            "spec": {"type": "ExternalName", "externalName": "localhost", "ports": [{"port": port}]},
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": ADAPTER_API_SERVICE},
            "spec": {
                "group": "custom.metrics.k8s.io",
                "version": "v1beta1",
                "service": {"namespace": ADAPTER_NAMESPACE, "name": ADAPTER_SERVICE, "port": port},
                "insecureSkipTLSVerify": True,  # the adapter's self-signed serving certificate
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


class PrometheusAdapter:
    """prometheus-adapter v0.12.0 on 127.0.0.1 as the cluster's custom metrics API server."""

    def __init__(
        self,
        workdir: Path,
        kubeconfig: Path,
        prometheus_url: str,
        rules: Mapping[str, Any],
        *,
        relist_interval: str = "1s",
        port: int = 0,
    ) -> None:
        self.workdir = workdir
        self.kubeconfig = kubeconfig
        self.prometheus_url = prometheus_url
        self.rules = dict(rules)
        self.relist_interval = relist_interval
        self._requested_port = port
        self.port = 0
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus-adapter.log"

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        binary = adapter_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "adapter-config.yaml"
        config.write_text(yaml.safe_dump(self.rules, sort_keys=False))
        self.port = self.port or self._requested_port or free_port()  # a restart keeps its port
        kc = str(self.kubeconfig)
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                [
                    str(binary),
                    f"--secure-port={self.port}",
                    "--bind-address=127.0.0.1",
                    f"--cert-dir={self.workdir / 'adapter-certs'}",
                    f"--lister-kubeconfig={kc}",
                    f"--authentication-kubeconfig={kc}",
                    f"--authorization-kubeconfig={kc}",
                    f"--prometheus-url={self.prometheus_url}/",
                    f"--config={config}",
                    # How often it asks Prometheus which series exist (new pods' series are
                    # served after the next relist); the default is 10 min.
                    f"--metrics-relist-interval={self.relist_interval}",
                    "--v=1",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        deadline = time.monotonic() + timeout
        while not _https_ok(f"https://127.0.0.1:{self.port}/healthz"):
            if self._popen.poll() is not None:
                raise SimError(
                    f"prometheus-adapter exited with code {self._popen.returncode}; log:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise SimError(f"prometheus-adapter not healthy in {timeout:.0f} s; log:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait(timeout=10)
        self._popen = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# ---- both, for one simulated cluster -----------------------------------------------------------

EXPORTER_JOB = "dcgm-exporter"


class Monitoring:
    """The dcgm-exporter stand-in, Prometheus (scraping it every second) and, with
    ``adapter=True``, prometheus-adapter registered as the cluster's custom metrics API, for a
    SimCluster. ``label_layout`` picks the adapter rules' label names (see builders/autoscaling)."""

    def __init__(
        self,
        cluster: Any,
        *,
        workdir: Path | None = None,
        scrape_interval: str = "1s",
        exporter_options: Mapping[str, Any] | None = None,
        adapter: bool = False,
        relist_interval: str = "1s",
        rate_window: str = "10s",
        label_layout: str = "dcgm-exporter",
    ) -> None:
        from deepseek_operator.builders.autoscaling import adapter_rules, metric_names  # noqa: PLC0415

        self.cluster = cluster
        self._owns_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="dso-monitoring-"))
        self.exporter = DcgmExporterStandIn.for_cluster(cluster, **dict(exporter_options or {}))
        self.prometheus = Prometheus(self.workdir / "prometheus", scrape_interval=scrape_interval)
        self.adapter: PrometheusAdapter | None = None
        if adapter:
            rules = adapter_rules(label_layout, metric_names(), rate_window)
            self.adapter = PrometheusAdapter(
                self.workdir / "adapter", cluster.kubeconfig, "", rules, relist_interval=relist_interval
            )

    def start(self, timeout: float = 60.0) -> None:
        try:
            self.exporter.start()
            self.prometheus.jobs[EXPORTER_JOB] = ScrapeJob(EXPORTER_JOB, [self.exporter.address])
            self.prometheus.start()
            if self.adapter is not None:
                self.adapter.prometheus_url = self.prometheus.url
                self.adapter.start(timeout)
                self.register_api_service()
                self.wait_api_service(timeout)
        except BaseException:
            self.stop()
            raise

    def register_api_service(self) -> None:
        """Create (or re-create) the APIService and its Service for the running adapter."""
        assert self.adapter is not None
        for obj in api_service_objects(self.adapter.port):
            self._apply(obj)

    def unregister_api_service(self) -> None:
        """Delete the APIService (the hop "no custom metrics API" of the Autoscaling condition)."""
        path = f"/apis/apiregistration.k8s.io/v1/apiservices/{ADAPTER_API_SERVICE}"
        with contextlib.suppress(SimError):
            self.cluster._api_request("DELETE", path)

    def api_service_available(self) -> bool:
        got = (
            self.cluster._api_get(f"/apis/apiregistration.k8s.io/v1/apiservices/{ADAPTER_API_SERVICE}") or {}
        )
        conds = {c["type"]: c["status"] for c in (got.get("status") or {}).get("conditions") or []}
        return conds.get("Available") == "True"

    def wait_api_service(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.api_service_available():
            if time.monotonic() > deadline:
                log = self.adapter.log_tail() if self.adapter else ""
                raise SimError(
                    f"APIService {ADAPTER_API_SERVICE} not Available in {timeout:.0f} s; adapter log:\n{log}"
                )
            time.sleep(0.2)

    def custom_metric(self, namespace: str, metric: str, pods: str = "*") -> list[tuple[str, str]]:
        """``kubectl get --raw /apis/custom.metrics.k8s.io/v1beta1/namespaces/NS/pods/*/METRIC``:
        (pod, value) pairs as the HPA reads them; [] when the metric is not served."""
        base = f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{namespace}"
        path = f"{base}/pods/{urllib.parse.quote(pods)}/{metric}"
        got = self.cluster._api_get(path) or {}
        return sorted((i["describedObject"]["name"], i["value"]) for i in got.get("items") or [])

    def _apply(self, obj: Mapping[str, Any]) -> None:
        kind, meta = obj["kind"], obj["metadata"]
        base = {
            "Namespace": "/api/v1/namespaces",
            "Service": f"/api/v1/namespaces/{meta.get('namespace')}/services",
            "APIService": "/apis/apiregistration.k8s.io/v1/apiservices",
        }[kind]
        try:
            self.cluster._api_request("POST", base, obj)
        except SimError as e:
            if "HTTP 409" not in str(e):
                raise
            if kind != "Namespace":
                current = self.cluster._api_request("GET", f"{base}/{meta['name']}")
                body = {
                    **obj,
                    "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]},
                }
                self.cluster._api_request("PUT", f"{base}/{meta['name']}", body)

    def stop(self) -> None:
        if self.adapter is not None:
            with contextlib.suppress(Exception):
                self.adapter.stop()
        with contextlib.suppress(Exception):
            self.prometheus.stop()
        with contextlib.suppress(Exception):
            self.exporter.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Monitoring:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pids(self) -> dict[str, int]:
        out = {}
        if self.prometheus.pid is not None and self.prometheus.running():
            out["prometheus"] = self.prometheus.pid
        if self.adapter is not None and self.adapter.pid is not None and self.adapter.running():
            out["prometheus-adapter"] = self.adapter.pid
        return out
