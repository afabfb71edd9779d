"""Golden files of every child object the operator builds: for each sample as a first deployment,
and for each rollout state (stable only, canary, warm standby, a canary replacing a replica,
a LeaderWorkerSet), taken from what the loop's decide function applies.

A change to a builder shows up here as a diff of the YAML a cluster would get.
Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/unit/test_golden_children.py``
and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepseek_operator.api.constants import KIND
from deepseek_operator.api.spec import parse_spec
from deepseek_operator.builders.serving import revision_hash
from deepseek_operator.planning.placement import Refusal, catalog_nodes
from deepseek_operator.reconcile import revision as rv
from deepseek_operator.sim.tools import repo_root
from tests.support.world import GOOD, World, analyse, gpu_nodes
from tests.support.world import sample as sample_body

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "children"
SAMPLES = sorted(
    p for p in (repo_root() / "manifests" / "samples").glob("*.yaml") if f"kind: {KIND}" in p.read_text()
)


class _LiteralDumper(yaml.SafeDumper):
    """Dumps multi-line strings (the Triton configs, the build script) as readable literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str)


def _body(sample: Path) -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all(sample.read_text()) if d and d["kind"] == KIND]
    doc["metadata"].update(namespace="llm", uid="00000000-0000-0000-0000-000000000001", generation=1)
    return dict(doc)


def first_deployment(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The objects of a first deployment on an idealised empty cluster, built by the same two
    functions the loop applies."""
    spec = parse_spec(body["spec"])
    plan = rv.plan_for(body, spec, catalog_nodes())
    assert not isinstance(plan, Refusal), plan
    revision = revision_hash(spec, plan)
    return rv.build_revision(body, spec, plan, revision) + rv.build_shared(body, spec, revision, plan)


def _check(objects: list[dict[str, Any]], golden: Path) -> None:
    text = yaml.dump_all(objects, Dumper=_LiteralDumper, sort_keys=True, width=120)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden}; run with UPDATE_GOLDEN=1"
    assert text == golden.read_text()


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_children_match_golden(sample: Path) -> None:
    _check(first_deployment(_body(sample)), GOLDEN / f"{sample.stem}.yaml")


def _everything(w: World) -> list[dict[str, Any]]:
    """Every object the loop would apply for the world's rollout state (as if none existed yet)."""
    revisions = w.body["status"]["revisions"]
    w.children = {k: v for k, v in w.children.items() if k[0] in ("ControllerRevision", "Pod")}
    writes = w.decide()
    summary = {
        "revisions (status)": revisions,
        "replicas (scale field manager)": {s.name: s.replicas for s in writes.scale},
        "traffic labels": {r.pod: dict(r.labels) for r in writes.relabel},
    }
    return [summary, *sorted(writes.apply, key=lambda o: (o["kind"], o["metadata"]["name"]))]


def _stable_only() -> World:
    w = World(sample_body())
    w.converge()
    return w


def _canary() -> World:
    w = _stable_only()
    w.change_spec(model__revision="v2")
    w.converge()
    return w


def _standby() -> World:
    body = sample_body()
    body["spec"]["rollout"]["standbyReplicas"] = 1
    w = World(body)
    w.converge()
    w.change_spec(model__revision="v2")
    w.converge()
    analyse(w, GOOD, times=3)
    w.converge()
    return w


def _replace_replica() -> World:
    w = World(sample_body(), nodes=gpu_nodes("h100:1x1"))
    w.converge()
    w.change_spec(model__revision="v2")
    w.converge()
    return w


def _leader_worker_set() -> World:
    body = sample_body("deepseek-r1-h200")
    body["spec"]["gpu"] = {"products": ["NVIDIA-H100-80GB-HBM3"]}  # R1 in FP8 needs two H100 nodes
    w = World(body, nodes=gpu_nodes("h100:4x8"))
    w.converge()
    return w


STATES = {
    "stable-only": _stable_only,
    "canary": _canary,
    "standby": _standby,
    "replace-replica": _replace_replica,
    "leader-worker-set": _leader_worker_set,
}


@pytest.mark.parametrize("state", sorted(STATES))
def test_rollout_state_objects_match_golden(state: str) -> None:
    _check(_everything(STATES[state]()), GOLDEN.parent / "rollout" / f"{state}.yaml")


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_children_are_deterministic_and_named_once(sample: Path) -> None:
    first = first_deployment(_body(sample))
    assert first == first_deployment(_body(sample))
    keys = [(o["kind"], o["metadata"]["name"]) for o in first]
    assert len(keys) == len(set(keys))
    for obj in first:
        assert obj["metadata"]["namespace"] == "llm"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "00000000-0000-0000-0000-000000000001"
