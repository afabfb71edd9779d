"""GitOps with Argo CD, on the simulated cluster, judged by Argo CD's own code (hack/argocd-check):

- a DeepSeekDeployment applied as Argo CD applies it (server-side apply as ``argocd-controller``
  with ``ServerSideApply=true``; client-side apply with the last-applied annotation otherwise),
  reconciled by the operator through a canary and an automatic rollback, stays Synced in both
  modes (util/argo/diff.StateDiff, as the application controller computes OutOfSync), with and
  without the compare option ServerSideDiff=true;
- the rollback survives a sync: re-applying the same manifest (what auto-sync or a manual sync
  does) changes nothing, the failed revision stays blocked, traffic stays on the good revision and
  Argo CD's health says Degraded naming it; a new revision in Git starts a new canary;
- every sample and every object the chart renders (with its CRDs, as Argo CD renders a chart) is
  Synced after the operator and the controllers have reconciled them, after a new revision of each
  sample (a canary where it is placed) and after those canaries are rolled back, in both modes.
"""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from deepseek_operator.api import names
from deepseek_operator.api.constants import KIND
from deepseek_operator.sim.cluster import SimCluster
from deepseek_operator.sim.standin import StandInServer
from deepseek_operator.sim.tools import repo_root
from tests.integration.test_rollout import INTERVAL, Endpoints, Rollout, _body
from tests.support import argocd as ac
from tests.support.chart import template
from tests.support.plugin import Kubectl, wait_for
from tests.support.pods import crash_loop

# How Argo CD applies (gitops-engine pkg/utils/kube/resource_ops.go, newApplyOptions: kubectl's
# apply with Overwrite; with server-side apply ForceConflicts and the manager argocd-controller,
# argo-cd common.ArgoCDSSAManager).
APPLY = {
    "ssa": ["apply", "--server-side", "--force-conflicts", "--field-manager=argocd-controller"],
    "csa": ["apply"],
}
MODES = sorted(APPLY)
CLUSTER_SCOPED = {
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ClusterKopfPeering",
    "Namespace",
}


@pytest.fixture(scope="module")
def dso_argocd() -> Path:
    return ac.dso_argocd()


