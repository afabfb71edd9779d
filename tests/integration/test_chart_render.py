"""The chart's checks with the real tools: ``helm lint --strict``, and every object ``helm template``
renders (default values and each documented mode) accepted by a server-side dry-run on the
simulated API server (the CRDs are applied for real first, as Helm does)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deepseek_operator.sim.cluster import SimCluster
from tests.support.chart import CHART, KUBE_VERSION, crd_schemas, helm, kubeconform, set_args, template
from tests.support.plugin import Kubectl

OPS = "dso-render"
MODES: dict[str, dict[str, Any]] = {
    "default": {},
    "namespace-scoped": {"watchNamespaces": ["dso-team-a", "dso-team-b"]},
    "replicas": {"replicas": 3},
    "roles-aggregated": {"peopleRoles": {"enabled": True, "aggregateToDefaultRoles": True}},
    "own-service-account": {
        "serviceAccount": {"create": False, "name": "ops-operator"},
        "admissionPolicy": {"enabled": False},
        "peopleRoles": {"enabled": False},
        "metrics": {"port": 9090, "service": {"enabled": False}},
    },
}


def _namespaces(kube_api: Any) -> None:
    core = client.CoreV1Api(kube_api)
    for ns in (OPS, "dso-team-a", "dso-team-b"):
        try:
            core.create_namespace({"metadata": {"name": ns}})
        except ApiException as e:
            if e.status != 409:
                raise


@pytest.mark.parametrize("mode", sorted(MODES))
def test_helm_lint_strict_is_clean(mode: str) -> None:
    out = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *set_args(MODES[mode]))
    assert "0 chart(s) failed" in out.stdout
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout, out.stdout


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_rendered_object_passes_a_server_side_dry_run(
    mode: str, kube_api: Any, crds: list[str], kubectl: Kubectl
) -> None:
    _namespaces(kube_api)
    objects = template(MODES[mode], release="render", namespace=OPS)
    kinds = sorted({o["kind"] for o in objects})
    text = helm(
        "template", "render", str(CHART), "-n", OPS, "--kube-version", KUBE_VERSION, *set_args(MODES[mode])
    ).stdout
    out = kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=helm", "-f", "-", input=text)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == len(objects), out.stdout
    assert all("(server dry run)" in line for line in lines), out.stdout
    assert {"Deployment", "ClusterRole", "ClusterRoleBinding"} <= set(kinds)
    if mode == "namespace-scoped":
        roles = [o for o in objects if o["kind"] == "Role"]
        assert sorted(r["metadata"]["namespace"] for r in roles) == ["dso-team-a", "dso-team-b"]
        (cluster_role,) = [
            o
            for o in objects
            if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "render-deepseek-operator"
        ]
        # Only what is truly cluster-scoped stays cluster-wide.
        assert sorted(r for rule in cluster_role["rules"] for r in rule["resources"]) == [
            "customresourcedefinitions",
            "namespaces",
            "nodes",
        ]
        (dep,) = [o for o in objects if o["kind"] == "Deployment"]
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--namespace=dso-team-a" in args and "--namespace=dso-team-b" in args
    if mode == "replicas":
        assert "PodDisruptionBudget" in kinds
    else:
        assert "PodDisruptionBudget" not in kinds


@pytest.mark.parametrize("mode", sorted(MODES))
def test_kubeconform_strict_accepts_every_rendered_object(mode: str, tmp_path: Path) -> None:
    args = ["template", "render", str(CHART), "-n", OPS, "--kube-version", KUBE_VERSION, "--include-crds"]
    text = helm(*args, *set_args(MODES[mode])).stdout
    out = kubeconform(text, crd_schemas(tmp_path))
    n = len([d for d in yaml.safe_load_all(text) if d])
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Valid: {n}, Invalid: 0, Errors: 0, Skipped: 0" in out.stdout, out.stdout


def test_kubeconform_strict_refuses_a_bad_object(tmp_path: Path) -> None:
    bad = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: two, bogus: 1}\n"
    out = kubeconform(bad, crd_schemas(tmp_path))
    assert out.returncode != 0
    assert (
        "additional properties 'bogus' not allowed" in out.stdout
        and "got string, want null or integer" in out.stdout
    )


def test_the_deployment_is_hardened_and_probed() -> None:
    (dep,) = [o for o in template() if o["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert (
        c["livenessProbe"]["httpGet"]["port"] == "health"
        and c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    )
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"] and "--metrics-port=9090" in c["args"]
    assert "--peering=deepseek-operator" in c["args"] and "--peering-lifetime=10" in c["args"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 0}, "at '/replicas': minimum: got 0, want 1"),
        ({"watchNamespaces": ["Team_A"]}, "at '/watchNamespaces/0'"),
        ({"peering": {"name": "deepseek-operator", "lifetime": 120}}, "at '/peering/lifetime'"),
        ({"replica": 2}, "additional properties 'replica' not allowed"),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name: name the ServiceAccount"),
    ],
)
def test_bad_values_are_refused_naming_the_field(values: dict[str, Any], message: str) -> None:
    out = helm("template", "x", str(CHART), "--kube-version", KUBE_VERSION, *set_args(values), check=False)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


@pytest.mark.parametrize("mode", ["default", "namespace-scoped", "replicas"])
def test_the_notes_say_what_to_do_next(
    mode: str, sim_cluster: SimCluster, kube_api: Any, crds: list[str]
) -> None:
    # A dry-run install against the simulated API server (Helm reads its version there), with
    # the CRDs and the namespaces there.
    _namespaces(kube_api)
    args = [
        "install",
        "notes",
        str(CHART),
        "-n",
        OPS,
        "--dry-run=server",
        "--kubeconfig",
        str(sim_cluster.kubeconfig),
    ]
    out = helm(*args, *set_args(MODES[mode])).stdout
    notes = out.split("NOTES:", 1)[1]
    for line in (
        "kubectl -n llm apply -f manifests/samples/r1-distill-qwen-7b.yaml",
        "kubectl -n llm get dsd",
        "kubectl -n llm wait --for=condition=Ready dsd/r1-qwen-7b",
        f"kubectl -n {OPS} logs deployment/notes-deepseek-operator",
        "deepseek-operator diagnose r1-qwen-7b -n llm",
        "no Prometheus Operator CRDs found",  # the simulated cluster has none
    ):
        assert line in notes, notes
    if mode == "namespace-scoped":
        assert "It watches DeepSeekDeployments in: dso-team-a, dso-team-b (and nowhere else)." in notes
    if mode == "replicas":
        assert "3 replicas, one working at a time" in notes
