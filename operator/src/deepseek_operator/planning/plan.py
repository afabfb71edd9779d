"""The plan a reconcile builds from: runtime, precision, GPUs, parallelism, batch.

This is the stand-in planner: it reads the model size from the spec or the
model id and follows the published minimums. The GPU-aware planner (catalog,
memory estimate, inventory, placement) replaces :func:`plan_deployment`'s body;
the :class:`Plan` it returns keeps this shape.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from deepseek_operator.api.spec import DeploymentSpec

BYTES_PER_PARAM = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4-awq": 0.5}
# MoE + MLA models: only TensorRT-LLM's PyTorch (LLM API) path serves them.
_MOE_RE = re.compile(r"DeepSeek-(V2|V3|R1(?!-Distill)|Coder-V2)", re.IGNORECASE)
_FP8_NATIVE_RE = re.compile(r"DeepSeek-(V3|R1(?!-Distill))", re.IGNORECASE)
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)B\b", re.IGNORECASE)


@dataclass(frozen=True)
class Plan:
    """Decisions about one revision of a deployment, reported in ``status.placement``."""

    runtime: str  # tensorrt-llm (engine path) | pytorch (LLM API path)
    precision: str
    gpu_product: str | None  # None: any GPU
    gpus_per_replica: int
    tensor_parallel: int
    pipeline_parallel: int
    nodes_per_replica: int
    weights_gib: float
    estimated_gpu_memory_gib: float  # per GPU
    max_batch_size: int
    fabric: str
    nccl_env: tuple[tuple[str, str], ...] = ()

    @property
    def world_size(self) -> int:
        """MPI ranks of one replica (TP x PP)."""
        return self.tensor_parallel * self.pipeline_parallel


def _gpu_memory_gib(product: str) -> float:
    from deepseek_operator.sim.gpus import GPU_PRODUCTS  # noqa: PLC0415 - the GFD names and sizes

    for p in GPU_PRODUCTS.values():
        if p.product == product:
            return p.memory_mib / 1024
    return 80.0


def model_parameters_billions(spec: DeploymentSpec) -> float:
    """Total parameters: from the spec, else the known DeepSeek family sizes, else the id's ``NNB``."""
    if spec.model.parameters:
        return spec.model.parameters
    mid = spec.model.id
    if re.search(r"V2-Lite", mid, re.IGNORECASE):
        return 15.7
    if re.search(r"(V3|R1(?!-Distill))", mid, re.IGNORECASE):
        return 671.0
    if re.search(r"V2", mid, re.IGNORECASE):
        return 236.0
    m = _SIZE_RE.search(mid)
    return float(m[1]) if m else 7.0


def plan_deployment(spec: DeploymentSpec) -> Plan:
    """A plan for ``spec`` without looking at the cluster (published minimums, 80 GB GPUs assumed)."""
    runtime = spec.engine.runtime
    if runtime == "auto":
        moe = _MOE_RE.search(spec.model.id) or (
            spec.model.architecture and spec.model.architecture.family == "moe"
        )
        runtime = "pytorch" if moe or spec.model.source.uri else "tensorrt-llm"
    precision = spec.engine.precision
    if precision == "auto":
        precision = "fp8" if _FP8_NATIVE_RE.search(spec.model.id) else "bf16"
    params = model_parameters_billions(spec)
    weights_gib = params * 1e9 * BYTES_PER_PARAM[precision] / 2**30
    gpu_mem_gib = _gpu_memory_gib(spec.gpu.products[0]) if spec.gpu.products else 80.0
    pp = spec.gpu.pipeline_parallel
    tp = spec.gpu.tensor_parallel or (spec.gpu.per_replica // pp if spec.gpu.per_replica else 0)
    if not tp:
        # Smallest power of two whose share of the weights leaves ~30 % for KV cache and activations.
        need = weights_gib / (gpu_mem_gib * 0.7 * pp)
        tp = 1 << max(0, math.ceil(math.log2(max(need, 1.0))))
    gpus = spec.gpu.per_replica or tp * pp
    per_gpu = weights_gib / gpus + 2.0
    # Stand-in rule: half a GiB of KV cache per sequence in the memory the weights leave.
    free = gpu_mem_gib * spec.engine.kv_cache_memory_fraction - per_gpu
    batch = spec.engine.max_batch_size or max(1, min(256, int(free / 0.5)))
    return Plan(
        runtime=runtime,
        precision=precision,
        gpu_product=spec.gpu.products[0] if spec.gpu.products else None,
        gpus_per_replica=gpus,
        tensor_parallel=tp,
        pipeline_parallel=pp,
        nodes_per_replica=1,
        weights_gib=round(weights_gib, 1),
        estimated_gpu_memory_gib=round(min(gpu_mem_gib, per_gpu / spec.engine.kv_cache_memory_fraction), 1),
        max_batch_size=batch,
        fabric="nvlink" if spec.nccl.fabric == "auto" else spec.nccl.fabric,
        nccl_env=spec.nccl.env,
    )
