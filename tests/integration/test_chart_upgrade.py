"""`helm upgrade` with changed values (replicas, namespace-scoped mode, resources) rolls the
operator and keeps every deployment serving; the operator, restarted with the arguments of the
upgraded chart (as its new pods run it), takes the resource over without touching what serves."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from deepseek_operator.api import names
from deepseek_operator.sim.cluster import SimCluster, free_port
from deepseek_operator.sim.standin import StandInServer
from tests.integration.test_chart_modes import Install, _model_store, image, servers
from tests.integration.test_rollout import Rollout, _body
from tests.support.chart import CHART, helm, set_args
from tests.support.image import OperatorContainer, kubectl
from tests.support.plugin import wait_for

__all__ = ["image", "servers"]  # the fixtures, shared with test_chart_modes


def _operator_args(cluster: SimCluster, ns: str, name: str) -> list[str]:
    """The arguments the chart's Deployment gives the operator now (ports made free on this host)."""
    dep = json.loads(kubectl(cluster, "-n", ns, "get", "deployment", name, "-o", "json").stdout)
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    out = [a for a in args if not a.startswith(("--liveness=", "--metrics-port="))]
    return [
        *out,
        f"--liveness=http://127.0.0.1:{free_port()}/healthz",
        f"--metrics-port={free_port()}",
        "--metrics-address=127.0.0.1",
    ]


def test_helm_upgrade_rolls_the_operator_and_keeps_serving(
    sim_cluster: SimCluster,
    kube_api: Any,
    crds: list[str],
    image: str,
    servers: dict[str, StandInServer],
    tmp_path: Path,
    new_namespace: Callable[[], str],
) -> None:
    for s in servers.values():
        s.set_behaviour(latency_ms=0, error_rate=0, quality=1.0)
    ns = new_namespace()
    _model_store(kube_api, ns)
    install = Install(sim_cluster, kube_api, tmp_path, {})
    deployment = install.sa  # the chart's Deployment has the same name as its ServiceAccount
    apps = client.AppsV1Api(kube_api)
    op = OperatorContainer(image, install.folder, _operator_args(sim_cluster, install.ns, deployment))
    op.start()
    ready_seen: list[int] = []
    stop = threading.Event()
    try:
        r = Rollout(kube_api, ns, install.endpoints, _body("up", replicas=2))
        stable = r.first(servers["good"])
        serving = names.workload_name("up", stable)
        before = apps.read_namespaced_deployment(serving, ns)

        def watch_serving() -> None:
            while not stop.wait(0.2):
                d = apps.read_namespaced_deployment(serving, ns)
                ready_seen.append(int(d.status.ready_replicas or 0))

        watcher = threading.Thread(target=watch_serving, daemon=True)
        watcher.start()
        generation = apps.read_namespaced_deployment(deployment, install.ns).metadata.generation

        values = {
            **install.values,
            "replicas": 2,
            "watchNamespaces": [ns],
            "resources": {
                "requests": {"cpu": "200m", "memory": "300Mi"},
                "limits": {"cpu": "2", "memory": "2Gi"},
            },
        }
        helm(
            "upgrade",
            install.release,
            str(CHART),
            "-n",
            install.ns,
            "--kubeconfig",
            str(sim_cluster.kubeconfig),
            *set_args(values),
        )
        # The chart's Deployment rolls (a new pod template) and completes.
        dep = apps.read_namespaced_deployment(deployment, install.ns)
        assert dep.metadata.generation > generation and dep.spec.replicas == 2
        container = dep.spec.template.spec.containers[0]
        assert f"--namespace={ns}" in container.args and container.resources.limits["memory"] == "2Gi"
        kubectl(
            sim_cluster, "-n", install.ns, "rollout", "status", f"deployment/{deployment}", "--timeout=60s"
        )
        kubectl(sim_cluster, "-n", install.ns, "get", "pdb", deployment)
        kubectl(sim_cluster, "-n", ns, "get", "role", deployment)

        # The operator, as the new pods run it: namespace-scoped, under the narrowed roles.
        op.remove()
        op = OperatorContainer(image, install.folder, _operator_args(sim_cluster, install.ns, deployment))
        op.start()
        wait_for(lambda: "peering " + install.peering in op.logs(), timeout=60, what="the new operator up")
        r.body["metadata"].setdefault("annotations", {})["touch"] = "1"  # a change it must see
        r.body["spec"]["replicas"] = 3
        r.apply()
        r.wait(lambda: r.status().get("replicas") == 3, timeout=60, what="the upgraded operator scaling to 3")
        assert r.status().get("phase") == "Ready"
        after = apps.read_namespaced_deployment(serving, ns)
        assert after.metadata.uid == before.metadata.uid  # the same serving Deployment, not a new rollout
        assert after.spec.template == before.spec.template
        logs = op.logs()
    finally:
        stop.set()
        op.remove()
        install.uninstall()
    assert min(ready_seen) >= 2, f"serving dropped below its replicas during the upgrade: {ready_seen}"
    assert "Forbidden" not in logs, logs[-3000:]
