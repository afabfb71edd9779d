"""The embedded simulated cluster: a real control plane with simulated GPU nodes.

:class:`SimCluster` starts etcd, kube-apiserver (TLS, token authentication,
RBAC), kube-controller-manager, kube-scheduler and kwok as local processes bound
to 127.0.0.1 on free ports, with every file in one temporary folder. It waits
until each is ready, registers the simulated nodes, and stops every process it
started, also when starting fails half-way.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deepseek_operator.errors import SimError
from deepseek_operator.sim import lws
from deepseek_operator.sim.gpus import GPUPool, node_manifests, parse_gpu_spec, volume_manifests
from deepseek_operator.sim.pki import FRONT_PROXY_CLIENT_CN, PKI, write_pki
from deepseek_operator.sim.procs import (
    _die_with_parent,
    _http_ok,
    _https_ok,
    free_port,  # also imported from here by tests and bench
)
from deepseek_operator.sim.tools import Tools, find_tools, tool_path

SERVICE_CIDR = "10.0.0.0/16"  # room for thousands of Services (bench/loop.py); a /24 runs out at 254
SERVICE_IP = "10.0.0.1"
KWOK_STAGES = Path(__file__).with_name("kwok-stages.yaml")
COMPONENTS = ("lws", "monitoring")  # optional components `sim up --with` starts
ADMIN_USER = "sim-admin"
DEVELOPER_USER = "sim-developer"  # authenticated, but granted nothing: for RBAC tests
STOP_GRACE_SECONDS = 10.0

# Client rate limits of the controller-manager and the scheduler (requests/s, burst).
_CLIENT_RATE = ("--kube-api-qps=500", "--kube-api-burst=1000")


@dataclass
class _Process:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        log = self.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # an interrupt of the terminal must not reach it before we stop it
                # Only prctl runs in the child before exec; no locks are taken there.
                preexec_fn=_die_with_parent,  # noqa: PLW1509
                env=env,
            )
        finally:
            log.close()

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check(self) -> None:
        """Raise :class:`SimError` with the end of its log if the process has exited."""
        if self.popen is not None and self.popen.poll() is not None:
            raise SimError(
                f"{self.name} exited with code {self.popen.returncode} while starting; "
                f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
            )

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=grace)


@dataclass
class SimCluster:
    """A running (or runnable) simulated cluster.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``gpus`` is a
    pool spec such as ``"h100:2x8,a100-80gb:1x4"``; ``cpu_nodes`` adds plain,
    untainted nodes for workloads that need no GPU.
    """

    gpus: str = "h100:2x8"
    cpu_nodes: int = 0
    # Optional components: "lws" runs the real LeaderWorkerSet controller (sim/lws.py);
    # "monitoring" the dcgm-exporter stand-in, Prometheus and prometheus-adapter as the custom
    # metrics API (sim/monitoring.py), so that HPAs on GPU utilization work.
    with_components: tuple[str, ...] = ()
    # kube-controller-manager's --horizontal-pod-autoscaler-sync-period (default 15s); tests shorten it.
    hpa_sync_period: str = ""
    tools: Tools | None = None
    base_dir: Path | None = None
    progress: Callable[[str], None] | None = None
    # An audit policy (audit.k8s.io/v1 Policy): the API server then logs what it says to
    # audit_log, one JSON event a line (tests compare what an identity used with its roles).
    audit_policy: Path | None = None

    workdir: Path = field(init=False)
    pools: list[GPUPool] = field(init=False)
    api_port: int = field(init=False, default=0)
    admin_token: str = field(init=False, default="")
    developer_token: str = field(init=False, default="")
    pki: PKI | None = field(init=False, default=None)
    monitoring: Any = field(init=False, default=None)  # sim.monitoring.Monitoring with --with monitoring
    _processes: list[_Process] = field(init=False, default_factory=list)
    _owns_workdir: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.pools = parse_gpu_spec(self.gpus)  # a bad spec fails before anything starts
        if self.cpu_nodes < 0:
            raise SimError(f"cpu_nodes must be 0 or more, got {self.cpu_nodes}")
        unknown = sorted(set(self.with_components) - set(COMPONENTS))
        if unknown:
            raise SimError(
                f"--with {', '.join(unknown)}: unknown; optional components: {', '.join(COMPONENTS)}"
            )

    # ---- public surface -------------------------------------------------

    @property
    def server(self) -> str:
        """The API server's URL."""
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        """A kubeconfig for the cluster administrator (group ``system:masters``)."""
        return self.workdir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log (written only with ``audit_policy``)."""
        return self.workdir / "audit.log"

    @property
    def developer_kubeconfig(self) -> Path:
        """A kubeconfig for an authenticated user that RBAC grants nothing."""
        return self.workdir / "developer.kubeconfig"

    @property
    def pids(self) -> dict[str, int]:
        """The pid of every process this cluster started and that still runs."""
        pids = {p.name: p.pid for p in self._processes if p.pid is not None and p.running()}
        if self.monitoring is not None:
            pids.update(self.monitoring.pids)
        return pids

    def __enter__(self) -> SimCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 180.0) -> None:
        """Start every component and wait until the cluster is ready to use.

        On any failure everything already started is stopped and the temporary
        folder removed before :class:`SimError` is raised.
        """
        deadline = time.monotonic() + timeout
        try:
            tools = self.tools or find_tools()
            self.workdir = Path(tempfile.mkdtemp(prefix="dso-sim-", dir=self.base_dir))
            self._owns_workdir = True
            self._start(tools, deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process this cluster started (newest first) and remove its folder."""
        if self.monitoring is not None:
            with contextlib.suppress(Exception):
                self.monitoring.stop()
            self.monitoring = None
        for proc in reversed(self._processes):
            with contextlib.suppress(Exception):
                proc.stop()
        self._processes.clear()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._owns_workdir = False

    def check_running(self) -> None:
        """Raise :class:`SimError` naming the first component that is no longer running."""
        for proc in self._processes:
            if not proc.running():
                raise SimError(f"{proc.name} exited unexpectedly; its log ends with:\n{proc.log_tail()}")
        if self.monitoring is not None and not self.monitoring.prometheus.running():
            raise SimError(
                f"prometheus exited unexpectedly; its log ends with:\n{self.monitoring.prometheus.log_tail()}"
            )

    def api_client(self, developer: bool = False) -> Any:
        """A ``kubernetes.client.ApiClient`` for the admin (or the unprivileged developer)."""
        from kubernetes import client, config  # noqa: PLC0415 - heavy import, only when used

        path = self.developer_kubeconfig if developer else self.kubeconfig
        return config.new_client_from_config(
            config_file=str(path), client_configuration=client.Configuration()
        )

    def kubectl_env(self) -> dict[str, str]:
        """The environment for a ``kubectl`` (or any client) aimed at this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    # ---- starting -------------------------------------------------------

    def _say(self, message: str) -> None:
        if self.progress:
            self.progress(message)

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        proc = _Process(name, argv, self.workdir / "logs" / f"{name}.log")
        proc.start()
        self._processes.append(proc)
        return proc

    def _start(self, tools: Tools, deadline: float) -> None:
        (self.workdir / "logs").mkdir()
        self.pki = pki = write_pki(self.workdir / "pki", service_ip=SERVICE_IP)
        self.admin_token = secrets.token_hex(24)
        self.developer_token = secrets.token_hex(24)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(
            f'{self.admin_token},{ADMIN_USER},uid-admin,"system:masters"\n'
            f"{self.developer_token},{DEVELOPER_USER},uid-developer\n"
        )
        tokens.chmod(0o600)

        etcd_port, etcd_peer = free_port(), free_port()
        self._say("starting etcd")
        etcd = self._spawn(
            "etcd",
            [
                str(tools.etcd),
                "--name=sim",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=sim=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync=true",  # a throwaway store: durability buys nothing here
                "--log-level=warn",
            ],
        )
        self._wait(etcd, deadline, lambda: _http_ok(f"http://127.0.0.1:{etcd_port}/health"))

        self.api_port = free_port()
        self._say("starting kube-apiserver")
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(tools.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--secure-port={self.api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer=https://127.0.0.1:{self.api_port}",
                f"--service-account-key-file={pki.sa_public_key}",
                f"--service-account-signing-key-file={pki.sa_private_key}",
                f"--token-auth-file={tokens}",
                # No kubelet mounts tokens here; the plugin would only make pods
                # wait for a ServiceAccount that nothing needs.
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                # The kubernetes Service cannot point at a loopback address.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                # The aggregation layer (prometheus-adapter's custom metrics API, `--with
                # monitoring`): the API server proxies to an APIService's server with this client
                # certificate and says who asked in these headers. No --enable-aggregator-routing:
                # an ExternalName Service (localhost) is then reached without kube-proxy.
                f"--requestheader-client-ca-file={pki.front_proxy_ca}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT_CN}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.front_proxy_client_cert}",
                f"--proxy-client-key-file={pki.front_proxy_client_key}",
                *self._audit_args(),
            ],
        )
        self._wait(apiserver, deadline, lambda: self._api_get("/readyz") is not None)
        self._write_kubeconfig(self.kubeconfig, ADMIN_USER, self.admin_token)
        self._write_kubeconfig(self.developer_kubeconfig, DEVELOPER_USER, self.developer_token)

        cm_port = free_port()
        self._say("starting kube-controller-manager")
        controller_manager = self._spawn(
            "kube-controller-manager",
            [
                str(tools.kube_controller_manager),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={cm_port}",
                f"--service-account-private-key-file={pki.sa_private_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*",
                # The defaults (20 requests/s, 5 concurrent syncs) make the controller-manager the
                # bottleneck once hundreds of workloads start at once (bench/loop.py); large real
                # clusters raise them too.
                *_CLIENT_RATE,
                "--concurrent-deployment-syncs=20",
                "--concurrent-replicaset-syncs=20",
                "--concurrent-job-syncs=20",
                *(
                    [f"--horizontal-pod-autoscaler-sync-period={self.hpa_sync_period}"]
                    if self.hpa_sync_period
                    else []
                ),
            ],
        )
        sched_port = free_port()
        self._say("starting kube-scheduler")
        scheduler = self._spawn(
            "kube-scheduler",
            [
                str(tools.kube_scheduler),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                *_CLIENT_RATE,  # 50 requests/s by default: one bind per pod
            ],
        )
        self._wait(controller_manager, deadline, lambda: _https_ok(f"https://127.0.0.1:{cm_port}/healthz"))
        self._wait(scheduler, deadline, lambda: _https_ok(f"https://127.0.0.1:{sched_port}/healthz"))

        self._say("starting kwok")
        kwok = self._spawn(
            "kwok",
            [
                str(tools.kwok),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={KWOK_STAGES}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--server-address=127.0.0.1:{free_port()}",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.96.0.1",
            ],
        )
        nodes = node_manifests(self.pools, self.cpu_nodes)
        self._say(f"registering {len(nodes)} simulated nodes")
        for node in nodes:
            self._api_request("POST", "/api/v1/nodes", node)
        for volume in volume_manifests(host_dir=str(self.workdir / "volumes")):
            self._api_request("POST", "/api/v1/persistentvolumes", volume)
        names = {n["metadata"]["name"] for n in nodes}
        self._wait(kwok, deadline, lambda: self._ready_nodes() >= names, what="nodes to become Ready")
        self._wait(kwok, deadline, self._default_namespace_ready, what="the default namespace")
        if "lws" in self.with_components:
            self._start_lws(deadline)
        if "monitoring" in self.with_components:
            from deepseek_operator.sim.monitoring import Monitoring  # noqa: PLC0415

            self._say("starting Prometheus, the dcgm-exporter stand-in and prometheus-adapter")
            self.monitoring = Monitoring(self, workdir=self.workdir / "monitoring", adapter=True)
            self.monitoring.start(max(10.0, deadline - time.monotonic()))
        self._say("cluster ready")

    def _audit_args(self) -> list[str]:
        if self.audit_policy is None:
            return []
        return [
            f"--audit-policy-file={self.audit_policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",  # every event is in the file when the request returns
        ]

    def _start_lws(self, deadline: float) -> None:
        """The real LeaderWorkerSet controller, its CRDs and its webhooks (sim/lws.py)."""
        assert self.pki is not None
        binary = tool_path("lws-controller")
        tool_dir = binary.parent
        self._say("installing the LeaderWorkerSet CRDs")
        names = []
        for crd in lws.crds(tool_dir):
            self._api_request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
            names.append(crd["metadata"]["name"])
        files = lws.write_config(
            self.workdir, self.pki.serving_cert, self.pki.serving_key, free_port(), free_port()
        )
        self._say("starting lws-controller")
        controller = self._spawn(
            "lws-controller", [str(binary), f"--kubeconfig={self.kubeconfig}", f"--config={files.config}"]
        )
        self._wait(
            controller,
            deadline,
            lambda: all(self._crd_established(n) for n in names),
            what="the LeaderWorkerSet CRDs to be Established",
        )
        self._wait(controller, deadline, lambda: _http_ok(f"http://127.0.0.1:{files.health_port}/readyz"))
        for hooks in lws.webhook_configurations(tool_dir, files.webhook_port, self.pki.ca_cert):
            kind = hooks["kind"].lower() + "s"
            self._api_request("POST", f"/apis/admissionregistration.k8s.io/v1/{kind}", hooks)
        probe = lws.probe_object()
        path = "/apis/leaderworkerset.x-k8s.io/v1/namespaces/default/leaderworkersets?dryRun=All"
        self._wait(
            controller,
            deadline,
            lambda: self._api_request("POST", path, probe) is not None,
            what="the LeaderWorkerSet webhooks to answer",
        )

    def _crd_established(self, name: str) -> bool:
        crd = self._api_get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}") or {}
        conds = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
        return conds.get("Established") == "True"

    def _wait(
        self, proc: _Process, deadline: float, ready: Callable[[], bool], what: str | None = None
    ) -> None:
        what = what or proc.name
        while True:
            for p in self._processes:
                p.check()
            try:
                if ready():
                    return
            except (OSError, SimError):
                pass
            if time.monotonic() > deadline:
                raise SimError(
                    f"timed out waiting for {what}; the log of {proc.name} ({proc.log_path}) ends with:\n"
                    f"{proc.log_tail()}"
                )
            time.sleep(0.25)

    # ---- talking to the API server (only what starting needs) ------------

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.pki is not None
        return ssl.create_default_context(cafile=str(self.pki.ca_cert))

    def _api_request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.admin_token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self._ssl_context(), timeout=10) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise SimError(
                f"{method} {path}: HTTP {e.code}: {e.read().decode(errors='replace')[:500]}"
            ) from e
        return json.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode()

    def _api_get(self, path: str) -> Any:
        try:
            return self._api_request("GET", path)
        except (SimError, OSError):
            return None

    def _ready_nodes(self) -> set[str]:
        nodes = self._api_get("/api/v1/nodes") or {"items": []}
        ready = set()
        for node in nodes["items"]:
            for cond in node.get("status", {}).get("conditions", []):
                if cond["type"] == "Ready" and cond["status"] == "True":
                    ready.add(node["metadata"]["name"])
        return ready

    def _default_namespace_ready(self) -> bool:
        return self._api_get("/api/v1/namespaces/default") is not None

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        assert self.pki is not None
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "dso-sim",
                    "cluster": {"server": self.server, "certificate-authority": str(self.pki.ca_cert)},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {"name": user, "context": {"cluster": "dso-sim", "user": user, "namespace": "default"}}
            ],
            "current-context": user,
        }
        path.write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
        path.chmod(0o600)


@contextlib.contextmanager
def running_cluster(gpus: str = "h100:2x8", cpu_nodes: int = 0, **kwargs: Any) -> Iterator[SimCluster]:
    """Start a :class:`SimCluster`, yield it, and stop it whatever happens."""
    cluster = SimCluster(gpus=gpus, cpu_nodes=cpu_nodes, **kwargs)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
