"""The chart's modes with the operator run from its image under the chart's ServiceAccount:
namespace-scoped (Roles in the watched namespaces only), and two replicas with kopf's peering
(one works; SIGKILL it during a canary and the other finishes the rollout)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from deepseek_operator.api.constants import GROUP, PLURAL, VERSION
from deepseek_operator.kube import client as kube
from deepseek_operator.sim.cluster import SimCluster, free_port
from deepseek_operator.sim.standin import StandInServer
from deepseek_operator.sim.tools import repo_root
from tests.integration.test_rollout import ANSWERS, Endpoints, Rollout, _body
from tests.support.chart import CHART, helm, refusals, set_args
from tests.support.image import OperatorContainer, build_image, sa_kubeconfig
from tests.support.plugin import wait_for

LIFETIME = 10  # the chart's default peering.lifetime


@pytest.fixture(scope="module")
def image() -> str:
    return build_image()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, StandInServer]]:
    started = {role: StandInServer(ANSWERS, name=f"standin-{role}") for role in ("good", "new")}
    try:
        for s in started.values():
            s.start()
        yield started
    finally:
        for s in started.values():
            s.stop()


class Install:
    """A release of the chart in its own namespace, with a config folder for the operator."""

    def __init__(self, cluster: SimCluster, api: Any, tmp: Path, values: dict[str, Any]) -> None:
        self.id = uuid.uuid4().hex[:6]
        self.release, self.ns = f"r{self.id}", f"ops-{self.id}"
        self.peering = f"p-{self.id}"
        self.cluster, self.api = cluster, api
        client.CoreV1Api(api).create_namespace({"metadata": {"name": self.ns}})
        self.values = {**values, "peering": {"name": self.peering, "lifetime": LIFETIME}}
        helm(
            "install",
            self.release,
            str(CHART),
            "-n",
            self.ns,
            "--kubeconfig",
            str(cluster.kubeconfig),
            *set_args(self.values),
        )
        self.sa = f"{self.release}-deepseek-operator"
        self.folder = tmp / f"config-{self.id}"
        self.folder.mkdir()
        self.folder.chmod(0o755)
        sa_kubeconfig(cluster, self.folder, self.ns, self.sa)
        self.endpoints = Endpoints(self.folder / "endpoints.yaml")
        (self.folder / "endpoints.yaml").chmod(0o644)

    def container(self, image: str, *extra: str) -> OperatorContainer:
        """The operator as the chart's Deployment runs it (its arguments), from the image."""
        args = [
            f"--peering={self.peering}",
            f"--peering-lifetime={LIFETIME}",
            f"--liveness=http://127.0.0.1:{free_port()}/healthz",
            f"--metrics-port={free_port()}",
            "--metrics-address=127.0.0.1",
            "--verbose",
            *[f"--namespace={ns}" for ns in self.values.get("watchNamespaces", [])],
            *extra,
        ]
        return OperatorContainer(image, self.folder, args)

    def uninstall(self) -> None:
        helm(
            "uninstall",
            self.release,
            "-n",
            self.ns,
            "--kubeconfig",
            str(self.cluster.kubeconfig),
            check=False,
        )


def _model_store(api: Any, namespace: str) -> None:
    samples = repo_root() / "manifests" / "samples"
    for doc in yaml.safe_load_all((samples / "model-store-pvc.yaml").read_text()):
        if doc:
            kube.server_side_apply(api, doc, "user", namespace)


def test_namespace_scoped_install_reconciles_only_the_watched_namespace(
    sim_cluster: SimCluster,
    kube_api: Any,
    crds: list[str],
    image: str,
    tmp_path: Path,
    new_namespace: Callable[[], str],
) -> None:
    watched, other = new_namespace(), new_namespace()
    install = Install(sim_cluster, kube_api, tmp_path, {"watchNamespaces": [watched]})
    op = install.container(image)
    try:
        op.start()
        rollouts = {}
        for ns in (watched, other):
            _model_store(kube_api, ns)
            rollouts[ns] = Rollout(kube_api, ns, install.endpoints, _body("m", replicas=1))
            rollouts[ns].golden()
            rollouts[ns].apply()
        rollouts[watched].wait(
            lambda: rollouts[watched].status().get("observedGeneration") == 1,
            timeout=60,
            what="the resource in the watched namespace reconciled",
        )
        time.sleep(5)  # long enough for a pass that was going to happen
        assert rollouts[other].status() == {}, "the operator touched a resource outside its namespaces"
        apps = client.AppsV1Api(kube_api)
        assert apps.list_namespaced_deployment(other).items == []
        logs = op.logs()
    finally:
        op.remove()
        install.uninstall()
    assert refusals(logs) == [], logs[-3000:]
    assert other not in logs, f"the operator logged about {other}:\n{logs[-3000:]}"


def _logged(op: OperatorContainer, text: str) -> bool:
    return text in op.logs()


def test_two_replicas_one_works_and_the_survivor_of_a_sigkill_finishes_the_canary(
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
    install = Install(sim_cluster, kube_api, tmp_path, {"replicas": 2})
    ns = new_namespace()
    _model_store(kube_api, ns)
    first, second = install.container(image), install.container(image)
    active, paused = f"peering {install.peering}: active", f"peering {install.peering}: paused"
    try:
        first.start()
        wait_for(lambda: _logged(first, active), timeout=60, what="the first replica active")
        second.start()
        wait_for(lambda: _logged(second, paused), timeout=60, what="the second replica paused")

        r = Rollout(kube_api, ns, install.endpoints, _body("ha", replicas=2))
        stable = r.first(servers["good"])
        canary = r.change(servers["new"])
        r.wait(lambda: r.status().get("phase") == "Canary", timeout=30, what="phase Canary")
        assert not _logged(second, active), "the paused replica became active while the first one worked"
        # kopf paused its own watch of the resource in that replica too.
        assert "Pausing the watch-stream for deepseekdeployments" in second.logs()
        assert "Resuming the watch-stream for deepseekdeployments" not in second.logs()

        first.kill()
        killed = time.monotonic()
        seen = (r.status().get("analysis") or {}).get("lastRunTime")
        wait_for(lambda: _logged(second, active), timeout=60, what="the survivor active")
        resumed = time.monotonic() - killed
        wait_for(
            lambda: _logged(second, "Resuming the watch-stream for deepseekdeployments"),
            timeout=10,
            what="kopf in the survivor resuming its watch",
        )
        wait_for(
            lambda: (r.status().get("analysis") or {}).get("lastRunTime") not in (None, seen),
            timeout=60,
            interval=0.1,
            what="the survivor's first analysis written",
        )
        first_pass = time.monotonic() - killed
        promoted = r.wait(
            lambda: r.revisions().get("stable") == canary, timeout=60, what="promotion by the survivor"
        )
        assert promoted
        print(
            f"\nfail-over: SIGKILL -> survivor active {resumed:.1f} s, -> its first status write "
            f"{first_pass:.1f} s (peering lifetime {LIFETIME} s); stable {stable} -> {canary}"
        )
        assert first_pass < 30, f"fail-over took {first_pass:.1f} s"
    finally:
        first.remove()
        second.remove()
        install.uninstall()
        api = client.CustomObjectsApi(kube_api)
        api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "ha")
