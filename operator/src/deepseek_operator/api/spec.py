"""Typed model of ``DeepSeekDeployment.spec``: parsed once, defaults applied here, in memory.

The CRD schema (``crds/``) refuses malformed specs at admission; :func:`parse_spec`
checks again what the schema cannot (and what an old CRD might let through) and
raises :class:`SpecError` naming the field and the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deepseek_operator import __version__
from deepseek_operator.errors import SpecError

DEFAULT_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3"
RUNTIMES = ("auto", "tensorrt-llm", "pytorch")
PRECISIONS = ("auto", "bf16", "fp16", "fp8", "int8", "int4-awq")
FABRICS = ("auto", "nvlink", "pcie", "infiniband", "roce", "ethernet", "efa")
BATCH_POLICIES = ("max_utilization", "guaranteed_no_evict")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
CIPHERS = ("sm4-gcm", "aes-256-gcm")
PLAINTEXT_VOLUMES = ("Memory", "NodeDisk")
# The decrypt init container runs the operator's own image (its `decrypt` command). The chart tells
# the operator where that image is ($DSO_DECRYPT_IMAGE, set to the chart's `image`); without it, the
# name `make image` builds (localhost/deepseek-operator at this version).
DEFAULT_DECRYPT_IMAGE = f"localhost/deepseek-operator:{__version__}"
DECRYPT_IMAGE_ENV = "DSO_DECRYPT_IMAGE"


def default_decrypt_image(environ: Mapping[str, str] | None = None) -> str:
    """The decrypt init container's image when the spec names none: the operator's own."""
    env = os.environ if environ is None else environ
    return env.get(DECRYPT_IMAGE_ENV) or DEFAULT_DECRYPT_IMAGE


_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")
_PARAMS_RE = re.compile(r"^(\d+(?:\.\d+)?)([MBT])$")


@dataclass(frozen=True)
class PVCSource:
    claim_name: str
    path: str = ""


@dataclass(frozen=True)
class ModelSource:
    pvc: PVCSource | None = None
    uri: str | None = None
    credentials_secret: str | None = None


@dataclass(frozen=True)
class Architecture:
    """Sizing figures for a model the catalog does not know (all optional)."""

    family: str = "dense"  # dense | moe
    layers: int | None = None
    hidden_size: int | None = None
    attention_heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    vocab_size: int | None = None
    experts: int | None = None
    active_experts: int | None = None
    kv_lora_rank: int | None = None
    native_precision: str = "bf16"


@dataclass(frozen=True)
class ModelSpec:
    id: str
    source: ModelSource
    revision: str = "main"
    architecture: Architecture | None = None
    parameters: float | None = None  # total parameters, in billions


@dataclass(frozen=True)
class EncryptionSpec:
    """spec.model.encryption: the checkpoint on the volume is encrypted (docs/encryption.md)."""

    key_secret: str
    key: str = "key"
    cipher: str = "sm4-gcm"
    plaintext_volume: str = "Memory"  # Memory | NodeDisk
    image: str = DEFAULT_DECRYPT_IMAGE


@dataclass(frozen=True)
class EngineSpec:
    runtime: str = "auto"
    precision: str = "auto"
    max_batch_size: int = 0
    max_input_tokens: int = 4096
    max_output_tokens: int = 1024
    kv_cache_memory_fraction: float = 0.9
    image: str = DEFAULT_IMAGE
    max_queue_delay_microseconds: int = 100
    batch_scheduler_policy: str = "max_utilization"
    enable_kv_cache_reuse: bool = True
    enable_chunked_context: bool = False
    streaming: bool = False
    cache_claim_name: str | None = None


@dataclass(frozen=True)
class GPUSpec:
    products: tuple[str, ...] = ()
    per_replica: int = 0
    tensor_parallel: int = 0
    pipeline_parallel: int = 1
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Any, ...] = ()


QUEUE_SIGNALS = ("pendingRequests", "queueToComputeRatio")
QUEUE_DEFAULT_TARGETS = {"pendingRequests": 4.0, "queueToComputeRatio": 0.5}


@dataclass(frozen=True)
class QueueSignal:
    """spec.autoscaling.queue: Triton's queue as a second HPA signal."""

    signal: str = "pendingRequests"  # one of QUEUE_SIGNALS
    target: float = 1.0


@dataclass(frozen=True)
class AutoscalingSpec:
    min_replicas: int = 1
    max_replicas: int = 4
    target_gpu_utilization: int = 70
    scale_down_stabilization_seconds: int = 300
    scale_up_step: int = 2
    scale_up_period_seconds: int = 180
    queue: QueueSignal | None = None


