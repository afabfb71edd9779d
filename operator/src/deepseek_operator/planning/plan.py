"""The plan a reconcile builds from: runtime, precision, GPUs, parallelism, batch, NCCL.

:mod:`deepseek_operator.planning.placement` makes it from the catalog, the memory
estimate and the GPU inventory.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepseek_operator.api.spec import DeploymentSpec
from deepseek_operator.errors import SpecError


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
    gpu_products: tuple[str, ...] = ()  # products allowed in required node affinity, preferred first
    extra_resources: tuple[tuple[str, str], ...] = ()  # e.g. EFA interfaces for multi-node replicas
    memory_breakdown: tuple[tuple[str, float], ...] = ()  # GiB per replica: weights, kvCache, ...

    @property
    def world_size(self) -> int:
        """MPI ranks of one replica (TP x PP)."""
        return self.tensor_parallel * self.pipeline_parallel


def choose_runtime(spec: DeploymentSpec) -> str:
    """``spec.engine.runtime``, with ``auto`` resolved: the PyTorch (LLM API) path for MoE/MLA models
    and for checkpoints fetched from a uri, the engine path for dense models on a volume."""
    if spec.engine.runtime != "auto":
        return spec.engine.runtime
    from deepseek_operator import catalog  # noqa: PLC0415 - catalog imports the planning package

    arch = catalog.lookup(spec.model.id)
    family = arch.family if arch else (spec.model.architecture.family if spec.model.architecture else "dense")
    return "pytorch" if family == "moe" or spec.model.source.uri else "tensorrt-llm"


def plan_deployment(spec: DeploymentSpec) -> Plan:
    """A plan for ``spec`` without a cluster: placement on an idealised empty cluster of every catalog
    GPU (8 per node). Raises :class:`SpecError` with the numbers when nothing fits."""
    from deepseek_operator import catalog  # noqa: PLC0415 - placement imports this module
    from deepseek_operator.planning.placement import Refusal, catalog_nodes, plan_placement  # noqa: PLC0415

    result = plan_placement(spec, catalog.arch_from_spec(spec.model), catalog_nodes())
    if isinstance(result, Refusal):
        raise SpecError(f"spec.gpu: {result.message}")
    return result