class Git:
    """The Git side of one Argo CD Application: manifests, applied and diffed as Argo CD does."""

    def __init__(
        self, tool: Path, kubectl: Kubectl, cluster: SimCluster, mode: str, app: str, namespace: str
    ) -> None:
        self.tool, self.kubectl, self.cluster = tool, kubectl, cluster
        self.mode, self.app, self.ns = mode, app, namespace
        self.tmp = cluster.workdir / f"argocd-{app}-{mode}"
        self.tmp.mkdir(exist_ok=True)

    def target(self, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The objects as Argo CD syncs them: the destination namespace set on namespaced objects,
        and its tracking annotation (util/argo ResourceTracking.SetAppInstance)."""
        files = []
        for i, original in enumerate(objects):
            obj = json.loads(json.dumps(original))
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = self.ns
            path = self.tmp / f"in-{i}.json"
            path.write_text(json.dumps(obj))
            files.append(str(path))
        tracked: list[dict[str, Any]] = ac.run(
            self.tool, "track", "--app", self.app, "--namespace", self.ns, *files
        )
        return tracked

    def apply(self, targets: list[dict[str, Any]]) -> None:
        text = "\n---\n".join(json.dumps(t) for t in targets)
        self.kubectl(*APPLY[self.mode], "-n", self.ns, "-f", "-", input=text)

    def live(self, targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        text = "\n---\n".join(json.dumps(t) for t in targets)
        out = self.kubectl("get", "-n", self.ns, "-o", "json", "-f", "-", input=text)
        doc = json.loads(out.stdout)
        items: list[dict[str, Any]] = doc["items"] if doc.get("kind") == "List" else [doc]
        return items

    def diff(self, targets: list[dict[str, Any]], server_side: bool = False) -> list[dict[str, Any]]:
        """Argo CD's diff of each target with its live object; ``server_side``: with the compare
        option ServerSideDiff=true (a server-side apply dry run of each target gives the
        predicted live state)."""
        pairs = [
            {"name": f"{t['kind']}/{t['metadata']['name']}", "desired": t, "live": live}
            for t, live in zip(targets, self.live(targets), strict=True)
        ]
        path = self.tmp / "pairs.json"
        path.write_text(json.dumps(pairs))
        args = ["diff", "--argocd-cm", str(ac.ARGOCD_CM), "--mode", self.mode]
        if self.mode == "ssa" or server_side:
            args += ["--kubeconfig", str(self.cluster.kubeconfig)]
        if server_side:
            args += ["--server-side-diff"]
        results: list[dict[str, Any]] = ac.run(self.tool, *args, str(path))
        return results

    def assert_synced(self, targets: list[dict[str, Any]], when: str) -> None:
        """Synced by Argo CD's default diff and by its server-side diff (ServerSideDiff=true)."""
        drift = [(r, "") for r in self.diff(targets) if r["modified"]]
        drift += [(r, ", ServerSideDiff=true") for r in self.diff(targets, server_side=True) if r["modified"]]
        lines = []
        for r, how in drift:
            lines += [f"{r['name']} ({self.mode}{how}):"]
            lines += difflib.unified_diff(
                r["predictedLive"].splitlines(), r["normalizedLive"].splitlines(), "git", "live", lineterm=""
            )
        assert not drift, f"OutOfSync {when}:\n" + "\n".join(lines)

    def health(self, live: dict[str, Any]) -> dict[str, Any]:
        path = self.tmp / "live.json"
        path.write_text(json.dumps(live))
        (result,) = ac.run(self.tool, "health", "--argocd-cm", str(ac.ARGOCD_CM), str(path))
        assert not result.get("error"), result
        return dict(result)


class GitOpsRollout(Rollout):
    """A Rollout (tests/integration/test_rollout.py) whose manifest comes from Git via Argo CD."""

    def __init__(self, kube_api: Any, namespace: str, eps: Endpoints, body: dict[str, Any], git: Git) -> None:
        super().__init__(kube_api, namespace, eps, body)
        self.git = git
        self.targets: list[dict[str, Any]] = []

    def apply(self) -> None:  # a sync of the manifest as it is in Git now
        self.targets = self.git.target([self.body])
        self.git.apply(self.targets)

    def health(self) -> dict[str, Any]:
        return self.git.health(self.get())


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, StandInServer]]:
    """A good Triton stand-in and a slow one (its p99 over the 300 ms threshold of _body)."""
    from tests.integration.test_rollout import ANSWERS  # noqa: PLC0415

    started: dict[str, StandInServer] = {}
    try:
        for role in ("good", "slow"):
            started[role] = StandInServer(ANSWERS, name=f"standin-argocd-{role}")
            started[role].start()
        started["slow"].set_behaviour(latency_ms=600)
        yield started
    finally:
        for server in started.values():
            server.stop()


