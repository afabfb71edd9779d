"""The chart installed into the simulated cluster, and the operator run from its own image under
the chart's ServiceAccount: it reconciles a sample through a canary and a rollback; the API
server's audit log shows it used every rule its roles grant and was refused nothing; the same
identity is refused what it does not need, and a spec write (ValidatingAdmissionPolicy)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from deepseek_operator.api.constants import GROUP, PLURAL
from deepseek_operator.kube import client as kube
from deepseek_operator.sim.cluster import SimCluster, free_port
from deepseek_operator.sim.standin import StandInServer
from deepseek_operator.sim.tools import repo_root
from tests.integration.test_rollout import ANSWERS, Endpoints, Rollout, _body
from tests.support.chart import (
    AUDIT_POLICY,
    CHART,
    Request,
    Use,
    audit_lines,
    audit_requests,
    granted,
    helm,
    refusals,
    set_args,
    template,
    used,
)
from tests.support.image import OperatorContainer, build_image, kubectl, sa_kubeconfig
from tests.support.plugin import apply_crds

# Granted, needed by the code, and not used by this test's scenario (one model on one-GPU
# replicas, a canary, a rollback, autoscaling on and off); the chart's comments say which code
# needs each: multi-node replicas (LeaderWorkerSets, an API this cluster does not have) and the
# pruning of old revision records. The test fails
# when one of them gets used (then drop it from here) or when another grant goes unused.
EXPLAINED_UNUSED = {
    ("delete", "apps", "controllerrevisions"),
    ("watch", "leaderworkerset.x-k8s.io", "leaderworkersets"),
    ("create", "leaderworkerset.x-k8s.io", "leaderworkersets"),
    ("patch", "leaderworkerset.x-k8s.io", "leaderworkersets"),
    ("delete", "leaderworkerset.x-k8s.io", "leaderworkersets"),
}
# Used or not by a given run: a PVC is read by name only when the operator's watch has not
# delivered it yet (a claim applied a moment before the resource that names it).
USED_SOMETIMES = {("get", "", "persistentvolumeclaims")}
RELEASE, OPS = "dso", "dso-system"
SA_NAME = "dso-deepseek-operator"
SA_USER = f"system:serviceaccount:{OPS}:{SA_NAME}"
APP_NS = "llm"


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    """A cluster of its own whose API server writes an audit log of every ServiceAccount's requests."""
    policy = tmp_path_factory.mktemp("audit") / "policy.yaml"
    policy.write_text(AUDIT_POLICY)
    cluster = SimCluster(gpus="h100:2x8", cpu_nodes=1, audit_policy=policy)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _rules_table(rows: dict[tuple[str, str, str], Any]) -> str:
    return "\n".join(f"  {v:7} {g or 'core':24} {r}" for v, g, r in sorted(rows, key=lambda u: (u[2], u[0])))


@pytest.mark.parametrize("mode", ["cluster-wide", "namespace-scoped"])
def test_chart_install_operator_from_its_image_least_privilege_and_spec_policy(
    mode: str, audited: SimCluster, tmp_path: Path
) -> None:
    image = build_image()
    api = audited.api_client()
    apply_crds(api, CHART / "crds")
    app_ns = APP_NS if mode == "cluster-wide" else f"{APP_NS}-scoped"
    for ns in (OPS, app_ns):
        if kubectl(audited, "get", "namespace", ns, check=False).returncode != 0:
            kubectl(audited, "create", "namespace", ns)
    repository, tag = image.rsplit(":", 1)
    values: dict[str, Any] = {"image": {"repository": repository, "tag": tag}}
    if mode == "namespace-scoped":
        values["watchNamespaces"] = [app_ns]

    # helm install, as a platform engineer would (the image is the one just built).
    helm(
        "install",
        RELEASE,
        str(CHART),
        "-n",
        OPS,
        "--kubeconfig",
        str(audited.kubeconfig),
        *set_args(values),
    )
    grants = granted(template(values, RELEASE, OPS), SA_USER)

    # The sample's model store and the golden set, as a user would make them.
    samples = repo_root() / "manifests" / "samples"
    for sample in ("model-store-pvc.yaml", "hf-token-secret.yaml"):
        for doc in yaml.safe_load_all((samples / sample).read_text()):
            if doc:
                kube.server_side_apply(api, doc, "user", app_ns)

    folder = tmp_path / "config"
    folder.mkdir()
    folder.chmod(0o755)
    sa_kubeconfig(audited, folder, OPS, SA_NAME)
    eps = Endpoints(folder / "endpoints.yaml")
    (folder / "endpoints.yaml").chmod(0o644)
    start = audit_lines(audited.audit_log)

    servers = {role: StandInServer(ANSWERS, name=f"standin-{role}") for role in ("good", "new")}
    container = OperatorContainer(
        image,
        folder,
        [
            "--peering=deepseek-operator",
            "--peering-lifetime=10",
            f"--liveness=http://127.0.0.1:{free_port()}/healthz",
            f"--metrics-port={free_port()}",
            "--metrics-address=127.0.0.1",
            *([f"--namespace={app_ns}"] if mode == "namespace-scoped" else []),
        ],
    )
    stable, logs = _scenario(api, app_ns, eps, servers, container)
    assert refusals(logs) == [], logs[-3000:]
    _check_audit(mode, audit_requests(audited.audit_log, SA_USER, start), grants, app_ns)
    sa = folder / "kubeconfig"
    _check_refusals(audited, sa, app_ns, mode)
    _check_spec_policy(audited, sa, app_ns)
    _check_uninstall(audited, app_ns, stable)


