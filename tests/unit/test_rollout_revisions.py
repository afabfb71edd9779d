"""Revision records: what a ControllerRevision keeps, and rebuilding a revision from it."""

from __future__ import annotations

import copy
import json
from typing import Any

from deepseek_operator.api import names
from deepseek_operator.api.spec import parse_spec
from deepseek_operator.builders import serving
from deepseek_operator.planning.placement import plan_deployment
from deepseek_operator.rollout import revisions as rec

OWNER = {"metadata": {"name": "r1", "namespace": "llm", "uid": "00000000-0000-0000-0000-000000000001"}}
RAW: dict[str, Any] = {
    "model": {
        "id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "source": {"pvc": {"claimName": "model-store"}},
        "revision": "main",
    },
    "engine": {"runtime": "tensorrt-llm", "precision": "bf16"},
    "gpu": {"products": ["NVIDIA-H100-80GB-HBM3"]},
    "replicas": 2,
}


def test_record_round_trips_the_plan_through_json() -> None:
    spec = parse_spec(RAW)
    plan = plan_deployment(spec)
    revision = serving.revision_hash(spec, plan)
    obj = rec.build_controller_revision(OWNER, revision, 7, RAW, plan)
    stored = json.loads(json.dumps(obj))  # what the API server hands back
    assert stored["revision"] == 7 and stored["metadata"]["name"] == f"r1-{revision}"
    assert stored["metadata"]["labels"][names.REVISION_LABEL] == revision
    assert rec.plan_for_revision(stored) == plan
    assert set(stored["data"]["spec"]) == {"model", "engine", "gpu"}  # only what shapes the pods


def test_rebuilding_takes_pod_sections_from_the_record_and_the_rest_from_now() -> None:
    plan = plan_deployment(parse_spec(RAW))
    stored = json.loads(json.dumps(rec.build_controller_revision(OWNER, "a", 1, RAW, plan)))
    now = copy.deepcopy(RAW)
    now["model"]["revision"] = "v2"  # the spec moved on (e.g. to a revision that was rolled back)
    now["replicas"] = 5
    spec = rec.spec_for_revision(stored, now)
    assert spec.model.revision == "main" and spec.replicas == 5
    # Built from the record, the revision is the one recorded.
    assert serving.revision_hash(spec, rec.plan_for_revision(stored)) == serving.revision_hash(
        parse_spec(RAW), plan
    )


def test_plan_records_from_a_newer_operator_ignore_unknown_fields() -> None:
    plan = plan_deployment(parse_spec(RAW))
    data = {**rec.plan_to_record(plan), "some_future_field": 3}
    assert rec.plan_from_record(json.loads(json.dumps(data))) == plan


def _record(revision: str, number: int) -> dict[str, Any]:
    return {"metadata": {"name": revision, "labels": {names.REVISION_LABEL: revision}}, "revision": number}


def test_pruning_keeps_the_newest_and_every_live_revision() -> None:
    records = [_record(f"r{i}", i) for i in range(1, 16)]
    pruned = {r["metadata"]["name"] for r in rec.prunable(records, live={"r1", "r15"})}
    assert pruned == {"r2", "r3", "r4"}  # 13 not live, 10 kept
    assert rec.prunable(records[:5], live=set()) == []
    assert rec.next_number(records) == 16 and rec.next_number([]) == 1
