"""The CRD file itself: names of the contract, no schema defaults, descriptions everywhere."""

from __future__ import annotations

from typing import Any

import yaml

from deepseek_operator.api import constants as c
from deepseek_operator.sim.tools import repo_root


def _crd() -> dict[str, Any]:
    doc = yaml.safe_load((repo_root() / "crds" / f"{c.GROUP}_{c.PLURAL}.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    out = [(path, node)]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _walk(v, f"{path}[{i}]")
    return out


def test_names_match_the_contract() -> None:
    crd = _crd()
    assert crd["metadata"]["name"] == c.CRD_NAME
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
        c.KIND,
        c.PLURAL,
        [c.SHORT_NAME],
        ["deepseek"],
    )
    (version,) = crd["spec"]["versions"]
    assert version["name"] == c.VERSION
    assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    (version,) = _crd()["spec"]["versions"]
    cols = [col["name"] for col in version["additionalPrinterColumns"]]
    assert cols == ["Model", "Precision", "GPUs", "Replicas", "Ready", "Phase", "P99", "Accuracy", "Age"]


def test_no_schema_defaults() -> None:
    schema = _crd()["spec"]["versions"][0]["schema"]
    assert [p for p, _ in _walk(schema) if p.endswith(".default")] == []


def _undescribed(schema: dict[str, Any], path: str) -> list[str]:
    missing = []
    for name, sub in schema.get("properties", {}).items():
        if "description" not in sub:
            missing.append(f"{path}.{name}")
        missing += _undescribed(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        missing += _undescribed(schema["items"], f"{path}[]")
    return missing


def test_every_spec_field_has_a_description() -> None:
    spec = _crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert _undescribed(spec, "spec") == []


SCHEMA_KEYWORDS = {
    "type",
    "description",
    "properties",
    "items",
    "required",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "additionalProperties",
    "minItems",
    "maxItems",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-int-or-string",
    "nullable",
    "oneOf",
    "anyOf",
    "allOf",
    "not",
    "uniqueItems",
}


def _unknown_keywords(schema: dict[str, Any], path: str) -> list[str]:
    bad = [f"{path}: {k}" for k in schema if k not in SCHEMA_KEYWORDS]
    for name, sub in schema.get("properties", {}).items():
        bad += _unknown_keywords(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            bad += _unknown_keywords(schema[key], f"{path}.{key}")
    return bad


def test_schema_uses_only_schema_keywords() -> None:
    # Catches YAML slips such as an unquoted comma in a flow mapping turning
    # part of a description into a bogus key.
    root = _crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _unknown_keywords(root, "") == []