def _scenario(
    api: Any, app_ns: str, eps: Endpoints, servers: dict[str, StandInServer], container: OperatorContainer
) -> tuple[str, str]:
    """The operator from its image reconciles a sample through a canary and a rollback, then
    autoscaling on and off; returns the stable revision and the operator's log."""
    try:
        for s in servers.values():
            s.start()
        container.start()
        body = _body("r1", replicas=2)
        body["spec"]["model"]["source"]["credentialsSecret"] = "hf-token"  # read by name: get
        r = Rollout(api, app_ns, eps, body)
        stable = r.first(servers["good"])
        canary = r.change(servers["new"])
        r.wait(lambda: r.status().get("phase") == "Canary", timeout=30, what="phase Canary")
        servers["new"].set_behaviour(latency_ms=600)
        rolled = r.wait(lambda: r.status().get("lastRollback"), timeout=60, what="a rollback")
        assert rolled["from"] == canary and rolled["to"] == stable
        r.wait(lambda: r.status().get("phase") == "RolledBack", timeout=30, what="phase RolledBack")
        # Autoscaling on, then off again: the HPA is made, then removed.
        autoscaling = client.AutoscalingV2Api(api)
        r.body["spec"]["autoscaling"] = {"minReplicas": 2, "maxReplicas": 3, "targetGPUUtilization": 70}
        r.apply()
        r.wait(lambda: autoscaling.list_namespaced_horizontal_pod_autoscaler(app_ns).items, 30, "an HPA")
        del r.body["spec"]["autoscaling"]
        r.apply()
        r.wait(lambda: not autoscaling.list_namespaced_horizontal_pod_autoscaler(app_ns).items, 30, "no HPA")
        time.sleep(3)  # a last keep-alive, the watches renewed: nothing more is needed
        logs = container.logs()
    finally:
        container.remove()
        for s in servers.values():
            s.stop()
    return str(stable), logs


def _check_audit(mode: str, requests: list[Request], grants: dict[Use, set[str]], app_ns: str) -> None:
    """What the operator used, from the API server's own record, against what the chart grants."""
    assert requests, "the audit log holds no request of the operator"
    refused = sorted({(r.verb, r.group, r.resource, r.uri) for r in requests if r.code == 403})
    uses = used(requests)
    unused = set(grants) - uses - EXPLAINED_UNUSED - USED_SOMETIMES
    assert not EXPLAINED_UNUSED & uses, f"now used, drop from EXPLAINED_UNUSED: {EXPLAINED_UNUSED & uses}"
    ungranted = uses - set(grants)
    print(f"\n{mode}: {len(requests)} requests by {SA_USER}; used:\n{_rules_table(dict.fromkeys(uses))}")
    assert refused == [], f"refused: {refused}"
    assert ungranted == set(), f"used but not granted (RBAC would have refused): {ungranted}"
    if mode == "namespace-scoped":
        # Namespaced requests only in the watched namespace; cluster-wide ones only for what is
        # cluster-scoped by nature.
        assert {r.namespace for r in requests if r.namespace} == {app_ns}
        across = {r.resource for r in requests if not r.namespace}
        assert across <= {"nodes", "customresourcedefinitions", "namespaces"}, across
    assert unused == set(), (
        f"granted but never used; remove or explain:\n{_rules_table(dict.fromkeys(unused))}"
    )


