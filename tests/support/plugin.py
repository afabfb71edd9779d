"""pytest fixtures over the simulated cluster (load with ``pytest_plugins = ["tests.support.plugin"]``).

- ``sim_cluster`` (session): one real control plane with GPU pools for the whole run;
- ``kube_api``: a ``kubernetes.client.ApiClient`` for its administrator;
- ``namespace``: a fresh namespace per test, deleted afterwards;
- ``crds``: the project's CRDs applied and Established;
- ``operator``: the operator running in a thread (kopf's ``KopfRunner``),
  checked for a clean exit when the test ends;
- ``kubectl``: runs the built kubectl against the cluster.

Tests under ``tests/unit`` are marked ``unit`` and tests under
``tests/integration`` ``integration`` automatically.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepseek_operator.api.constants import FIELD_MANAGER
from deepseek_operator.sim.cluster import SimCluster
from deepseek_operator.sim.tools import repo_root, tool_path

# Mixed pools so that placement has choices; one CPU node for GPU-less workloads.
DEFAULT_TEST_GPUS = "h100:2x8,a100-80gb:1x4,h200:1x8"

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder: ``tests/unit`` -> unit, ``tests/integration`` -> integration."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts or "e2e" in parts:
            item.add_marker(pytest.mark.integration)
        elif "unit" in parts:
            item.add_marker(pytest.mark.unit)


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.25,
    what: str = "",
    detail: Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds
    (with ``detail()``, e.g. the resource's status, in the message)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    more = f"; {detail()}" if detail is not None else ""
    pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}; last value: {last!r}{more}")


@pytest.fixture(scope="session")
def sim_cluster() -> Iterator[SimCluster]:
    """A simulated cluster for the whole test session (``DSO_TEST_GPUS`` overrides the pools)."""
    cluster = SimCluster(gpus=os.environ.get("DSO_TEST_GPUS", DEFAULT_TEST_GPUS), cpu_nodes=1)
    cluster.start()
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig)  # kopf and the kubernetes client read it
    try:
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        cluster.stop()


@contextlib.contextmanager
def own_cluster(cluster: SimCluster, endpoints: Path, timeout: float = 240) -> Iterator[SimCluster]:
    """Start ``cluster`` (a module's own, with other components than the session's) and point the
    operator's client, kopf and the analyses' endpoint map (``endpoints``) at it; put both back and
    stop it afterwards."""
    from deepseek_operator.kube import client as kube  # noqa: PLC0415
    from deepseek_operator.rollout.analysis import ENDPOINTS_ENV  # noqa: PLC0415

    cluster.start(timeout=timeout)
    previous = {k: os.environ.get(k) for k in ("KUBECONFIG", ENDPOINTS_ENV)}
    endpoints.write_text("{}\n")
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    os.environ[ENDPOINTS_ENV] = str(endpoints)
    kube.reset_api_client()
    try:
        yield cluster
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        kube.reset_api_client()
        cluster.stop()


@contextlib.contextmanager
def model_namespace(api: Any, prefix: str, golden: str) -> Iterator[str]:
    """A fresh namespace with the samples' model PVC and a golden-set ConfigMap ``golden``
    (key golden.jsonl); deleted afterwards."""
    from kubernetes import client  # noqa: PLC0415

    core = client.CoreV1Api(api)
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    (pvc,) = [
        d
        for d in yaml.safe_load_all((repo_root() / "manifests/samples/model-store-pvc.yaml").read_text())
        if d
    ]
    core.create_namespaced_persistent_volume_claim(name, pvc)
    core.create_namespaced_config_map(
        name, {"metadata": {"name": "golden"}, "data": {"golden.jsonl": golden}}
    )
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.fixture(scope="session")
def kube_api(sim_cluster: SimCluster) -> Any:
    """An API client for the cluster administrator."""
    return sim_cluster.api_client()


@pytest.fixture
def namespace(kube_api: Any) -> Iterator[str]:
    """A fresh namespace for one test; deleted (without waiting) afterwards."""
    from kubernetes import client  # noqa: PLC0415

    core = client.CoreV1Api(kube_api)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"dso-test": "true"}}})
    yield name
    core.delete_namespace(name)


def apply_crds(api: Any, folder: Path | None = None, timeout: float = 30.0) -> list[str]:
    """Server-side apply every CRD in ``folder`` (default: ``crds/``) and wait until Established."""
    from kubernetes import client  # noqa: PLC0415

    ext = client.ApiextensionsV1Api(api)
    names = []
    for path in sorted((folder or repo_root() / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            name = doc["metadata"]["name"]
            ext.patch_custom_resource_definition(
                name,
                doc,
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type="application/apply-patch+yaml",
            )
            names.append(name)

    def established() -> bool:
        for name in names:
            crd = ext.read_custom_resource_definition(name)
            conds = {c.type: c.status for c in (crd.status.conditions or [])}
            if conds.get("Established") != "True":
                return False
        return True

    wait_for(established, timeout, what=f"CRDs {names} to be Established")
    return names


@pytest.fixture(scope="session")
def crds(kube_api: Any) -> list[str]:
    """The project's CRDs, plus the LeaderWorkerSet API (multi-node replicas), applied once per session."""
    names = apply_crds(kube_api)
    fixtures = repo_root() / "tests" / "fixtures"
    if fixtures.is_dir():
        names += apply_crds(kube_api, fixtures)
    return names


@pytest.fixture
def operator(sim_cluster: SimCluster, crds: list[str]) -> Iterator[Any]:
    """The operator running in a thread of the test process for the duration of one test."""
    from kopf.testing import KopfRunner  # noqa: PLC0415

    args = ["run", "--standalone", "--all-namespaces", "-m", "deepseek_operator.handlers", "--verbose"]
    with KopfRunner(args, timeout=60) as runner:
        yield runner
    assert runner.exception is None, f"operator raised: {runner.exception!r}\n{runner.output[-4000:]}"
    assert runner.exit_code == 0, runner.output[-4000:]


@pytest.fixture(scope="session")
def kubectl(sim_cluster: SimCluster) -> Kubectl:
    """Run the project's kubectl against the cluster; returns the completed process (text)."""
    binary = str(tool_path("kubectl"))

    def run(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [binary, *args],
            env=sim_cluster.kubectl_env(),
            capture_output=True,
            text=True,
            input=input,
            timeout=60,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


def start_operator_process(
    sim_cluster: SimCluster, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``deepseek-operator run`` in a child process against ``sim_cluster`` (a test can SIGKILL it),
    its output appended to ``log``; ``env`` adds variables. As outside a cluster: no in-cluster
    service variables."""
    full = {**os.environ, "KUBECONFIG": str(sim_cluster.kubeconfig), **(env or {})}
    full.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.Popen(
        [sys.executable, "-m", "deepseek_operator", "run"],
        env=full,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