@dataclass(frozen=True)
class NCCLSpec:
    fabric: str = "auto"
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class GoldenSetRef:
    config_map_name: str
    key: str = "golden.jsonl"


@dataclass(frozen=True)
class AccuracySpec:
    golden_set: GoldenSetRef | None = None
    min_score: float = 0.9
    max_drop: float = 0.05


@dataclass(frozen=True)
class AnalysisSpec:
    interval_seconds: float = 30.0
    failure_limit: int = 3
    max_p99_latency_ms: float = 500.0
    max_error_rate: float = 0.05
    accuracy: AccuracySpec = field(default_factory=AccuracySpec)


@dataclass(frozen=True)
class RolloutSpec:
    canary_replicas: int = 1
    successful_analyses: int = 3
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)
    auto_rollback: bool = True
    standby_replicas: int = 0


@dataclass(frozen=True)
class DeploymentSpec:
    """A parsed, defaulted ``DeepSeekDeployment.spec``."""

    model: ModelSpec
    engine: EngineSpec = field(default_factory=EngineSpec)
    gpu: GPUSpec = field(default_factory=GPUSpec)
    replicas: int = 1
    autoscaling: AutoscalingSpec | None = None
    nccl: NCCLSpec = field(default_factory=NCCLSpec)
    rollout: RolloutSpec = field(default_factory=RolloutSpec)
    service_type: str = "ClusterIP"
    # spec.model.source.packageIndex: where the s3:// / gs:// download installs its client library.
    # Kept out of `model` so that it is not part of the rollout revision (it changes how weights
    # are fetched, not which), and so that adding it moved no existing revision.
    package_index: str | None = None
    # spec.engine.calibrationDataset: a folder on the model volume for quantize.py --calib_dataset.
    # Outside `engine` so that adding it moved no existing revision; revision_hash adds it when set.
    calibration_dataset: str | None = None
    # spec.model.encryption: outside `model` for the same reason; revision_hash adds it when set,
    # so that changing the key Secret (a new key) is a new revision, rolled out as a canary.
    encryption: EncryptionSpec | None = None


def parse_duration(text: str, field_path: str) -> float:
    """Seconds in a duration such as ``30s``, ``2m``, ``1h30m``, ``500ms``."""
    m = _DURATION_RE.match(text.strip()) if text else None
    if not text or m is None or not any(m.groups()):
        raise SpecError(f"{field_path}: {text!r} is not a duration; write e.g. 30s, 2m or 1h30m")
    h, mnt, s, ms = (int(g) if g else 0 for g in m.groups())
    return h * 3600 + mnt * 60 + s + ms / 1000