def _check_refusals(audited: SimCluster, sa: Path, app_ns: str, mode: str) -> None:
    """The same identity is refused what it does not need."""
    asks = [
        ["-n", "kube-system", "get", "secrets"],
        ["-n", app_ns, "get", "secrets"],
        ["delete", "node", "gpu-h100-0", "--dry-run=server"],
        ["create", "clusterrole", "escalate", "--verb=*", "--resource=*", "--dry-run=server"],
        ["-n", app_ns, "delete", "dsd", "r1", "--dry-run=server"],
        ["-n", app_ns, "create", "secret", "generic", "x", "--dry-run=server"],
        ["get", "--raw=/api/v1/namespaces/llm/pods/x/log"],
    ]
    if mode == "namespace-scoped":  # a Secret outside the watched namespace, even by name
        asks.append(["-n", "kube-system", "get", "secret", "any-name"])
    for args in asks:
        out = kubectl(audited, *args, kubeconfig=sa, check=False)
        assert out.returncode != 0 and "forbidden" in out.stderr.lower(), (args, out.stdout, out.stderr)


def _check_spec_policy(audited: SimCluster, sa: Path, app_ns: str) -> None:
    """A spec write by the operator's identity is refused: by RBAC, and by the policy where
    someone grants it more."""

    def spec_write() -> Any:
        patch = ["patch", "dsd", "r1", "--type=merge", "-p", '{"spec":{"replicas":5}}']
        return kubectl(audited, "-n", app_ns, *patch, kubeconfig=sa, check=False)

    # RBAC alone refuses the operator a spec write (it is granted no patch on the resource).
    out = spec_write()
    assert out.returncode != 0 and "forbidden" in out.stderr.lower(), out.stderr
    # Where someone grants it more (here: get, patch on DeepSeekDeployments), the API server still
    # refuses a spec write by the operator's identity (the ValidatingAdmissionPolicy); a metadata
    # patch is let through.
    more = ["create", "role", "more", "--verb=get,patch", f"--resource={PLURAL}.{GROUP}"]
    kubectl(audited, "-n", app_ns, *more)
    kubectl(
        audited,
        "-n",
        app_ns,
        "create",
        "rolebinding",
        "more",
        "--role=more",
        f"--serviceaccount={OPS}:{SA_NAME}",
    )
    out = spec_write()
    assert out.returncode != 0, out.stdout
    assert "may not create a DeepSeekDeployment or change its spec" in out.stderr, out.stderr
    assert kubectl(audited, "-n", app_ns, "get", "dsd", "r1", "-o", "jsonpath={.spec.replicas}").stdout == "2"
    kubectl(
        audited,
        "-n",
        app_ns,
        "patch",
        "dsd",
        "r1",
        "--type=merge",
        "-p",
        '{"metadata":{"labels":{"seen":"yes"}}}',
        kubeconfig=sa,
    )
    # The same change by a user is fine.
    kubectl(audited, "-n", app_ns, "patch", "dsd", "r1", "--type=merge", "-p", '{"spec":{"replicas":3}}')


def _check_uninstall(audited: SimCluster, app_ns: str, stable: str) -> None:
    """helm uninstall removes the operator and leaves the CRD and what serves."""
    helm("uninstall", RELEASE, "-n", OPS, "--kubeconfig", str(audited.kubeconfig), "--wait")
    assert kubectl(audited, "-n", OPS, "get", "deployment", "-o", "name").stdout.strip() == ""
    kubectl(audited, "get", "crd", f"{PLURAL}.{GROUP}")
    assert kubectl(audited, "-n", app_ns, "get", "dsd", "r1", "-o", "name").stdout.strip()
    serving = json.loads(kubectl(audited, "-n", app_ns, "get", "deployments", "-o", "json").stdout)["items"]
    assert any(d["metadata"]["name"].endswith(stable) for d in serving), [
        d["metadata"]["name"] for d in serving
    ]
