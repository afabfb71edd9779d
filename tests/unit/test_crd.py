"""The CRD file itself: names of the contract, no schema defaults, descriptions everywhere."""

from __future__ import annotations

import copy
import functools
import re
from typing import Any

import pytest
import yaml

from deepseek_operator.api import constants as c
from deepseek_operator.api import spec as api_spec
from deepseek_operator.api.spec import parse_spec
from deepseek_operator.errors import SpecError
from deepseek_operator.sim.tools import repo_root


@functools.cache
def _crd_file() -> dict[str, Any]:
    doc = yaml.safe_load((repo_root() / "crds" / f"{c.GROUP}_{c.PLURAL}.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _crd() -> dict[str, Any]:
    return copy.deepcopy(_crd_file())


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
    "minProperties",
    "maxProperties",
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


# ---------------------------------------------------------------------------
# The CRD against parse_spec: every field the operator reads is in the schema,
# with the same type, enum and range.


def _spec_schema() -> dict[str, Any]:
    schema = _crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert isinstance(schema, dict)
    return schema


def _at(path: str) -> dict[str, Any]:
    """The schema of a dotted path under ``spec`` ("gpu.products[]": the items, "nccl.env{}": the values)."""
    node = _spec_schema()
    for part in path.split("."):
        name = part.removesuffix("[]").removesuffix("{}")
        assert name in node.get("properties", {}), f"spec.{path}: no {name!r} in the CRD schema"
        node = node["properties"][name]
        if part.endswith("[]"):
            node = node["items"]
        elif part.endswith("{}"):
            node = node["additionalProperties"]
    return node


def _type(node: dict[str, Any]) -> str:
    return "int-or-string" if node.get("x-kubernetes-int-or-string") else str(node.get("type"))


# Every field parse_spec reads, with the JSON type it expects.
PARSED_FIELDS = [
    ("model", "object"),
    ("model.id", "string"),
    ("model.source", "object"),
    ("model.source.pvc", "object"),
    ("model.source.pvc.claimName", "string"),
    ("model.source.pvc.path", "string"),
    ("model.source.uri", "string"),
    ("model.source.credentialsSecret", "string"),
    ("model.source.packageIndex", "string"),
    ("model.encryption", "object"),
    ("model.encryption.cipher", "string"),
    ("model.encryption.keySecret", "object"),
    ("model.encryption.keySecret.name", "string"),
    ("model.encryption.keySecret.key", "string"),
    ("model.encryption.plaintextVolume", "string"),
    ("model.encryption.image", "string"),
    ("model.revision", "string"),
    ("model.parameters", "int-or-string"),
    ("model.architecture", "object"),
    ("model.architecture.family", "string"),
    ("model.architecture.layers", "integer"),
    ("model.architecture.hiddenSize", "integer"),
    ("model.architecture.attentionHeads", "integer"),
    ("model.architecture.kvHeads", "integer"),
    ("model.architecture.headDim", "integer"),
    ("model.architecture.vocabSize", "integer"),
    ("model.architecture.experts", "integer"),
    ("model.architecture.activeExperts", "integer"),
    ("model.architecture.kvLoraRank", "integer"),
    ("model.architecture.nativePrecision", "string"),
    ("engine", "object"),
    ("engine.runtime", "string"),
    ("engine.precision", "string"),
    ("engine.maxBatchSize", "integer"),
    ("engine.maxInputTokens", "integer"),
    ("engine.maxOutputTokens", "integer"),
    ("engine.kvCacheMemoryFraction", "number"),
    ("engine.image", "string"),
    ("engine.maxQueueDelayMicroseconds", "integer"),
    ("engine.batchSchedulerPolicy", "string"),
    ("engine.enableKVCacheReuse", "boolean"),
    ("engine.enableChunkedContext", "boolean"),
    ("engine.streaming", "boolean"),
    ("engine.cacheClaimName", "string"),
    ("engine.calibrationDataset", "string"),
    ("gpu", "object"),
    ("gpu.products", "array"),
    ("gpu.products[]", "string"),
    ("gpu.perReplica", "integer"),
    ("gpu.tensorParallel", "integer"),
    ("gpu.pipelineParallel", "integer"),
    ("gpu.nodeSelector", "object"),
    ("gpu.nodeSelector{}", "string"),
    ("gpu.tolerations", "array"),
    ("gpu.tolerations[]", "object"),
    ("replicas", "integer"),
    ("autoscaling", "object"),
    ("autoscaling.minReplicas", "integer"),
    ("autoscaling.maxReplicas", "integer"),
    ("autoscaling.targetGPUUtilization", "integer"),
    ("autoscaling.scaleDownStabilizationSeconds", "integer"),
    ("autoscaling.scaleUpStep", "integer"),
    ("autoscaling.scaleUpPeriodSeconds", "integer"),
    ("autoscaling.queue", "object"),
    ("autoscaling.queue.signal", "string"),
    ("autoscaling.queue.target", "number"),
    ("nccl", "object"),
    ("nccl.fabric", "string"),
    ("nccl.env", "object"),
    ("nccl.env{}", "string"),
    ("rollout", "object"),
    ("rollout.canary", "object"),
    ("rollout.canary.replicas", "integer"),
    ("rollout.canary.successfulAnalyses", "integer"),
    ("rollout.analysis", "object"),
    ("rollout.analysis.interval", "string"),
    ("rollout.analysis.failureLimit", "integer"),
    ("rollout.analysis.maxP99LatencyMs", "number"),
    ("rollout.analysis.maxErrorRate", "number"),
    ("rollout.analysis.accuracy", "object"),
    ("rollout.analysis.accuracy.goldenSet", "object"),
    ("rollout.analysis.accuracy.goldenSet.configMapName", "string"),
    ("rollout.analysis.accuracy.goldenSet.key", "string"),
    ("rollout.analysis.accuracy.minScore", "number"),
    ("rollout.analysis.accuracy.maxDrop", "number"),
    ("rollout.autoRollback", "boolean"),
    ("rollout.standbyReplicas", "integer"),
    ("service", "object"),
    ("service.type", "string"),
]


@pytest.mark.parametrize(("path", "json_type"), PARSED_FIELDS, ids=[p for p, _ in PARSED_FIELDS])
def test_every_field_parse_spec_reads_is_in_the_schema(path: str, json_type: str) -> None:
    assert _type(_at(path)) == json_type


# Every field set: each branch of parse_spec runs, so it reads every field it knows.
FULL_SPEC: dict[str, Any] = {
    "model": {
        "id": "acme/Custom-MoE-16B",
        "source": {
            "pvc": {"claimName": "models", "path": "acme/moe"},
            "credentialsSecret": "creds",
            "packageIndex": "https://pypi.internal.example/simple",
        },
        "encryption": {
            "cipher": "aes-256-gcm",
            "keySecret": {"name": "weights-key", "key": "weights.key"},
            "plaintextVolume": "NodeDisk",
            "image": "localhost/deepseek-operator:0.1.0",
        },
        "revision": "v2",
        "parameters": "15.7B",
        "architecture": {
            "family": "moe",
            "layers": 27,
            "hiddenSize": 2048,
            "attentionHeads": 16,
            "kvHeads": 16,
            "headDim": 128,
            "vocabSize": 102400,
            "experts": 64,
            "activeExperts": 6,
            "kvLoraRank": 512,
            "nativePrecision": "bf16",
        },
    },
    "engine": {
        "runtime": "pytorch",
        "precision": "fp8",
        "maxBatchSize": 64,
        "maxInputTokens": 8192,
        "maxOutputTokens": 2048,
        "kvCacheMemoryFraction": 0.85,
        "image": "registry.local/triton:1",
        "maxQueueDelayMicroseconds": 500,
        "batchSchedulerPolicy": "guaranteed_no_evict",
        "enableKVCacheReuse": False,
        "enableChunkedContext": True,
        "streaming": True,
        "cacheClaimName": "engine-cache",
        "calibrationDataset": "calibration/cnn_dailymail",
    },
    "gpu": {
        "products": ["NVIDIA-H100-80GB-HBM3"],
        "perReplica": 4,
        "tensorParallel": 2,
        "pipelineParallel": 2,
        "nodeSelector": {"pool": "llm"},
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
    },
    "replicas": 2,
    "autoscaling": {
        "minReplicas": 2,
        "maxReplicas": 6,
        "targetGPUUtilization": 75,
        "scaleDownStabilizationSeconds": 60,
        "scaleUpStep": 1,
        "scaleUpPeriodSeconds": 300,
        "queue": {"signal": "queueToComputeRatio", "target": 0.5},
    },
    "nccl": {"fabric": "infiniband", "env": {"NCCL_IB_HCA": "mlx5"}},
    "rollout": {
        "canary": {"replicas": 1, "successfulAnalyses": 5},
        "analysis": {
            "interval": "1m30s",
            "failureLimit": 2,
            "maxP99LatencyMs": 750.0,
            "maxErrorRate": 0.01,
            "accuracy": {
                "goldenSet": {"configMapName": "golden", "key": "g.jsonl"},
                "minScore": 0.8,
                "maxDrop": 0.1,
            },
        },
        "autoRollback": False,
        "standbyReplicas": 1,
    },
    "service": {"type": "NodePort"},
}


class _Recorder(dict[str, Any]):
    """A dict that notes every key read from it (and from the dicts under it) as a dotted path."""

    def __init__(self, data: dict[str, Any], path: str, log: set[str]) -> None:
        super().__init__(data)
        self._path, self._log = path, log

    def _note(self, key: str, value: Any) -> Any:
        path = f"{self._path}.{key}".lstrip(".")
        self._log.add(path)
        return _Recorder(value, path, self._log) if isinstance(value, dict) else value

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return self._note(key, super().get(key, default))

    def __getitem__(self, key: str) -> Any:
        return self._note(key, super().__getitem__(key))

    def __contains__(self, key: object) -> bool:
        self._log.add(f"{self._path}.{key}".lstrip("."))
        return super().__contains__(key)


def test_the_field_table_is_what_parse_spec_really_reads() -> None:
    # Keeps PARSED_FIELDS honest: a field parse_spec starts reading must be added
    # to the table (and so to the CRD), or this fails.
    read: set[str] = set()
    parsed = parse_spec(_Recorder(copy.deepcopy(FULL_SPEC), "", read))
    assert parsed.model.architecture is not None and parsed.autoscaling is not None
    assert parsed.rollout.analysis.accuracy.golden_set is not None
    table = {p for p, _ in PARSED_FIELDS if not p.endswith(("[]", "{}"))}
    assert read == table
    for path in read:
        _at(path)


def test_the_full_spec_uses_every_schema_field() -> None:
    # The other direction: no field in the schema that the operator ignores
    # (tolerations' own fields and status aside).
    def leaves(node: dict[str, Any], path: str) -> set[str]:
        out = {path} if path else set()
        for name, sub in node.get("properties", {}).items():
            out |= leaves(sub, f"{path}.{name}".lstrip("."))
        return out

    schema = {p for p in leaves(_spec_schema(), "") if not p.startswith("gpu.tolerations.")}
    table = {p for p, _ in PARSED_FIELDS if not p.endswith(("[]", "{}"))}
    assert schema == table


ENUMS = [
    ("engine.runtime", api_spec.RUNTIMES),
    ("autoscaling.queue.signal", api_spec.QUEUE_SIGNALS),
    ("engine.precision", api_spec.PRECISIONS),
    ("engine.batchSchedulerPolicy", api_spec.BATCH_POLICIES),
    ("nccl.fabric", api_spec.FABRICS),
    ("service.type", api_spec.SERVICE_TYPES),
    ("model.architecture.family", ("dense", "moe")),
    ("model.architecture.nativePrecision", ("bf16", "fp16", "fp8")),
]


@pytest.mark.parametrize(("path", "allowed"), ENUMS, ids=[p for p, _ in ENUMS])
def test_enums_match_parse_spec(path: str, allowed: tuple[str, ...]) -> None:
    assert tuple(_at(path)["enum"]) == allowed
    for value in allowed:
        parse_spec(_with(path, value))
    with pytest.raises(SpecError, match=re.escape(f"spec.{path}")):
        parse_spec(_with(path, "no-such-value"))


_MINIMAL: dict[str, Any] = {
    "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "source": {"uri": "s3://b/p"}}
}


def _with(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(_MINIMAL)
    node = spec
    *parents, last = path.split(".")
    for name in parents:
        node = node.setdefault(name, {})
    node[last] = value
    return spec


# (path, lowest, highest) that both the schema and parse_spec accept.
INT_RANGES = [
    ("engine.maxBatchSize", 0, 4096),
    ("engine.maxInputTokens", 1, 1_048_576),
    ("engine.maxOutputTokens", 1, 1_048_576),
    ("engine.maxQueueDelayMicroseconds", 0, 10_000_000),
    ("gpu.perReplica", 0, 64),
    ("gpu.tensorParallel", 0, 64),
    ("gpu.pipelineParallel", 1, 16),
    ("replicas", 0, 1000),
    ("autoscaling.minReplicas", 1, 1000),
    ("autoscaling.maxReplicas", 1, 1000),
    ("autoscaling.targetGPUUtilization", 1, 100),
    ("autoscaling.scaleDownStabilizationSeconds", 0, 3600),
    ("autoscaling.scaleUpStep", 1, 100),
    ("autoscaling.scaleUpPeriodSeconds", 1, 1800),
    ("rollout.canary.replicas", 1, 1000),
    ("rollout.canary.successfulAnalyses", 1, 100),
    ("rollout.analysis.failureLimit", 1, 100),
    ("rollout.standbyReplicas", 0, 100),
    *(
        (f"model.architecture.{k}", 1, 10_000_000)
        for k in (
            "layers",
            "hiddenSize",
            "attentionHeads",
            "kvHeads",
            "headDim",
            "vocabSize",
            "experts",
            "activeExperts",
            "kvLoraRank",
        )
    ),
]


@pytest.mark.parametrize(("path", "lo", "hi"), INT_RANGES, ids=[p for p, _, _ in INT_RANGES])
def test_integer_ranges_match_parse_spec(path: str, lo: int, hi: int) -> None:
    node = _at(path)
    assert (node["type"], node["minimum"], node["maximum"]) == ("integer", lo, hi)
    parse_spec(_with(path, lo))
    parse_spec(_with(path, hi))
    for bad in (lo - 1, hi + 1):
        with pytest.raises(SpecError, match=re.escape(f"spec.{path}")):
            parse_spec(_with(path, bad))


# (path, lowest, highest) for numbers in [lo, hi].
NUMBER_RANGES = [
    ("rollout.analysis.maxErrorRate", 0, 1),
    ("rollout.analysis.accuracy.minScore", 0, 1),
    ("rollout.analysis.accuracy.maxDrop", 0, 1),
]


@pytest.mark.parametrize(("path", "lo", "hi"), NUMBER_RANGES, ids=[p for p, _, _ in NUMBER_RANGES])
def test_number_ranges_match_parse_spec(path: str, lo: float, hi: float) -> None:
    node = _at(path)
    assert (node["type"], node["minimum"], node["maximum"]) == ("number", lo, hi)
    assert "exclusiveMinimum" not in node and "exclusiveMaximum" not in node
    parse_spec(_with(path, lo))
    parse_spec(_with(path, hi))
    for bad in (lo - 0.01, hi + 0.01):
        with pytest.raises(SpecError, match=re.escape(f"spec.{path}")):
            parse_spec(_with(path, bad))


def test_max_p99_latency_must_be_positive_in_both() -> None:
    node = _at("rollout.analysis.maxP99LatencyMs")
    assert (node["minimum"], node["exclusiveMinimum"], node["maximum"]) == (0, True, 3_600_000)
    parse_spec(_with("rollout.analysis.maxP99LatencyMs", 0.5))
    parse_spec(_with("rollout.analysis.maxP99LatencyMs", 3_600_000))
    for bad in (0, -1, 3_600_001):
        with pytest.raises(SpecError, match="maxP99LatencyMs"):
            parse_spec(_with("rollout.analysis.maxP99LatencyMs", bad))


def _rules_of(path: str) -> list[str]:
    return [r["rule"] for r in _at(path).get("x-kubernetes-validations", [])]


def test_kv_cache_fraction_range_is_a_cel_rule_matching_parse_spec() -> None:
    # Not minimum/maximum: the OpenAPI validator truncates fractional bounds for
    # integer values (kvCacheMemoryFraction: 0 passed "minimum: 0.05").
    node = _at("engine.kvCacheMemoryFraction")
    assert "minimum" not in node and "maximum" not in node
    assert _rules_of("engine.kvCacheMemoryFraction") == ["self >= 0.05 && self <= 0.99"]
    for good in (0.05, 0.9, 0.99):
        parse_spec(_with("engine.kvCacheMemoryFraction", good))
    for bad in (0, 0.04, 0.995, 1):
        with pytest.raises(SpecError, match="kvCacheMemoryFraction"):
            parse_spec(_with("engine.kvCacheMemoryFraction", bad))


def _cel_regex(path: str, index: int = 0) -> str:
    """The first raw-string regex (r"...") in a CEL rule of ``path``."""
    m = re.search(r'r"([^"]*)"', _rules_of(path)[index])
    assert m, _rules_of(path)
    return m[1]


DURATIONS = [
    "30s",
    "2m",
    "1h30m",
    "1500ms",
    "1h",
    "1h2m3s4ms",
    "90m",
    "",
    "30",
    "1d",
    "m",
    "1.5s",
    "-1s",
    "30S",
]
DURATIONS += ["30s1m", "1m30", "1s1s", "ms", "500ms", "0s"]


@pytest.mark.parametrize("text", DURATIONS)
def test_the_crd_duration_format_is_parse_duration(text: str) -> None:
    # The CRD's first interval rule is: self != "" && self.matches(REGEX).
    crd_ok = text != "" and re.search(_cel_regex("rollout.analysis.interval"), text) is not None
    try:
        api_spec.parse_duration(text, "spec.rollout.analysis.interval")
        parsed_ok = True
    except SpecError:
        parsed_ok = False
    assert crd_ok == parsed_ok


PARAMETERS = [
    "7.6B",
    "671B",
    "350M",
    "1.5T",
    "7B",
    "7.6b",
    "7.6 B",
    "B",
    "1.B",
    "7.6",
    "seven",
    "1e3B",
    "-7B",
]


@pytest.mark.parametrize("text", PARAMETERS)
def test_the_crd_parameters_format_is_parse_parameters(text: str) -> None:
    crd_ok = re.search(_cel_regex("model.parameters"), text) is not None
    try:
        api_spec.parse_parameters(text, "spec.model.parameters")
        parsed_ok = True
    except SpecError:
        parsed_ok = False
    assert crd_ok == parsed_ok


@pytest.mark.parametrize(
    "key", ["NCCL_IB_HCA", "FI_PROVIDER", "UCX_TLS", "NCCL_", "PATH", "nccl_debug", "NCCL-X", "XNCCL_A"]
)
def test_the_crd_nccl_key_rule_is_parse_specs(key: str) -> None:
    crd_ok = re.search(_cel_regex("nccl.env"), key) is not None
    try:
        parse_spec(_with("nccl.env", {key: "1"}))
        parsed_ok = True
    except SpecError:
        parsed_ok = False
    assert crd_ok == parsed_ok


@pytest.mark.parametrize(
    "uri", ["s3://b/p", "gs://b/p", "hf://org/m", "https://h/p", "http://h/p", "ftp://h", "s3://", "b/p"]
)
def test_the_crd_uri_rule_is_parse_specs(uri: str) -> None:
    crd_ok = re.search(_cel_regex("model.source.uri"), uri) is not None
    try:
        parse_spec(_with("model.source.uri", uri))
        parsed_ok = True
    except SpecError:
        parsed_ok = False
    assert crd_ok == parsed_ok


def test_tensor_parallel_rule_lists_the_powers_of_two_parse_spec_accepts() -> None:
    (rule,) = _rules_of("gpu.tensorParallel")
    allowed = [int(x) for x in re.findall(r"\d+", rule)]
    accepted = []
    for tp in range(65):
        try:
            parse_spec(_with("gpu.tensorParallel", tp))
            accepted.append(tp)
        except SpecError:
            pass
    assert allowed == accepted == [0, 1, 2, 4, 8, 16, 32, 64]


def _validations(node: Any, path: str = "spec") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out += [(path, v) for v in node.get("x-kubernetes-validations", [])]
        for name, sub in node.get("properties", {}).items():
            out += _validations(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                out += _validations(node[key], path)
    return out


def test_every_cel_rule_has_a_message_naming_its_field() -> None:
    rules = _validations(_spec_schema())
    assert len(rules) >= 15
    for path, v in rules:
        assert set(v) <= {"rule", "message", "fieldPath", "reason"}, v
        # messageExpression is avoided: string(int) in one blew the CEL cost budget.
        field = path + v.get("fieldPath", "")
        assert field in v["message"] or path in v["message"], (path, v)


def test_every_string_list_and_map_is_bounded() -> None:
    # The CEL cost estimator needs bounds; unbounded user strings are also a denial-of-service vector.
    def walk(node: dict[str, Any], path: str) -> list[str]:
        bad = []
        kind = node.get("type")
        if kind == "string" and "maxLength" not in node and "enum" not in node:
            bad.append(path)
        if kind == "array" and "maxItems" not in node:
            bad.append(path)
        if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            bad.append(path)
        for name, sub in node.get("properties", {}).items():
            bad += walk(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                bad += walk(node[key], f"{path}.{key}")
        return bad

    assert walk(_spec_schema(), "spec") == []


def _fields(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, sub in schema.get("properties", {}).items():
        out.append((f"{path}.{name}", sub))
        out += _fields(sub, f"{path}.{name}")
        if isinstance(sub.get("items"), dict):
            out += _fields(sub["items"], f"{path}.{name}[]")
    return out


def test_every_spec_field_states_its_default_or_that_it_is_required() -> None:
    missing = [
        path
        for path, sub in _fields(_spec_schema(), "spec")
        if not re.search(r"\bdefault\b|\brequired\b", sub.get("description", ""), re.IGNORECASE)
    ]
    assert missing == []
