"""A bad DeepSeekDeployment is refused at admission, by the real API server, naming the field.

Every spec below is sent to kube-apiserver as is (no mocks): the OpenAPI schema
and the CEL rules of ``crds/`` must refuse it with 422 and a message that names
the field. The valid samples must pass and read back unchanged.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import uuid
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deepseek_operator.api.constants import API_VERSION, CRD_NAME, GROUP, KIND, PLURAL, VERSION
from deepseek_operator.api.spec import parse_spec
from deepseek_operator.sim.cluster import SimCluster
from deepseek_operator.sim.tools import repo_root, tool_path
from tests.support.plugin import wait_for

# The smallest valid spec; every refused case changes it in one place.
BASE: dict[str, Any] = {
    "model": {
        "id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "source": {"pvc": {"claimName": "model-store", "path": "deepseek/r1-qwen-7b"}},
    },
}

# Every field of the spec set, to valid values: nothing may be refused or pruned.
FULL: dict[str, Any] = {
    "model": {
        "id": "acme/Custom-MoE-16B",
        "source": {
            "uri": "hf://acme/Custom-MoE-16B",
            "credentialsSecret": "hf-token",
            "packageIndex": "https://pypi.internal.example/simple",
        },
        "revision": "v1.2",
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
        "image": "nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3",
        "maxQueueDelayMicroseconds": 500,
        "batchSchedulerPolicy": "guaranteed_no_evict",
        "enableKVCacheReuse": False,
        "enableChunkedContext": True,
        "streaming": True,
        "cacheClaimName": "engine-cache",
        "calibrationDataset": "calibration/cnn_dailymail",
    },
    "gpu": {
        "products": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H200"],
        "perReplica": 4,
        "tensorParallel": 2,
        "pipelineParallel": 2,
        "nodeSelector": {"example.com/pool": "serving", "zone": "a"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60},
        ],
    },
    "replicas": 2,
    "autoscaling": {
        "minReplicas": 2,
        "maxReplicas": 6,
        "targetGPUUtilization": 75,
        "scaleDownStabilizationSeconds": 600,
    },
    "nccl": {
        "fabric": "infiniband",
        "env": {"NCCL_IB_HCA": "mlx5", "NCCL_DEBUG": "WARN", "FI_PROVIDER": "efa"},
    },
    "rollout": {
        "canary": {"replicas": 1, "successfulAnalyses": 5},
        "analysis": {
            "interval": "1m30s",
            "failureLimit": 2,
            "maxP99LatencyMs": 750.5,
            "maxErrorRate": 0.01,
            "accuracy": {
                "goldenSet": {"configMapName": "golden", "key": "golden.jsonl"},
                "minScore": 0.8,
                "maxDrop": 0.1,
            },
        },
        "autoRollback": False,
        "standbyReplicas": 1,
    },
    "service": {"type": "LoadBalancer"},
}

_DROP = object()  # in a patch: remove this key


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is _DROP:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _body(spec: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name or f"dsd-{uuid.uuid4().hex[:8]}"},
        "spec": spec,
    }


def _create(kube_api: Any, namespace: str, spec: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    obj = client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _body(spec), **kwargs
    )
    assert isinstance(obj, dict)
    return obj


def _refusal(kube_api: Any, namespace: str, spec: dict[str, Any], **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(ApiException) as info:
        _create(kube_api, namespace, spec, **kwargs)
    return info.value.status, str(json.loads(info.value.body)["message"])


def _case(patch: dict[str, Any], field: str, hint: str = "", *, id: str) -> Any:
    return pytest.param(_merge(BASE, patch), field, hint, id=id)


_LONG = "x" * 300
TP_RULE = "power of two"
PER_RULE = "tensorParallel x pipelineParallel"
KV = "from 0.05 to 0.99"

REFUSED = [
    # ---- model
    _case({"model": _DROP, "replicas": 1}, "spec.model", "Required", id="no-model"),
    _case({"model": {"id": _DROP}}, "spec.model.id", "Required", id="no-model-id"),
    _case({"model": {"id": ""}}, "spec.model.id", id="empty-model-id"),
    _case(
        {"model": {"id": "deepseek-ai/DeepSeek R1"}},
        "spec.model.id",
        hint="must not contain spaces",
        id="model-id-with-space",
    ),
    _case({"model": {"id": _LONG}}, "spec.model.id", "200", id="model-id-too-long"),
    _case({"model": {"source": _DROP}}, "spec.model.source", "Required", id="no-source"),
    _case({"model": {"source": {"pvc": _DROP}}}, "spec.model.source", "give one of pvc", id="neither-source"),
    _case({"model": {"source": {"uri": "s3://b/p"}}}, "spec.model.source", "not both", id="both-sources"),
    _case(
        {"model": {"source": {"pvc": _DROP, "uri": "ftp://host/model"}}},
        "spec.model.source.uri",
        "s3://, gs://, hf:// or https://",
        id="uri-ftp",
    ),
    _case(
        {"model": {"source": {"pvc": _DROP, "uri": "bucket/prefix"}}},
        "spec.model.source.uri",
        "s3://",
        id="uri-no-scheme",
    ),
    _case(
        {"model": {"source": {"pvc": {"claimName": _DROP}}}},
        "spec.model.source.pvc.claimName",
        "Required",
        id="pvc-no-claim",
    ),
    _case(
        {"model": {"source": {"pvc": {"claimName": "Model_Store"}}}},
        "spec.model.source.pvc.claimName",
        hint="DNS-1123",
        id="claim-dns",
    ),
    _case(
        {"model": {"source": {"pvc": {"path": "a/../../etc"}}}},
        "spec.model.source.pvc.path",
        "'..'",
        id="path-dotdot",
    ),
    _case(
        {"model": {"source": {"pvc": _DROP, "uri": "s3://b/p", "credentialsSecret": "My Secret"}}},
        "spec.model.source.credentialsSecret",
        hint="DNS-1123",
        id="secret-dns",
    ),
    _case({"model": {"parameters": "7.6 billion"}}, "spec.model.parameters", "7.6B", id="parameters-words"),
    _case({"model": {"parameters": "7.6b"}}, "spec.model.parameters", "7.6B", id="parameters-lowercase"),
    _case({"model": {"parameters": 0}}, "spec.model.parameters", "above 0", id="parameters-zero"),
    _case({"model": {"parameters": 7.6}}, "spec.model.parameters", "integer,string", id="parameters-float"),
    _case(
        {"model": {"architecture": {"family": "sparse"}}}, "spec.model.architecture.family", id="family-enum"
    ),
    _case({"model": {"architecture": {"layers": 0}}}, "spec.model.architecture.layers", id="layers-zero"),
    _case(
        {"model": {"architecture": {"hiddenSize": 20_000_000}}},
        "spec.model.architecture.hiddenSize",
        id="hidden-size-too-big",
    ),
    _case(
        {"model": {"architecture": {"family": "moe", "experts": 8, "activeExperts": 9}}},
        "spec.model.architecture.activeExperts",
        "must not exceed experts",
        id="active-experts-over-experts",
    ),
    _case(
        {"model": {"architecture": {"nativePrecision": "int4"}}},
        "spec.model.architecture.nativePrecision",
        id="native-precision-enum",
    ),
    _case({"model": {"revision": _LONG}}, "spec.model.revision", id="revision-too-long"),
    # ---- engine
    _case({"engine": {"runtime": "vllm"}}, "spec.engine.runtime", "tensorrt-llm", id="runtime-enum"),
    _case({"engine": {"precision": "fp4"}}, "spec.engine.precision", "int4-awq", id="precision-enum"),
    _case({"engine": {"maxBatchSize": -1}}, "spec.engine.maxBatchSize", id="batch-negative"),
    _case({"engine": {"maxBatchSize": 5000}}, "spec.engine.maxBatchSize", "4096", id="batch-too-big"),
    _case({"engine": {"maxInputTokens": 0}}, "spec.engine.maxInputTokens", id="input-tokens-zero"),
    _case(
        {"engine": {"maxOutputTokens": 2_000_000}}, "spec.engine.maxOutputTokens", id="output-tokens-too-big"
    ),
    _case(
        {"engine": {"kvCacheMemoryFraction": 1.0}},
        "spec.engine.kvCacheMemoryFraction",
        KV,
        id="kv-fraction-1.0",
    ),
    # An integer against fractional bounds: the OpenAPI minimum/maximum would truncate them.
    _case(
        {"engine": {"kvCacheMemoryFraction": 1}},
        "spec.engine.kvCacheMemoryFraction",
        KV,
        id="kv-fraction-int-1",
    ),
    _case(
        {"engine": {"kvCacheMemoryFraction": 0}},
        "spec.engine.kvCacheMemoryFraction",
        KV,
        id="kv-fraction-int-0",
    ),
    _case(
        {"engine": {"kvCacheMemoryFraction": 0.995}},
        "spec.engine.kvCacheMemoryFraction",
        KV,
        id="kv-fraction-0.995",
    ),
    _case(
        {"engine": {"image": "nvcr.io/x y"}},
        "spec.engine.image",
        hint="without spaces",
        id="image-with-space",
    ),
    _case(
        {"engine": {"maxQueueDelayMicroseconds": -5}},
        "spec.engine.maxQueueDelayMicroseconds",
        id="queue-delay-negative",
    ),
    _case(
        {"engine": {"batchSchedulerPolicy": "fifo"}},
        "spec.engine.batchSchedulerPolicy",
        id="batch-policy-enum",
    ),
    _case(
        {"engine": {"enableKVCacheReuse": "yes"}},
        "spec.engine.enableKVCacheReuse",
        "boolean",
        id="kv-reuse-type",
    ),
    _case({"engine": {"streaming": 1}}, "spec.engine.streaming", "boolean", id="streaming-type"),
    _case(
        {"engine": {"cacheClaimName": "Engine_Cache"}},
        "spec.engine.cacheClaimName",
        hint="DNS-1123",
        id="cache-claim-dns",
    ),
    _case(
        {"engine": {"calibrationDataset": "calib/../../etc"}},
        "spec.engine.calibrationDataset",
        "'..'",
        id="calibration-dotdot",
    ),
    _case(
        {"model": {"source": {"pvc": _DROP, "uri": "s3://b/p", "packageIndex": "pypi.internal"}}},
        "spec.model.source.packageIndex",
        "https://",
        id="package-index-url",
    ),
    # ---- gpu
    _case({"gpu": {"tensorParallel": 3}}, "spec.gpu.tensorParallel", TP_RULE, id="tp-3"),
    _case({"gpu": {"tensorParallel": 6}}, "spec.gpu.tensorParallel", TP_RULE, id="tp-6"),
    _case({"gpu": {"tensorParallel": 128}}, "spec.gpu.tensorParallel", "64", id="tp-too-big"),
    _case(
        {"gpu": {"tensorParallel": 2, "perReplica": 3}}, "spec.gpu.perReplica", PER_RULE, id="per-replica-tp"
    ),
    _case(
        {"gpu": {"tensorParallel": 2, "pipelineParallel": 2, "perReplica": 2}},
        "spec.gpu.perReplica",
        PER_RULE,
        id="per-replica-tp-pp",
    ),
    _case(
        # pipelineParallel absent counts as 1: 4 x 1 != 8.
        {"gpu": {"tensorParallel": 4, "perReplica": 8}},
        "spec.gpu.perReplica",
        PER_RULE,
        id="per-replica-pp-defaults-to-1",
    ),
    _case({"gpu": {"perReplica": 65}}, "spec.gpu.perReplica", id="per-replica-too-big"),
    _case({"gpu": {"pipelineParallel": 0}}, "spec.gpu.pipelineParallel", id="pp-zero"),
    _case({"gpu": {"products": ["NVIDIA-H100-80GB-HBM3", ""]}}, "spec.gpu.products[1]", id="product-empty"),
    _case(
        {"gpu": {"products": ["NVIDIA H100"]}}, "spec.gpu.products[0]", "label value", id="product-with-space"
    ),
    _case(
        {"gpu": {"products": [f"GPU-{i}" for i in range(17)]}},
        "spec.gpu.products",
        "16",
        id="products-too-many",
    ),
    _case(
        {"gpu": {"products": "NVIDIA-H100-80GB-HBM3"}}, "spec.gpu.products", "array", id="products-not-a-list"
    ),
    _case(
        {"gpu": {"nodeSelector": {"bad key!": "x"}}},
        "spec.gpu.nodeSelector",
        "label key",
        id="node-selector-key",
    ),
    _case(
        {"gpu": {"nodeSelector": {"pool": "not a label value"}}},
        "spec.gpu.nodeSelector",
        hint="label value",
        id="node-selector-value",
    ),
    _case(
        {"gpu": {"tolerations": [{"key": "k", "operator": "Maybe"}]}},
        "spec.gpu.tolerations[0].operator",
        id="toleration-operator",
    ),
    # ---- replicas and autoscaling
    _case({"replicas": -1}, "spec.replicas", "greater than or equal to 0", id="replicas-negative"),
    _case({"replicas": 1001}, "spec.replicas", id="replicas-too-many"),
    _case(
        {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        "spec.autoscaling.minReplicas",
        "must not be more than maxReplicas",
        id="min-over-max",
    ),
    _case({"autoscaling": {"minReplicas": 0}}, "spec.autoscaling.minReplicas", id="min-replicas-zero"),
    _case(
        {"autoscaling": {"targetGPUUtilization": 150}}, "spec.autoscaling.targetGPUUtilization", id="util-150"
    ),
    _case(
        {"autoscaling": {"scaleDownStabilizationSeconds": 7200}},
        "spec.autoscaling.scaleDownStabilizationSeconds",
        id="stabilization-too-long",
    ),
    # ---- nccl
    _case({"nccl": {"fabric": "nvswitch"}}, "spec.nccl.fabric", "infiniband", id="fabric-enum"),
    _case(
        {"nccl": {"env": {"NCCL_DEBUG": "INFO", "PATH": "/tmp"}}},
        "spec.nccl.env",
        "NCCL_*",
        id="nccl-key-path",
    ),
    _case({"nccl": {"env": {"nccl_debug": "INFO"}}}, "spec.nccl.env", "upper case", id="nccl-key-lowercase"),
    _case({"nccl": {"env": {"NCCL_": "x"}}}, "spec.nccl.env", "NCCL_*", id="nccl-key-prefix-only"),
    # ---- rollout
    _case({"rollout": {"canary": {"replicas": 0}}}, "spec.rollout.canary.replicas", id="canary-zero"),
    _case(
        {"rollout": {"canary": {"successfulAnalyses": 0}}},
        "spec.rollout.canary.successfulAnalyses",
        id="successful-analyses-zero",
    ),
    _case(
        {"rollout": {"analysis": {"interval": "30"}}},
        "spec.rollout.analysis.interval",
        "not a duration",
        id="interval-no-unit",
    ),
    _case(
        {"rollout": {"analysis": {"interval": "1d"}}},
        "spec.rollout.analysis.interval",
        "not a duration",
        id="interval-days",
    ),
    _case(
        {"rollout": {"analysis": {"interval": "30s1m"}}},
        "spec.rollout.analysis.interval",
        "not a duration",
        id="interval-order",
    ),
    _case(
        {"rollout": {"analysis": {"interval": ""}}},
        "spec.rollout.analysis.interval",
        "30s",
        id="interval-empty",
    ),
    _case(
        {"rollout": {"analysis": {"interval": "500ms"}}},
        "spec.rollout.analysis.interval",
        "1s or more",
        id="interval-under-1s",
    ),
    _case(
        {"rollout": {"analysis": {"failureLimit": 0}}},
        "spec.rollout.analysis.failureLimit",
        id="failure-limit-0",
    ),
    _case(
        {"rollout": {"analysis": {"maxP99LatencyMs": 0}}},
        "spec.rollout.analysis.maxP99LatencyMs",
        "greater than 0",
        id="p99-zero",
    ),
    _case(
        {"rollout": {"analysis": {"maxP99LatencyMs": -5}}},
        "spec.rollout.analysis.maxP99LatencyMs",
        id="p99-neg",
    ),
    _case(
        {"rollout": {"analysis": {"maxErrorRate": 1.5}}},
        "spec.rollout.analysis.maxErrorRate",
        "less than or equal to 1",
        id="error-rate-1.5",
    ),
    _case(
        {"rollout": {"analysis": {"maxErrorRate": -0.01}}},
        "spec.rollout.analysis.maxErrorRate",
        id="error-rate-neg",
    ),
    _case(
        {"rollout": {"analysis": {"accuracy": {"minScore": -0.1}}}},
        "spec.rollout.analysis.accuracy.minScore",
        "greater than or equal to 0",
        id="min-score-negative",
    ),
    _case(
        {"rollout": {"analysis": {"accuracy": {"minScore": 1.1}}}},
        "spec.rollout.analysis.accuracy.minScore",
        id="min-score-over-1",
    ),
    _case(
        {"rollout": {"analysis": {"accuracy": {"maxDrop": 2}}}},
        "spec.rollout.analysis.accuracy.maxDrop",
        id="max-drop-2",
    ),
    _case(
        {"rollout": {"analysis": {"accuracy": {"goldenSet": {"key": "golden.jsonl"}}}}},
        "spec.rollout.analysis.accuracy.goldenSet.configMapName",
        "Required",
        id="golden-set-no-configmap",
    ),
    _case(
        {"rollout": {"analysis": {"accuracy": {"goldenSet": {"configMapName": "Golden Set"}}}}},
        "spec.rollout.analysis.accuracy.goldenSet.configMapName",
        hint="DNS-1123",
        id="golden-set-configmap-dns",
    ),
    _case(
        {"rollout": {"analysis": {"accuracy": {"goldenSet": {"configMapName": "g", "key": "a/b"}}}}},
        "spec.rollout.analysis.accuracy.goldenSet.key",
        hint="ConfigMap key",
        id="golden-set-key",
    ),
    _case({"rollout": {"standbyReplicas": -1}}, "spec.rollout.standbyReplicas", id="standby-negative"),
    _case(
        {"rollout": {"autoRollback": "no"}}, "spec.rollout.autoRollback", "boolean", id="auto-rollback-type"
    ),
    # ---- service
    _case({"service": {"type": "ExternalName"}}, "spec.service.type", "ClusterIP", id="service-type-enum"),
]


@pytest.mark.usefixtures("crds")
@pytest.mark.parametrize(("spec", "field", "hint"), REFUSED)
def test_bad_spec_is_refused_naming_the_field(
    kube_api: Any, namespace: str, spec: dict[str, Any], field: str, hint: str
) -> None:
    status, message = _refusal(kube_api, namespace, spec)
    assert status == 422, message
    assert f"{field}:" in message or f"{field} " in message, message
    assert hint in message, message


def test_the_table_covers_enough_cases() -> None:
    assert len(REFUSED) >= 25
    assert len({p.id for p in REFUSED}) == len(REFUSED)


def test_base_and_full_specs_are_accepted_and_read_back_unchanged(
    kube_api: Any, namespace: str, crds: list[str]
) -> None:
    for spec in (BASE, FULL):
        parse_spec(copy.deepcopy(spec))  # the operator accepts it too
        created = _create(kube_api, namespace, copy.deepcopy(spec))
        got = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, created["metadata"]["name"]
        )
        # Nothing pruned (every field is in the schema), nothing added (no schema defaults).
        assert got["spec"] == spec


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(
            _merge(BASE, {"model": {"source": {"pvc": _DROP, "uri": "s3://bucket/p"}}}), id="uri-s3"
        ),
        pytest.param(_merge(BASE, {"model": {"parameters": "350M"}}), id="parameters-350M"),
        pytest.param(_merge(BASE, {"model": {"parameters": "1.5T"}}), id="parameters-1.5T"),
        pytest.param(_merge(BASE, {"model": {"parameters": 671}}), id="parameters-int"),
        pytest.param(_merge(BASE, {"model": {"id": "my-org/not-a-catalog-model"}}), id="non-catalog-id"),
        pytest.param(_merge(BASE, {"gpu": {"tensorParallel": 8, "perReplica": 8}}), id="tp8-per8"),
        pytest.param(_merge(BASE, {"gpu": {"tensorParallel": 4, "perReplica": 0}}), id="tp4-per-planned"),
        pytest.param(_merge(BASE, {"gpu": {"tensorParallel": 0, "perReplica": 3}}), id="tp-planned-per3"),
        pytest.param(_merge(BASE, {"autoscaling": {"minReplicas": 3, "maxReplicas": 3}}), id="min-eq-max"),
        pytest.param(_merge(BASE, {"autoscaling": {"minReplicas": 10}}), id="min-only"),
        pytest.param(_merge(BASE, {"replicas": 0}), id="replicas-0"),
        pytest.param(_merge(BASE, {"rollout": {"analysis": {"interval": "1h30m"}}}), id="interval-1h30m"),
        pytest.param(_merge(BASE, {"rollout": {"analysis": {"interval": "1500ms"}}}), id="interval-1500ms"),
        pytest.param(_merge(BASE, {"rollout": {"analysis": {"interval": "2m"}}}), id="interval-2m"),
        pytest.param(
            _merge(
                BASE,
                {"rollout": {"analysis": {"maxErrorRate": 0, "accuracy": {"minScore": 1, "maxDrop": 0}}}},
            ),
            id="threshold-bounds",
        ),
        pytest.param(_merge(BASE, {"engine": {"image": "", "cacheClaimName": ""}}), id="empty-means-default"),
    ],
)
def test_edge_specs_are_accepted(
    kube_api: Any, namespace: str, crds: list[str], spec: dict[str, Any]
) -> None:
    parse_spec(copy.deepcopy(spec))
    created = _create(kube_api, namespace, copy.deepcopy(spec))
    assert created["spec"] == spec


def test_an_unknown_field_is_refused_with_strict_field_validation(
    kube_api: Any, namespace: str, crds: list[str]
) -> None:
    # What kubectl does by default (--validate=strict): a typo is an error, not a silent prune.
    spec = _merge(BASE, {"engine": {"maxBatchsize": 8}})
    status, message = _refusal(kube_api, namespace, spec, field_validation="Strict")
    assert status == 400, message
    assert "spec.engine.maxBatchsize" in message


def _sample_documents() -> list[Any]:
    params = []
    for path in sorted((repo_root() / "manifests" / "samples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == KIND:
                params.append(pytest.param(doc, id=f"{path.name}:{doc['metadata']['name']}"))
    return params


SAMPLES = _sample_documents()


def test_there_are_samples() -> None:
    assert SAMPLES


@pytest.mark.parametrize("doc", SAMPLES)
def test_sample_is_accepted_and_read_back_unchanged(
    kube_api: Any, namespace: str, crds: list[str], doc: dict[str, Any]
) -> None:
    assert doc["apiVersion"] == API_VERSION
    parse_spec(copy.deepcopy(doc["spec"]))
    body = copy.deepcopy(doc)
    body["metadata"].pop("namespace", None)
    api = client.CustomObjectsApi(kube_api)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict")
    got = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc["metadata"]["name"])
    assert got["spec"] == doc["spec"]


def test_the_api_server_accepts_the_crd_with_all_its_rules(kube_api: Any, crds: list[str]) -> None:
    assert CRD_NAME in crds
    raw = client.ApiextensionsV1Api(kube_api).read_custom_resource_definition(
        CRD_NAME, _preload_content=False
    )
    crd = json.loads(raw.data)
    conditions = {c["type"]: c["status"] for c in crd["status"].get("conditions", [])}
    assert conditions["Established"] == "True"
    assert "NonStructuralSchema" not in conditions
    # Every CEL rule of the file is stored: none dropped, none refused for its estimated cost.
    stored = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = (repo_root() / "crds" / f"{GROUP}_{PLURAL}.yaml").read_text()
    local = yaml.safe_load(text)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _rules(stored) == _rules(local)
    assert len(_rules(local)) >= 10


def _rules(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "x-kubernetes-validations":
                found += [rule["rule"] for rule in value]
            else:
                found += _rules(value)
    elif isinstance(node, list):
        for value in node:
            found += _rules(value)
    return sorted(found)


def _explain_block(output: str, field: str) -> str:
    """The description kubectl explain prints under ``field`` (up to the next blank line)."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"^\s+{re.escape(field)}\s+<", line):
            block = []
            for follow in lines[i + 1 :]:
                if not follow.strip():
                    break
                block.append(follow.strip())
            return " ".join(block)
    return ""


