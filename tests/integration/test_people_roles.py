"""The roles the chart makes for people, proven with ``kubectl auth can-i`` as a user bound to
each; their aggregation into Kubernetes' built-in admin / edit / view; uninstall and reinstall
leave nothing behind, several times over."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from kubernetes import client

from deepseek_operator.sim.cluster import SimCluster
from tests.support.chart import CHART, helm, set_args
from tests.support.image import kubectl
from tests.support.plugin import wait_for

DSD = "deepseekdeployments.serving.deepseek.ai"
# (question, kubectl auth can-i arguments)
QUESTIONS: list[tuple[str, list[str]]] = [
    ("get deployments (dsd)", ["get", DSD]),
    ("list deployments (dsd)", ["list", DSD]),
    ("create dsd", ["create", DSD]),
    ("update dsd", ["update", DSD]),
    ("patch dsd", ["patch", DSD]),
    ("delete dsd", ["delete", DSD]),
    ("get dsd status", ["get", DSD, "--subresource=status"]),
    ("update dsd status", ["update", DSD, "--subresource=status"]),
    ("get golden sets (configmaps)", ["get", "configmaps"]),
    ("create configmaps", ["create", "configmaps"]),
    ("patch configmaps", ["patch", "configmaps"]),
    ("delete configmaps", ["delete", "configmaps"]),
    ("list events", ["list", "events"]),
    ("get pod logs", ["get", "pods", "--subresource=log"]),
    ("get secrets", ["get", "secrets"]),
    ("list secrets", ["list", "secrets"]),
    ("delete pods", ["delete", "pods"]),
]
# The access matrix: what each role answers (Y/N), in the order of QUESTIONS.
MATRIX_TEXT = {
    "admin": "YYYYYYYY YYYY YY NNN",
    "engineer": "YYYYYNYN YYYN YY NNN",
    "auditor": "YYNNNNYN NNNN YY NNN",
}
MATRIX = {role: [c == "Y" for c in text.replace(" ", "")] for role, text in MATRIX_TEXT.items()}


def _can_i(cluster: SimCluster, user: str, namespace: str, args: list[str]) -> bool:
    out = kubectl(cluster, "auth", "can-i", *args, f"--as={user}", "-n", namespace, check=False)
    answer = out.stdout.strip()
    assert answer in ("yes", "no"), out.stderr
    return answer == "yes"


def _install(cluster: SimCluster, release: str, ns: str, values: dict[str, Any]) -> None:
    helm("install", release, str(CHART), "-n", ns, "--kubeconfig", str(cluster.kubeconfig), *set_args(values))


def _uninstall(cluster: SimCluster, release: str, ns: str) -> None:
    helm("uninstall", release, "-n", ns, "--kubeconfig", str(cluster.kubeconfig), "--wait")


def _release_cluster_roles(kube_api: Any, release: str) -> list[str]:
    rbac = client.RbacAuthorizationV1Api(kube_api)
    items = rbac.list_cluster_role(label_selector=f"app.kubernetes.io/instance={release}").items
    return sorted(r.metadata.name for r in items)


def test_each_people_role_answers_the_access_matrix(
    sim_cluster: SimCluster, kube_api: Any, crds: list[str], namespace: str
) -> None:
    release = f"people-{uuid.uuid4().hex[:5]}"
    _install(sim_cluster, release, namespace, {"peering": {"name": release, "lifetime": 10}})
    try:
        table = []
        for role, expected in MATRIX.items():
            user = f"{role}-{release}"
            kubectl(
                sim_cluster,
                "-n",
                namespace,
                "create",
                "rolebinding",
                user,
                f"--clusterrole={release}-deepseek-operator-{role}",
                f"--user={user}",
            )
            answers = [_can_i(sim_cluster, user, namespace, args) for _, args in QUESTIONS]
            table.append((role, answers))
            assert answers == expected, {
                q: (a, e) for (q, _), a, e in zip(QUESTIONS, answers, expected, strict=True) if a != e
            }
            # Bound in one namespace: nothing in another.
            assert not _can_i(sim_cluster, user, "default", ["get", DSD])
        width = max(len(q) for q, _ in QUESTIONS)
        print("\n" + " " * width + "  " + "  ".join(f"{r:8}" for r, _ in table))
        for i, (q, _) in enumerate(QUESTIONS):
            print(f"{q:{width}}  " + "  ".join(f"{'yes' if a[i] else 'no':8}" for _, a in table))
    finally:
        _uninstall(sim_cluster, release, namespace)


def test_aggregated_roles_reach_the_built_in_ones_and_reinstalls_are_clean(
    sim_cluster: SimCluster, kube_api: Any, crds: list[str], namespace: str
) -> None:
    release = f"agg-{uuid.uuid4().hex[:5]}"
    values = {
        "peering": {"name": release, "lifetime": 10},
        "peopleRoles": {"enabled": True, "aggregateToDefaultRoles": True},
    }
    for builtin in ("admin", "edit", "view"):
        kubectl(
            sim_cluster,
            "-n",
            namespace,
            "create",
            "rolebinding",
            f"{builtin}-user",
            f"--clusterrole={builtin}",
            f"--user={builtin}-user",
        )
    expect = {
        "view": (["get", DSD], ["create", DSD]),
        "edit": (["create", DSD], ["delete", DSD]),
        "admin": (["delete", DSD], None),
    }
    for attempt in range(4):
        _install(sim_cluster, release, namespace, values)
        for builtin, (granted, refused) in expect.items():
            user = f"{builtin}-user"
            wait_for(
                lambda u=user, g=granted: _can_i(sim_cluster, u, namespace, g),
                timeout=20,
                what=f"{builtin} aggregated (attempt {attempt})",
            )
            if refused is not None:
                assert not _can_i(sim_cluster, user, namespace, refused), (builtin, refused)
        _uninstall(sim_cluster, release, namespace)
        # Nothing of the release is left (no orphan for the next install), and the built-in roles
        # lose its rules again.
        wait_for(
            lambda: _release_cluster_roles(kube_api, release) == [],
            timeout=20,
            what="the release's ClusterRoles gone",
        )
        wait_for(
            lambda: not _can_i(sim_cluster, "view-user", namespace, ["get", DSD]),
            timeout=20,
            what="view without the rules",
        )
    view = json.loads(kubectl(sim_cluster, "get", "clusterrole", "view", "-o", "json").stdout)
    assert not any("serving.deepseek.ai" in (r.get("apiGroups") or []) for r in view.get("rules") or [])


@pytest.mark.parametrize("role", sorted(MATRIX))
def test_the_matrix_has_an_answer_for_every_question(role: str) -> None:
    assert len(MATRIX[role]) == len(QUESTIONS)