def parse_parameters(value: Any, field_path: str) -> float:
    """Billions of parameters from ``"7.6B"``, ``"671B"``, ``"1.5T"``, ``"350M"`` or a number of billions."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    m = _PARAMS_RE.match(str(value).strip())
    if m is None:
        raise SpecError(f"{field_path}: {value!r} is not a parameter count; write e.g. 7.6B, 671B or 350M")
    return float(m[1]) * {"M": 1e-3, "B": 1.0, "T": 1e3}[m[2]]


def _obj(d: Any, path: str) -> dict[str, Any]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise SpecError(f"{path}: must be an object")
    return d


def _int(d: dict[str, Any], key: str, path: str, default: int, lo: int, hi: int) -> int:
    value = d.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise SpecError(f"{path}.{key}: {value!r} must be an integer from {lo} to {hi}")
    return value


def _num(d: dict[str, Any], key: str, path: str, default: float, lo: float, hi: float) -> float:
    value = d.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not lo <= value <= hi:
        raise SpecError(f"{path}.{key}: {value!r} must be a number from {lo} to {hi}")
    return float(value)


def _queue_signal(raw: Any, path: str) -> QueueSignal | None:
    if raw is None:
        return None
    q = _obj(raw, path)
    signal = _enum(q, "signal", path, "pendingRequests", QUEUE_SIGNALS)
    target = q.get("target", QUEUE_DEFAULT_TARGETS[signal])
    if isinstance(target, bool) or not isinstance(target, int | float):
        raise SpecError(
            f"{path}.target: must be a number such as 4 (requests waiting per pod) or 0.5 (ratio)"
        )
    if not 0.001 <= float(target) <= 100_000:
        raise SpecError(f"{path}.target: {target} is out of range; give 0.001 to 100000")
    return QueueSignal(signal, float(target))


def _enum(d: dict[str, Any], key: str, path: str, default: str, allowed: tuple[str, ...]) -> str:
    value = d.get(key, default)
    if value not in allowed:
        raise SpecError(f"{path}.{key}: {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _bool(d: dict[str, Any], key: str, path: str, default: bool) -> bool:
    value = d.get(key, default)
    if not isinstance(value, bool):
        raise SpecError(f"{path}.{key}: {value!r} must be true or false")
    return value


def _str_map(d: dict[str, Any], key: str, path: str) -> tuple[tuple[str, str], ...]:
    value = _obj(d.get(key), f"{path}.{key}")
    return tuple(sorted((str(k), str(v)) for k, v in value.items()))


def _calibration(engine: dict[str, Any]) -> str | None:
    raw = engine.get("calibrationDataset") or None
    if raw is None:
        return None
    path = str(raw).strip("/")
    if ".." in path.split("/") or not path:
        raise SpecError(
            f"spec.engine.calibrationDataset: {raw!r} must be a folder inside the model volume, e.g. "
            "calibration/cnn_dailymail (no '..')"
        )
    return path


def _package_index(src: dict[str, Any]) -> str | None:
    index = src.get("packageIndex") or None
    if index is not None and not re.match(r"^https?://.+", str(index)):
        raise SpecError(
            f"spec.model.source.packageIndex: {index!r} must be an http:// or https:// URL of a "
            "PyPI-compatible index, e.g. https://pypi.internal.example/simple"
        )
    return str(index) if index is not None else None


def _parse_encryption(model: dict[str, Any]) -> EncryptionSpec | None:
    p = "spec.model.encryption"
    if model.get("encryption") is None:
        return None
    raw = _obj(model["encryption"], p)
    secret = _obj(raw.get("keySecret"), f"{p}.keySecret")
    name = secret.get("name")
    if not isinstance(name, str) or not _DNS_NAME.match(name):
        raise SpecError(
            f"{p}.keySecret.name: {name!r}: name the Secret holding the weights key (a DNS-1123 name such "
            "as weights-key; make the key with 'deepseek-operator keygen')"
        )
    key = str(secret.get("key") or "key")
    if not re.match(r"^[-._a-zA-Z0-9]+$", key):
        raise SpecError(f"{p}.keySecret.key: {key!r} is not a Secret key; use letters, digits, '-', '_', '.'")
    if _obj(model.get("source"), "spec.model.source").get("pvc") is None:
        raise SpecError(
            f"{p}: needs spec.model.source.pvc: the encrypted checkpoint is read from a volume (encrypt it "
            "with 'deepseek-operator encrypt' onto the PersistentVolumeClaim)"
        )
    return EncryptionSpec(
        key_secret=name,
        key=key,
        cipher=_enum(raw, "cipher", p, "sm4-gcm", CIPHERS),
        plaintext_volume=_enum(raw, "plaintextVolume", p, "Memory", PLAINTEXT_VOLUMES),
        image=str(raw.get("image") or default_decrypt_image()),
    )


def _parse_model(raw: dict[str, Any]) -> ModelSpec:
    p = "spec.model"
    model_id = raw.get("id")
    if not isinstance(model_id, str) or not model_id.strip():
        raise SpecError(f"{p}.id: required; give a model id such as deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    src = _obj(raw.get("source"), f"{p}.source")
    pvc_raw, uri = src.get("pvc"), src.get("uri")
    if (pvc_raw is None) == (uri is None):
        raise SpecError(f"{p}.source: give exactly one of pvc or uri")
    pvc = None
    if pvc_raw is not None:
        pvc_d = _obj(pvc_raw, f"{p}.source.pvc")
        if not pvc_d.get("claimName"):
            raise SpecError(
                f"{p}.source.pvc.claimName: required; name the PersistentVolumeClaim holding the model"
            )
        pvc = PVCSource(str(pvc_d["claimName"]), str(pvc_d.get("path", "")).strip("/"))
    if uri is not None and not re.match(r"^(s3|gs|hf|https)://.+", str(uri)):
        raise SpecError(f"{p}.source.uri: {uri!r} must start with s3://, gs://, hf:// or https://")
    source = ModelSource(
        pvc=pvc,
        uri=str(uri) if uri is not None else None,
        credentials_secret=src.get("credentialsSecret") or None,
    )
    arch = None
    if raw.get("architecture") is not None:
        a = _obj(raw["architecture"], f"{p}.architecture")
        ap = f"{p}.architecture"

        def opt(key: str) -> int | None:
            return _int(a, key, ap, 0, 1, 10_000_000) if key in a else None

        arch = Architecture(
            family=_enum(a, "family", ap, "dense", ("dense", "moe")),
            layers=opt("layers"),
            hidden_size=opt("hiddenSize"),
            attention_heads=opt("attentionHeads"),
            kv_heads=opt("kvHeads"),
            head_dim=opt("headDim"),
            vocab_size=opt("vocabSize"),
            experts=opt("experts"),
            active_experts=opt("activeExperts"),
            kv_lora_rank=opt("kvLoraRank"),
            native_precision=_enum(a, "nativePrecision", ap, "bf16", ("bf16", "fp16", "fp8")),
        )
    params = (
        parse_parameters(raw["parameters"], f"{p}.parameters") if raw.get("parameters") is not None else None
    )
    return ModelSpec(
        id=model_id.strip(),
        source=source,
        revision=str(raw.get("revision") or "main"),
        architecture=arch,
        parameters=params,
    )


def _parse_engine(raw: dict[str, Any], source: ModelSource) -> EngineSpec:
    p = "spec.engine"
    max_in = _int(raw, "maxInputTokens", p, 4096, 1, 1_048_576)
    max_out = _int(raw, "maxOutputTokens", p, 1024, 1, 1_048_576)
    cache = raw.get("cacheClaimName") or None
    return EngineSpec(
        runtime=_enum(raw, "runtime", p, "auto", RUNTIMES),
        precision=_enum(raw, "precision", p, "auto", PRECISIONS),
        max_batch_size=_int(raw, "maxBatchSize", p, 0, 0, 4096),
        max_input_tokens=max_in,
        max_output_tokens=max_out,
        kv_cache_memory_fraction=_num(raw, "kvCacheMemoryFraction", p, 0.9, 0.05, 0.99),
        image=str(raw.get("image") or DEFAULT_IMAGE),
        max_queue_delay_microseconds=_int(raw, "maxQueueDelayMicroseconds", p, 100, 0, 10_000_000),
        batch_scheduler_policy=_enum(raw, "batchSchedulerPolicy", p, "max_utilization", BATCH_POLICIES),
        enable_kv_cache_reuse=_bool(raw, "enableKVCacheReuse", p, True),
        enable_chunked_context=_bool(raw, "enableChunkedContext", p, False),
        streaming=_bool(raw, "streaming", p, False),
        cache_claim_name=str(cache) if cache else None,
    )


def _parse_gpu(raw: dict[str, Any]) -> GPUSpec:
    p = "spec.gpu"
    products = raw.get("products") or []
    if not isinstance(products, list) or not all(isinstance(x, str) and x for x in products):
        raise SpecError(f"{p}.products: must be a list of GPU product names such as NVIDIA-H100-80GB-HBM3")
    tp = _int(raw, "tensorParallel", p, 0, 0, 64)
    pp = _int(raw, "pipelineParallel", p, 1, 1, 16)
    per = _int(raw, "perReplica", p, 0, 0, 64)
    if tp and tp & (tp - 1):
        raise SpecError(f"{p}.tensorParallel: {tp} must be a power of two (1, 2, 4, 8, ...) or 0 to plan it")
    if tp and per and per != tp * pp:
        raise SpecError(
            f"{p}.perReplica: {per} must equal tensorParallel x pipelineParallel = {tp * pp}, or be 0"
        )
    tolerations = raw.get("tolerations") or []
    if not isinstance(tolerations, list):
        raise SpecError(f"{p}.tolerations: must be a list of tolerations")
    return GPUSpec(
        products=tuple(products),
        per_replica=per,
        tensor_parallel=tp,
        pipeline_parallel=pp,
        node_selector=_str_map(raw, "nodeSelector", p),
        tolerations=tuple(tolerations),
    )


def _parse_rollout(raw: dict[str, Any]) -> RolloutSpec:
    p = "spec.rollout"
    canary = _obj(raw.get("canary"), f"{p}.canary")
    analysis = _obj(raw.get("analysis"), f"{p}.analysis")
    ap = f"{p}.analysis"
    acc = _obj(analysis.get("accuracy"), f"{ap}.accuracy")
    golden = None
    if acc.get("goldenSet") is not None:
        g = _obj(acc["goldenSet"], f"{ap}.accuracy.goldenSet")
        if not g.get("configMapName"):
            raise SpecError(f"{ap}.accuracy.goldenSet.configMapName: required; name the golden set ConfigMap")
        golden = GoldenSetRef(str(g["configMapName"]), str(g.get("key") or "golden.jsonl"))
    interval = parse_duration(str(analysis.get("interval", "30s")), f"{ap}.interval")
    if interval < 1:
        raise SpecError(f"{ap}.interval: {analysis.get('interval')!r} is shorter than 1s; use 1s or more")
    max_p99 = _num(analysis, "maxP99LatencyMs", ap, 500.0, 0.0, 3_600_000.0)
    if max_p99 <= 0:
        raise SpecError(f"{ap}.maxP99LatencyMs: must be more than 0")
    return RolloutSpec(
        canary_replicas=_int(canary, "replicas", f"{p}.canary", 1, 1, 1000),
        successful_analyses=_int(canary, "successfulAnalyses", f"{p}.canary", 3, 1, 100),
        analysis=AnalysisSpec(
            interval_seconds=interval,
            failure_limit=_int(analysis, "failureLimit", ap, 3, 1, 100),
            max_p99_latency_ms=max_p99,
            max_error_rate=_num(analysis, "maxErrorRate", ap, 0.05, 0.0, 1.0),
            accuracy=AccuracySpec(
                golden_set=golden,
                min_score=_num(acc, "minScore", f"{ap}.accuracy", 0.9, 0.0, 1.0),
                max_drop=_num(acc, "maxDrop", f"{ap}.accuracy", 0.05, 0.0, 1.0),
            ),
        ),
        auto_rollback=_bool(raw, "autoRollback", p, True),
        standby_replicas=_int(raw, "standbyReplicas", p, 0, 0, 100),
    )


def parse_spec(raw: Any) -> DeploymentSpec:
    """Parse and default a ``DeepSeekDeployment.spec`` dict; :class:`SpecError` names the bad field."""
    spec = _obj(raw, "spec")
    if spec.get("model") is None:
        raise SpecError("spec.model: required; give at least model.id and model.source")
    model = _parse_model(_obj(spec["model"], "spec.model"))
    calibration = _calibration(_obj(spec.get("engine"), "spec.engine"))
    package_index = _package_index(_obj(_obj(spec["model"], "spec.model").get("source"), "spec.model.source"))
    encryption = _parse_encryption(_obj(spec["model"], "spec.model"))
    autoscaling = None
    if spec.get("autoscaling") is not None:
        a = _obj(spec["autoscaling"], "spec.autoscaling")
        p = "spec.autoscaling"
        lo = _int(a, "minReplicas", p, 1, 1, 1000)
        hi = _int(a, "maxReplicas", p, max(lo, 4), 1, 1000)
        if lo > hi:
            raise SpecError(
                f"{p}.minReplicas: {lo} is more than maxReplicas {hi}; make minReplicas <= maxReplicas"
            )
        autoscaling = AutoscalingSpec(
            min_replicas=lo,
            max_replicas=hi,
            target_gpu_utilization=_int(a, "targetGPUUtilization", p, 70, 1, 100),
            scale_down_stabilization_seconds=_int(a, "scaleDownStabilizationSeconds", p, 300, 0, 3600),
            scale_up_step=_int(a, "scaleUpStep", p, 2, 1, 100),
            scale_up_period_seconds=_int(a, "scaleUpPeriodSeconds", p, 180, 1, 1800),
            queue=_queue_signal(a.get("queue"), f"{p}.queue"),
        )
    nccl = _obj(spec.get("nccl"), "spec.nccl")
    nccl_env = _str_map(nccl, "env", "spec.nccl")
    for key, _ in nccl_env:
        if not re.match(r"^(NCCL|FI|UCX)_[A-Z0-9_]+$", key):
            raise SpecError(f"spec.nccl.env: {key!r} is not an NCCL_*, FI_* or UCX_* variable")
    service = _obj(spec.get("service"), "spec.service")
    return DeploymentSpec(
        model=model,
        package_index=package_index,
        calibration_dataset=calibration,
        encryption=encryption,
        engine=_parse_engine(_obj(spec.get("engine"), "spec.engine"), model.source),
        gpu=_parse_gpu(_obj(spec.get("gpu"), "spec.gpu")),
        replicas=_int(spec, "replicas", "spec", 1, 0, 1000),
        autoscaling=autoscaling,
        nccl=NCCLSpec(fabric=_enum(nccl, "fabric", "spec.nccl", "auto", FABRICS), env=nccl_env),
        rollout=_parse_rollout(_obj(spec.get("rollout"), "spec.rollout")),
        service_type=_enum(service, "type", "spec.service", "ClusterIP", SERVICE_TYPES),
    )