def test_kubectl_explain_shows_descriptions_with_defaults(sim_cluster: SimCluster, crds: list[str]) -> None:
    def explain(resource: str) -> str:
        proc = subprocess.run(
            [str(tool_path("kubectl")), "explain", resource],
            env=sim_cluster.kubectl_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        return proc.stdout if proc.returncode == 0 else ""

    # The OpenAPI document of a new CRD is published a moment after it is Established.
    output = wait_for(
        lambda: (out := explain("deepseekdeployment.spec.engine")) and "maxBatchSize" in out and out,
        what="kubectl explain to know spec.engine",
    )
    batch = _explain_block(output, "maxBatchSize")
    assert "Default: 0" in batch, output
    assert "GPU memory" in batch
    assert "Default: 4096" in _explain_block(output, "maxInputTokens")
    assert "Default: max_utilization" in _explain_block(output, "batchSchedulerPolicy")

    gpu = " ".join(explain("deepseekdeployment.spec.gpu.tensorParallel").split())
    assert "power of two" in gpu and "Default: 0" in gpu


def test_the_status_of_the_contract_is_accepted_and_kept_whole(
    kube_api: Any, namespace: str, crds: list[str]
) -> None:
    # The status sub-objects are typed for kubectl explain but keep unknown fields,
    # so a figure the operator adds later is not pruned.
    api = client.CustomObjectsApi(kube_api)
    name = _create(kube_api, namespace, copy.deepcopy(BASE))["metadata"]["name"]
    status = {
        "observedGeneration": 1,
        "phase": "Ready",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Serving",
                "message": "2/2 replicas ready",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 1,
            }
        ],
        "placement": {
            "gpuProduct": "NVIDIA-H100-80GB-HBM3",
            "gpusPerReplica": 1,
            "tensorParallel": 1,
            "pipelineParallel": 1,
            "nodesPerReplica": 1,
            "estimatedGpuMemoryGiB": 21.5,
            "fabric": "nvlink",
            "runtime": "tensorrt-llm",
            "precision": "bf16",
            "maxBatchSize": 64,
            "somethingNew": {"kept": True},
        },
        "revisions": {"stable": "6d4f9c", "canary": "", "failed": ["a1b2c3"]},
        "replicas": 2,
        "readyReplicas": 2,
        "analysis": {
            "p99LatencyMs": 212,
            "errorRate": 0.0,
            "accuracy": 0.96,
            "baselineAccuracy": 0.97,
            "verdict": "Pass",
            "consecutiveFailures": 0,
            "lastRunTime": "2026-01-01T00:00:00Z",
        },
        "endpoints": {"http": "http://r1-qwen-7b.llm.svc:8000", "grpc": "r1-qwen-7b.llm.svc:8001"},
        "lastRollback": {
            "from": "a1b2c3",
            "to": "6d4f9c",
            "reason": "p99 812 ms > 500 ms",
            "time": "2026-01-01T00:00:00Z",
        },
    }
    api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, {"status": status})
    got = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    assert got["status"] == status
    assert got["spec"] == BASE
