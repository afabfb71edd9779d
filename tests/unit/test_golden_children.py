"""Golden files of every child object the operator builds for each sample.

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
from deepseek_operator.reconcile import desired_state
from deepseek_operator.sim.tools import repo_root

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


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_children_match_golden(sample: Path) -> None:
    objects = desired_state(_body(sample)).objects
    text = yaml.dump_all(objects, Dumper=_LiteralDumper, sort_keys=True, width=120)
    golden = GOLDEN / f"{sample.stem}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden}; run with UPDATE_GOLDEN=1"
    assert text == golden.read_text()


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_children_are_deterministic_and_named_once(sample: Path) -> None:
    first = desired_state(_body(sample)).objects
    assert first == desired_state(_body(sample)).objects
    keys = [(o["kind"], o["metadata"]["name"]) for o in first]
    assert len(keys) == len(set(keys))
    for obj in first:
        assert obj["metadata"]["namespace"] == "llm"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "00000000-0000-0000-0000-000000000001"
