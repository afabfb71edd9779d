"""Observability end to end, on the simulated cluster with real components: the operator
(`deepseek-operator run --metrics-port`, a child process), two real Triton servers standing in
for the revisions' pods, the dcgm-exporter stand-in and Debian's Prometheus scraping all three
(sim/monitoring.py). One sample is deployed, gets a canary that turns slow and is rolled back;
a second sample cannot be placed. Then:

* every query of the Grafana dashboard and the signal of every alert (its expression without
  the final comparison), evaluated through Prometheus' HTTP API, returns series for the samples;
* the alert rules (rendered from the chart with short durations) fire: the rollback that really
  happened, a GPU the test heats past 85 °C on the dcgm-exporter stand-in, and requests the test
  makes fail past 5 % on a Triton stand-in; each alert names the deployment;
* ``deepseek-operator diagnose`` on the rolled-back sample writes one archive with the listed
  contents, and a Secret's value never appears in it.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from deepseek_operator.api import names
from deepseek_operator.api.constants import GROUP, PLURAL, VERSION
from deepseek_operator.kube import client as kube
from deepseek_operator.rollout.analysis import map_revision
from deepseek_operator.rollout.golden import GoldenCase
from deepseek_operator.rollout.probe import run_cases
from deepseek_operator.sim.cluster import SimCluster
from deepseek_operator.sim.monitoring import Monitoring
from deepseek_operator.sim.standin import StandInServer
from deepseek_operator.sim.tools import repo_root
from tests.integration.test_rollout import ANSWERS, GOLDEN, _body
from tests.support.plugin import wait_for

ROOT = repo_root()
SAMPLE, REFUSED = "sample", "refused"
SECRET_VALUE = f"s3cr3t-{uuid.uuid4().hex}"
JOB = "deepseek-operator"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _render_module() -> Any:
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("render_monitoring", ROOT / "hack" / "render-monitoring.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class World:
    cluster: SimCluster
    namespace: str
    mon: Monitoring
    operator_log: Path
    pods: dict[str, str]  # revision -> one of its serving pods
    stable: str
    canary: str
    workdir: Path
    servers: dict[str, StandInServer] | None = None

    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.cluster.api_client())

    def status(self, name: str = SAMPLE) -> dict[str, Any]:
        obj = self.custom().get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        return dict(obj.get("status") or {})


def _apply(api: Any, namespace: str, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        body["metadata"]["name"],
        copy.deepcopy(body),
        field_manager="test-user",
        _content_type="application/apply-patch+yaml",
    )


def _serving_pods(core: client.CoreV1Api, namespace: str, revision: str) -> list[str]:
    selector = names.label_selector(names.revision_selector(SAMPLE, revision))
    return sorted(
        p.metadata.name
        for p in core.list_namespaced_pod(namespace, label_selector=selector).items
        if p.metadata.deletion_timestamp is None
    )


@pytest.fixture(scope="module")
def world(
    sim_cluster: SimCluster, crds: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    api = sim_cluster.api_client()
    core = client.CoreV1Api(api)
    workdir = tmp_path_factory.mktemp("observability")
    namespace = f"t-obs-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace, "labels": {"dso-test": "true"}}})
    samples = ROOT / "manifests" / "samples"
    (pvc,) = [d for d in yaml.safe_load_all((samples / "model-store-pvc.yaml").read_text()) if d]
    kube.server_side_apply(api, pvc, "user", namespace)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "model-creds"}, "stringData": {"token": SECRET_VALUE}}
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "golden"}, "data": {"golden.jsonl": GOLDEN}}
    )
    servers = {role: StandInServer(ANSWERS, name=f"obs-{role}", instances=2) for role in ("good", "new")}
    endpoints = workdir / "endpoints.yaml"
    endpoints.write_text("{}\n")
    metrics_port = _free_port()
    operator_log = workdir / "operator.log"
    mon = Monitoring(sim_cluster, workdir=workdir / "monitoring")
    proc: subprocess.Popen[bytes] | None = None
    try:
        for server in servers.values():
            server.start()
        env = {**os.environ, "KUBECONFIG": str(sim_cluster.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "deepseek_operator",
                "run",
                "--endpoints",
                str(endpoints),
                "--metrics-port",
                str(metrics_port),
                "--metrics-address",
                "127.0.0.1",
            ],
            env=env,
            stdout=operator_log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        mon.start()
        # As the chart's ServiceMonitor: job deepseek-operator, the operator's own labels kept.
        mon.prometheus.add_job(JOB, [f"127.0.0.1:{metrics_port}"], honor_labels=True)

        body = _body(SAMPLE, replicas=2)
        body["spec"]["model"]["source"]["credentialsSecret"] = "model-creds"
        _apply(api, namespace, body)
        status = lambda: World(sim_cluster, namespace, mon, operator_log, {}, "", "", workdir).status()  # noqa: E731
        stable = wait_for(
            lambda: (status().get("revisions") or {}).get("stable"), 60, what="a stable revision"
        )
        map_revision(
            endpoints,
            f"{namespace}/{SAMPLE}/{stable}",
            servers["good"].http_address,
            servers["good"].metrics_url,
        )
        wait_for(
            lambda: status().get("phase") == "Ready" and (status().get("revisions") or {}).get("verified"),
            60,
            what="the first revision Ready and verified",
            detail=lambda: json.dumps(status()),
        )
        pods = {stable: _serving_pods(core, namespace, stable)[0]}
        # As the chart's PodMonitor would label each pod's Triton metrics port.
        mon.prometheus.add_job(
            "triton-stable",
            [servers["good"].metrics_url.removeprefix("http://").removesuffix("/metrics")],
            labels={"namespace": namespace, "pod": pods[stable], "name": SAMPLE},
            honor_labels=False,
        )
        body["spec"]["model"]["revision"] = "v2"
        body["spec"]["rollout"]["canary"]["successfulAnalyses"] = 20  # the canary stays a canary
        _apply(api, namespace, body)
        canary = wait_for(lambda: (status().get("revisions") or {}).get("canary"), 30, what="a canary")
        map_revision(
            endpoints,
            f"{namespace}/{SAMPLE}/{canary}",
            servers["new"].http_address,
            servers["new"].metrics_url,
        )
        wait_for(lambda: _serving_pods(core, namespace, canary), 30, what="the canary's pods")
        pods[canary] = _serving_pods(core, namespace, canary)[0]
        mon.prometheus.add_job(
            "triton-canary",
            [servers["new"].metrics_url.removeprefix("http://").removesuffix("/metrics")],
            labels={"namespace": namespace, "pod": pods[canary], "name": SAMPLE},
            honor_labels=False,
        )
        wait_for(
            lambda: any(
                h["verdict"] == "Pass" and h["revision"] == canary for h in status()["analysis"]["history"]
            ),
            30,
            what="a passing canary analysis",
        )
        servers["new"].set_behaviour(latency_ms=600)
        wait_for(
            lambda: status().get("lastRollback"), 40, what="the rollback", detail=lambda: json.dumps(status())
        )
        # A second sample that no GPU of the cluster can hold.
        refused = _body(REFUSED, replicas=1)
        refused["spec"]["model"]["id"] = "deepseek-ai/DeepSeek-R1"
        refused["spec"]["engine"]["precision"] = "bf16"
        refused["spec"]["gpu"] = {"products": ["NVIDIA-A100-SXM4-80GB"], "perReplica": 1}
        _apply(api, namespace, refused)
        wait_for(
            lambda: any(
                c["type"] == "Placed" and c["status"] == "False"
                for c in World(sim_cluster, namespace, mon, operator_log, {}, "", "", workdir)
                .status(REFUSED)
                .get("conditions")
                or []
            ),
            30,
            what="the refused sample's Placed=False",
        )
        yield World(
            sim_cluster, namespace, mon, operator_log, pods, str(stable), str(canary), workdir, servers
        )
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        mon.stop()
        for server in servers.values():
            server.stop()
        core.delete_namespace(namespace)


def _dashboard_queries(namespace: str) -> list[tuple[str, str]]:
    dashboard = json.loads(
        (ROOT / "charts" / "deepseek-operator" / "dashboards" / "deepseek-operator.json").read_text()
    )
    out = [(f"panel {p['title']!r}", t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    out += [(f"annotation {a['name']!r}", a["expr"]) for a in dashboard["annotations"]["list"]]
    # As Grafana substitutes the variables ($__rate_interval: at least 4 scrape intervals).
    return [
        (
            where,
            e.replace("$namespace", namespace).replace("$name", SAMPLE).replace("$__rate_interval", "10s"),
        )
        for where, e in out
    ]


def _signal(expr: str) -> str:
    """An alert expression without its final comparison (the chart writes every one that way)."""
    lines = expr.strip().splitlines()
    assert re.fullmatch(r"\s*(>|<|>=|<=|==)\s*[0-9.]+", lines[-1]), expr
    return "\n".join(lines[:-1])


def test_every_dashboard_query_returns_series_for_the_sample(world: World) -> None:
    prom = world.mon.prometheus
    # Give the scrapes a few intervals to cover the rate windows.
    prom.wait_for(f'nv_inference_request_success{{name="{SAMPLE}"}}', lambda v: len(v) == 2, timeout=30)
    time.sleep(3)
    empty = []
    for where, expr in _dashboard_queries(world.namespace):
        samples = prom.query(expr)
        if not samples:
            empty.append(f"{where}: {expr}")
    assert not empty, "queries that return nothing (broken panels):\n" + "\n".join(empty)
    # The GPU panels show the sample's own GPUs, named by its pods.
    (gpu_util,) = [
        e for where, e in _dashboard_queries(world.namespace) if where == "panel 'GPU utilization'"
    ]
    util = prom.query(gpu_util)
    assert util
    assert {s.labels["pod"] for s in util} <= set(_pods_now(world)), util
    assert all(s.labels["name"] == SAMPLE for s in util)


def _pods_now(world: World) -> list[str]:
    core = client.CoreV1Api(world.cluster.api_client())
    selector = names.label_selector(names.owned_selector(SAMPLE))
    return [p.metadata.name for p in core.list_namespaced_pod(world.namespace, label_selector=selector).items]


def test_every_alert_signal_returns_series_for_the_samples(world: World) -> None:
    prom = world.mon.prometheus
    groups = yaml.safe_load((ROOT / "manifests" / "monitoring" / "deepseek-operator.rules.yaml").read_text())[
        "groups"
    ]
    missing = []
    for rule in (r for g in groups for r in g["rules"]):
        samples = prom.query(_signal(rule["expr"]))
        if rule["alert"] == "DeepSeekOperatorDown":
            if [s.value for s in samples] != [1.0]:  # one replica, working
                missing.append(f"{rule['alert']}: {samples}")
            continue
        wanted = REFUSED if rule["alert"] == "DeepSeekPlacementRefused" else SAMPLE
        if not any(
            s.labels.get("name") == wanted and s.labels.get("namespace") == world.namespace for s in samples
        ):
            missing.append(f"{rule['alert']}: {_signal(rule['expr'])} -> {samples}")
    assert not missing, "alert signals without series for the samples:\n" + "\n".join(missing)


def test_alerts_fire_and_name_the_deployment(world: World) -> None:
    render = _render_module()
    groups = render.rule_groups(
        [
            'monitoring.alerts.gpuTemperature={"threshold": 85, "for": "2s", "severity": "warning"}',
            'monitoring.alerts.batchFailureRate={"threshold": 0.05, "window": "10s", "for": "2s", '
            '"severity": "warning"}',
        ]
    )
    path = world.workdir / "short.rules.yaml"
    path.write_text(render.rules_text(groups))
    prom = world.mon.prometheus
    prom.set_rule_files([path])

    def alerts(name: str, state: str = "firing") -> list[dict[str, Any]]:
        return [
            a
            for a in prom.api("alerts")["alerts"]
            if a["labels"]["alertname"] == name and a["state"] == state
        ]

    # Every rule loaded and evaluates without error.
    def evaluated() -> list[dict[str, Any]]:
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        return rules if all(r.get("lastEvaluation", "").startswith("2") for r in rules) else []

    rules = wait_for(evaluated, 10, what="every rule evaluated")
    assert len(rules) == 12 and all(r["health"] == "ok" for r in rules), rules
    # The rollback that happened, named.
    (rolled,) = wait_for(lambda: alerts("DeepSeekRolledBack"), 20, what="DeepSeekRolledBack firing")
    assert (rolled["labels"]["namespace"], rolled["labels"]["name"]) == (world.namespace, SAMPLE)
    assert f"diagnose {SAMPLE} -n {world.namespace}" in rolled["annotations"]["description"]
    # The GPUs idle at 33 °C: nothing fires; one pushed past 85 °C fires within its 2 s.
    time.sleep(3)
    assert not alerts("DeepSeekGPUTemperatureHigh") and not alerts("DeepSeekGPUTemperatureHigh", "pending")
    pod = world.pods[world.stable]
    world.mon.exporter.set("DCGM_FI_DEV_GPU_TEMP", 91, namespace=world.namespace, pod=pod)
    try:
        hot = wait_for(
            lambda: alerts("DeepSeekGPUTemperatureHigh"), 30, what="DeepSeekGPUTemperatureHigh firing"
        )
    finally:
        world.mon.exporter.reset()
    assert {(a["labels"]["namespace"], a["labels"]["name"], a["labels"]["pod"]) for a in hot} == {
        (world.namespace, SAMPLE, pod)
    }
    assert f"of {world.namespace}/{SAMPLE} (pod {pod}) at 91 °C" in hot[0]["annotations"]["summary"]
    # Triton: requests failing past 5 %, on the server of the rolled-back canary (its pod is gone,
    # its metrics still carry the deployment's name; no analysis sends to it any more).
    assert not alerts("DeepSeekBatchFailureRateHigh")
    assert world.servers is not None
    server = world.servers["new"]
    server.set_behaviour(error_rate=0.5)
    cases = [GoldenCase(prompt, "contains", answer) for prompt, answer in ANSWERS.items()] * 2
    try:
        deadline = time.monotonic() + 30
        failing: list[dict[str, Any]] = []
        while not failing and time.monotonic() < deadline:
            run_cases(server.http_address, "ensemble", "max_tokens", cases, 5.0)
            failing = alerts("DeepSeekBatchFailureRateHigh")
            time.sleep(0.3)
    finally:
        server.set_behaviour()
    assert [(a["labels"]["namespace"], a["labels"]["name"]) for a in failing] == [(world.namespace, SAMPLE)]
    assert f"of the requests to {world.namespace}/{SAMPLE} fail" in failing[0]["annotations"]["summary"]


def test_diagnose_archive_of_the_rolled_back_sample(world: World, tmp_path: Path) -> None:
    out = tmp_path / "report.tar.gz"
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "deepseek_operator",
            "diagnose",
            SAMPLE,
            "-n",
            world.namespace,
            "--kubeconfig",
            str(world.cluster.kubeconfig),
            "--operator-log",
            str(world.operator_log),
            "--prometheus",
            world.mon.prometheus.url,
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert took < 60, f"diagnose took {took:.1f} s: the incident plan wants diagnostics within a minute"
    with tarfile.open(out) as tar:
        members = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
        folders = {m.name.split("/", 1)[0] for m in tar.getmembers()}
    assert len(folders) == 1 and folders.pop().startswith(f"deepseek-diagnose-{world.namespace}-{SAMPLE}-")
    text = {k: v.decode() for k, v in members.items()}
    # The resource and its status: the rollback.
    resource = yaml.safe_load(text["resource.yaml"])
    assert resource["status"]["lastRollback"]["from"] == world.canary
    assert "managedFields" not in resource["metadata"]
    assert "last rollback" in text["summary.txt"] and world.canary in text["summary.txt"]
    # Events, revisions, owned objects, model repositories.
    assert any(e["reason"] == "RolledBack" for e in yaml.safe_load(text["events.yaml"]))
    revisions = yaml.safe_load(text["controllerrevisions.yaml"])
    assert {names.controller_revision_name(SAMPLE, r) for r in (world.stable, world.canary)} <= {
        r["metadata"]["name"] for r in revisions
    }
    assert f"objects/Deployment-{names.workload_name(SAMPLE, world.stable)}.yaml" in members
    assert f"objects/Service-{names.serving_name(SAMPLE)}.yaml" in members
    assert f"model-repository/{names.model_repository_name(SAMPLE, world.stable)}.yaml" in members
    # Every pod: its description and each container's last logs, the previous instance's too.
    pods = _pods_now(world)
    assert pods
    for pod in pods:
        described = yaml.safe_load(text[f"pods/{pod}/pod.yaml"])
        for container in described["spec"]["containers"]:
            assert f"pods/{pod}/{container['name']}.log" in members
            assert f"pods/{pod}/{container['name']}.previous.log" in members
            # kwok's nodes run no kubelet: the API server accepted the log request and could not
            # reach the kubelet for it (the path shows what was asked); a real node answers it.
            log = text[f"pods/{pod}/{container['name']}.log"]
            asked = f"containerLogs/{world.namespace}/{pod}/{container['name']}?tailLines=500"
            assert not log.startswith("# not available") or asked in log, log
    # The GPU inventory and the plan; the operator's log lines about the sample; the alerts.
    nodes = yaml.safe_load(text["nodes.yaml"])
    assert nodes["gpuNodes"] and nodes["placement"]["gpuProduct"] == "NVIDIA-H100-80GB-HBM3"
    assert all("nvidia.com/gpu.product" in n["labels"] for n in nodes["gpuNodes"])
    operator_lines = text["operator.log"].splitlines()
    assert all(f"{world.namespace}/{SAMPLE}:" in line for line in operator_lines), operator_lines
    rolled_back = [line for line in operator_lines if "Warning RolledBack" in line and world.canary in line]
    assert rolled_back, operator_lines
    assert isinstance(json.loads(text["alerts.json"]), list)
    assert "README.txt" in members and "No Secret is read" in text["README.txt"]
    # No Secret data, in any form.
    import base64  # noqa: PLC0415

    for path, data in members.items():
        assert SECRET_VALUE.encode() not in data, path
        assert base64.b64encode(SECRET_VALUE.encode()) not in data, path
    assert "model-creds" in text["resource.yaml"]  # the Secret is named, its value is not there


def test_diagnose_names_a_missing_resource(world: World, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "deepseek_operator",
            "diagnose",
            "nope",
            "-n",
            world.namespace,
            "--kubeconfig",
            str(world.cluster.kubeconfig),
            "-o",
            str(tmp_path / "x.tar.gz"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert f"DeepSeekDeployment {world.namespace}/nope" in proc.stderr and "404" in proc.stderr
    assert not (tmp_path / "x.tar.gz").exists()


def test_api_errors_are_counted_by_code(world: World) -> None:
    """The operator's client counts an error answer by its code (a 404 on a read: expected, and
    counted all the same)."""
    from prometheus_client import REGISTRY  # noqa: PLC0415

    labels = {"code": "404", "method": "GET"}
    before = REGISTRY.get_sample_value("deepseek_operator_api_errors_total", labels) or 0
    kube.reset_api_client()
    assert kube.get("v1", "ConfigMap", world.namespace, "does-not-exist") is None
    assert REGISTRY.get_sample_value("deepseek_operator_api_errors_total", labels) == before + 1