def test_rollback_survives_a_sync_and_stays_synced_in_both_apply_modes(
    kube_api: Any,
    namespace: str,
    model_store: str,
    operator: Any,
    servers: dict[str, StandInServer],
    sim_cluster: SimCluster,
    kubectl: Kubectl,
    dso_argocd: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deepseek_operator.rollout.analysis import ENDPOINTS_ENV  # noqa: PLC0415

    eps = Endpoints(tmp_path / "endpoints.yaml")
    monkeypatch.setenv(ENDPOINTS_ENV, str(eps.path))
    rollouts = {
        mode: GitOpsRollout(
            kube_api,
            namespace,
            eps,
            _body(f"gitops-{mode}", replicas=1),
            Git(dso_argocd, kubectl, sim_cluster, mode, "models", namespace),
        )
        for mode in MODES
    }
    # First revision: Synced, then Healthy once it serves and passed analysis.
    for r in rollouts.values():
        r.golden()
        r.apply()
    stable = {
        m: r.wait(lambda r=r: r.revisions().get("stable"), 30, "a stable revision")
        for m, r in rollouts.items()
    }
    for m, r in rollouts.items():
        r.map(stable[m], servers["good"])
    for r in rollouts.values():
        r.wait(lambda r=r: r.status().get("phase") == "Ready" and r.revisions().get("verified"), 60, "Ready")
        r.git.assert_synced(r.targets, "after the first revision is Ready")
        assert r.health()["status"] == "Healthy"
    # A new revision in Git whose canary is slow: canary, then an automatic rollback.
    canary = {}
    for m, r in rollouts.items():
        canary[m] = r.change(servers["slow"])
        r.git.assert_synced(r.targets, "during the canary")
    for m, r in rollouts.items():
        good = stable[m]
        r.wait(lambda r=r: r.condition("RolledBack").get("status") == "True", 40, "an automatic rollback")
        r.wait(lambda r=r, g=good: r.traffic_revisions() == {g}, 20, "traffic back on the stable revision")
        r.git.assert_synced(r.targets, "after the rollback")
        health = r.health()
        assert health["status"] == "Degraded", health
        assert (
            f"rolled back {canary[m]} -> {stable[m]}" in health["message"]
            and "p99 latency" in health["message"]
        )
        assert "retry" in health["message"]
    # A sync: Git still names the failed revision. Re-applying it changes nothing.
    before = {m: r.get() for m, r in rollouts.items()}
    for r in rollouts.values():
        r.apply()
    time.sleep(INTERVAL * 3)  # a few analysis intervals for anything to move
    for m, r in rollouts.items():
        after = r.get()
        # The spec is unchanged (the operator's status writes go on: resourceVersion moves).
        assert after["metadata"]["generation"] == before[m]["metadata"]["generation"]
        assert after["spec"] == before[m]["spec"]
        revs = r.revisions()
        assert (revs["stable"], revs["canary"], revs["failed"]) == (stable[m], "", [canary[m]])
        assert r.traffic_revisions() == {stable[m]} and r.workload_replicas(canary[m]) is None
        assert len([e for e in r.events("RolledBack") if e.involved_object.name == r.name]) == 1
        assert r.health()["status"] == "Degraded"
        r.git.assert_synced(r.targets, "after a sync of the same manifest")
    # A new revision in Git starts a new canary, which is not the blocked one.
    for m, r in rollouts.items():
        new = r.change(servers["good"], checkpoint="v3")
        assert new not in (stable[m], canary[m])
        r.wait(lambda r=r: r.condition("RolledBack").get("status") == "False", 20, "RolledBack False")
        r.git.assert_synced(r.targets, "after a new revision in Git")
        health = r.health()
        assert health["status"] == "Progressing" and f"canary {new}" in health["message"], health


def _samples() -> list[dict[str, Any]]:
    out = []
    for path in sorted((repo_root() / "manifests" / "samples").glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def _reconciled(git: Git, targets: list[dict[str, Any]]) -> bool:
    """Every DeepSeekDeployment's status is of its generation (the operator has reconciled it)."""
    for live in git.live(targets):
        if live["kind"] == KIND:
            status = live.get("status") or {}
            if status.get("observedGeneration") != live["metadata"]["generation"] or not status.get("phase"):
                return False
    return True


@pytest.mark.parametrize("mode", MODES)
def test_every_sample_and_chart_object_is_synced_after_reconcile(
    mode: str,
    kube_api: Any,
    new_namespace: Any,
    operator: Any,
    sim_cluster: SimCluster,
    kubectl: Kubectl,
    dso_argocd: Path,
) -> None:
    """One Application per mode, one after the other: the chart's cluster-wide objects (its CRDs,
    the ClusterKopfPeering) have one owner at a time, as Argo CD wants."""
    ns = new_namespace()
    git = Git(dso_argocd, kubectl, sim_cluster, mode, f"platform-{mode}", ns)
    # The chart as Argo CD renders it (helm template with its crds/).
    chart = template(release=f"argo-{mode}", namespace=ns, crds=True)
    targets = git.target([*_samples(), *chart])
    kinds = {t["kind"] for t in targets}
    assert {KIND, "CustomResourceDefinition", "Deployment", "ClusterRole", "PersistentVolumeClaim"} <= kinds
    try:
        git.apply(targets)
        wait_for(lambda: _reconciled(git, targets), 60, what="the samples reconciled")
        git.assert_synced(targets, "after the operator and the controllers reconciled")
        # A control: someone else's change to a spec in the cluster is OutOfSync in this mode.
        dsd = next(t for t in targets if t["kind"] == KIND)
        kubectl(
            "patch",
            "-n",
            ns,
            KIND.lower(),
            dsd["metadata"]["name"],
            "--type=merge",
            "-p",
            '{"spec":{"replicas":3}}',
        )
        for server_side in (False, True):
            drifted = [r["name"] for r in git.diff(targets, server_side) if r["modified"]]
            assert drifted == [f"{KIND}/{dsd['metadata']['name']}"], (server_side, drifted)
        # The server-side diff asks the API server: a manifest it would refuse fails the diff.
        bad = json.loads(json.dumps(dsd))
        bad["spec"]["replicas"] = -1
        with pytest.raises(AssertionError, match=r"spec\.replicas"):
            git.diff([bad], server_side=True)
        # A new revision of every sample (a canary where it is placed), then synced again. Git also
        # shortens the analysis (the samples' 30 s-1 m intervals and 3 failures would take minutes
        # to roll back); the diff below compares Git as it is now with the live objects.
        for t in targets:
            if t["kind"] == KIND:
                t["spec"]["model"]["revision"] = "argocd-v2"
                analysis = t["spec"].setdefault("rollout", {}).setdefault("analysis", {})
                analysis.update({"interval": "2s", "failureLimit": 1})
        git.apply(targets)
        wait_for(lambda: _reconciled(git, targets), 60, what="the new revisions reconciled")
        git.assert_synced(targets, "after a new revision of each sample")
        phases = {
            o["metadata"]["name"]: (o.get("status") or {}).get("phase")
            for o in git.live(targets)
            if o["kind"] == KIND
        }
        assert "Canary" in phases.values(), phases
        # Argo CD's health of each live sample agrees with its phase (docs/gitops.md's table).
        for live in git.live(targets):
            if live["kind"] == KIND:
                health = git.health(live)
                want = {"Canary": "Progressing", "Pending": None}.get(live["status"]["phase"])
                if want:
                    assert health["status"] == want, (live["metadata"]["name"], health)
                placed = next(c for c in live["status"]["conditions"] if c["type"] == "Placed")
                if placed["status"] == "False":
                    assert health["status"] == "Degraded" and placed["reason"] in health["message"], health
        _roll_back_every_canary(git, targets, client.CoreV1Api(kube_api))
    finally:
        cluster_wide = [
            t for t in targets if t["kind"] in CLUSTER_SCOPED and t["kind"] != "CustomResourceDefinition"
        ]
        text = "\n---\n".join(json.dumps(t) for t in cluster_wide)
        kubectl("delete", "--ignore-not-found", "-f", "-", input=text, check=False)


def _roll_back_every_canary(git: Git, targets: list[dict[str, Any]], core: Any) -> None:
    """The samples' canaries crash-loop: each is rolled back, Git is still Synced with every
    object, and Argo CD's health of each says Degraded naming the failed revision."""
    canaries = {
        o["metadata"]["name"]: o["status"]["revisions"]["canary"]
        for o in git.live(targets)
        if o["kind"] == KIND and o["status"].get("phase") == "Canary"
    }
    for name, canary in canaries.items():
        selector = names.label_selector(names.revision_selector(name, canary))

        def listed(selector: str = selector) -> list[Any]:
            return list(core.list_namespaced_pod(git.ns, label_selector=selector).items)

        pods = wait_for(listed, 30, what=f"{name}'s canary pods")
        for pod in pods:
            crash_loop(core, git.ns, pod.metadata.name)

    def rolled_back() -> list[dict[str, Any]] | None:
        lives = [o for o in git.live(targets) if o["kind"] == KIND and o["metadata"]["name"] in canaries]
        done = all(
            ((o.get("status") or {}).get("lastRollback") or {}).get("from") == canaries[o["metadata"]["name"]]
            for o in lives
        )
        return lives if done else None

    lives = wait_for(rolled_back, 60, what=f"the canaries of {sorted(canaries)} rolled back")
    git.assert_synced(targets, "after each sample's canary was rolled back")
    for live in lives:
        health = git.health(live)
        assert health["status"] == "Degraded", (live["metadata"]["name"], health)
        assert canaries[live["metadata"]["name"]] in health["message"], health
