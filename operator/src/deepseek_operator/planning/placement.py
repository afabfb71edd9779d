"""Placement (pure): which GPU product, how many GPUs, TP/PP, nodes per replica, NCCL profile.

Inputs are the parsed spec, the model's architecture and the GPU inventory;
the output is a :class:`Plan` or a :class:`Refusal` that says, with numbers, why
nothing fits. Nothing here reads the cluster or a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from deepseek_operator.api.constants import GPU_PRODUCT_LABEL, GPU_RESOURCE
from deepseek_operator.api.spec import DeploymentSpec
from deepseek_operator.errors import SpecError
from deepseek_operator.images import ArchSupport, ImageProfile, profile_for
from deepseek_operator.planning import catalog, nccl, support
from deepseek_operator.planning import gpus as gpu_types
from deepseek_operator.planning.sizing import derive_max_batch, estimate_memory, size_options
from deepseek_operator.planning.types import GPUType, ModelArch, NodeInfo, Plan, SizingOption, SizingRequest

DEFAULT_GPUS_PER_NODE = 8
# Without a cluster (the planning CLI), these are the GPUs options are shown for.
CATALOG_GPUS = (
    "NVIDIA-H100-80GB-HBM3",
    "NVIDIA-H200",
    "NVIDIA-A100-SXM4-40GB",
    "NVIDIA-A100-SXM4-80GB",
    "NVIDIA-L40S",
    "NVIDIA-GeForce-RTX-4090",
)


@dataclass(frozen=True)
class Refusal:
    """Why a spec cannot be placed, with the figures a user needs to act."""

    reason: str  # condition reason: NoGPUFits | NoCapacity | NoGPUNodes | UnsupportedGPU | UnsupportedModel
    message: str


@dataclass(frozen=True)
class Candidate:
    """One GPU product the cluster has, the best option on it and where it could go."""

    gpu: GPUType
    option: SizingOption | None  # best fitting option, None when none fits
    best_unfit: SizingOption | None  # the closest option that does not fit (for the message)
    nodes: tuple[NodeInfo, ...]  # usable nodes of this product
    placeable: bool  # enough free GPUs for one replica
    error: str = ""  # why this product cannot run the spec at all (e.g. FP8 on an A100)
    too_old: bool = False  # the error is the GPU generation the image's runtime path needs


def sizing_request(spec: DeploymentSpec, precisions: tuple[str, ...] = ()) -> SizingRequest:
    """What the spec asks of sizing; ``precisions``: what the runtime path can load (empty: any)."""
    e, g = spec.engine, spec.gpu
    return SizingRequest(
        precisions=precisions,
        precision=e.precision,
        max_batch_size=e.max_batch_size,
        max_input_tokens=e.max_input_tokens,
        max_output_tokens=e.max_output_tokens,
        kv_cache_memory_fraction=e.kv_cache_memory_fraction,
        tensor_parallel=g.tensor_parallel,
        pipeline_parallel=g.pipeline_parallel,
        per_replica=g.per_replica,
    )


def _usable(node: NodeInfo, spec: DeploymentSpec) -> bool:
    if not node.schedulable or not node.gpu_product:
        return False
    labels = dict(node.labels)
    return all(labels.get(k) == v for k, v in spec.gpu.node_selector)


def _fits_on_nodes(option: SizingOption, nodes: tuple[NodeInfo, ...]) -> bool:
    """Enough free GPUs for one replica: one node for a single-node replica, else N nodes with a share."""
    per_node = option.gpus_per_replica // option.nodes_per_replica
    usable = [n for n in nodes if n.gpus_allocatable >= per_node]
    if option.gpus_per_replica > 1:
        usable = [n for n in usable if n.sharing == "none"]  # never a TP/PP engine on shared GPUs
    return sum(1 for n in usable if n.gpus_free >= per_node) >= option.nodes_per_replica


@dataclass(frozen=True)
class RuntimePath:
    """The runtime path a spec takes in its image, and what that path can load."""

    runtime: str
    profile: ImageProfile
    support: ArchSupport | None
    precisions: tuple[str, ...]


def _candidate(
    arch: ModelArch, spec: DeploymentSpec, product: str, nodes: list[NodeInfo], path: RuntimePath
) -> Candidate:
    mine = tuple(n for n in nodes if n.gpu_product == product and _usable(n, spec))
    first = mine[0] if mine else None
    gpu = gpu_types.gpu_type(
        product,
        memory_mib=first.gpu_memory_mib if first else 0,
        compute_major=first.compute_major if first else 0,
        compute_minor=first.compute_minor if first else 0,
        family=first.family if first else "",
    )
    if problem := support.gpu_problem(arch, path.support, gpu, path.runtime, path.profile):
        return Candidate(gpu, None, None, mine, False, error=problem, too_old=True)
    per_node = max((n.gpus_allocatable for n in mine), default=DEFAULT_GPUS_PER_NODE)
    try:
        options = size_options(arch, gpu, sizing_request(spec, path.precisions), gpus_per_node=per_node)
    except SpecError as e:
        return Candidate(gpu, None, None, mine, False, error=f"{gpu.product}: {e}")
    fitting = [o for o in options if o.fits]
    unfit = next((o for o in options if not o.fits), None)
    for option in fitting:
        if _fits_on_nodes(option, mine):
            return Candidate(gpu, option, unfit, mine, True)
    return Candidate(gpu, fitting[0] if fitting else None, unfit, mine, False)


def _products(spec: DeploymentSpec, nodes: list[NodeInfo]) -> list[str]:
    present = sorted({n.gpu_product for n in nodes if n.gpu_product})
    if spec.gpu.products:
        return list(spec.gpu.products)
    return present


def _free_summary(nodes: list[NodeInfo]) -> str:
    if not nodes:
        return "no GPU nodes"
    return ", ".join(f"{n.name} {n.gpus_free}/{n.gpus_allocatable} free ({n.gpu_product})" for n in nodes)


def plan_placement(
    spec: DeploymentSpec, arch: ModelArch, nodes: list[NodeInfo], previous_product: str | None = None
) -> Plan | Refusal:
    """Choose where ``spec`` runs on the cluster described by ``nodes``.

    The product is the first of ``spec.gpu.products`` (in order) that fits and has free
    GPUs for a replica; with no products given, the one needing the fewest GPUs (then the
    most memory). ``previous_product`` (the one serving now) is kept while it still works,
    so that capacity used by others does not move a running deployment.
    """
    products = _products(spec, nodes)
    if not products:
        return Refusal("NoGPUNodes", f"the cluster has no nodes with {GPU_RESOURCE}; add GPU nodes")
    try:
        path = runtime_path(spec, arch)
    except SpecError as e:
        return Refusal("UnsupportedModel", str(e))
    candidates = [_candidate(arch, spec, p, nodes, path) for p in products]
    placeable = [c for c in candidates if c.placeable and c.option is not None]
    if not spec.gpu.products:
        placeable.sort(key=lambda c: (c.option.gpus_per_replica if c.option else 99, -c.gpu.memory_gib))
    if previous_product:
        placeable.sort(key=lambda c: c.gpu.product != previous_product)
    if placeable:
        chosen = placeable[0]
        assert chosen.option is not None
        return _plan(
            spec,
            arch,
            path,
            chosen,
            [
                c
                for c in placeable
                if c.option and c.option.gpus_per_replica == chosen.option.gpus_per_replica
            ],
        )
    if candidates and all(c.too_old for c in candidates):
        return _too_old(spec, arch, candidates, path)
    return _refusal(spec, arch, candidates, nodes)


def runtime_path(spec: DeploymentSpec, arch: ModelArch) -> RuntimePath:
    """The runtime path ``spec`` takes in its image's profile and what it can load there; raises
    :class:`SpecError` (naming the field) when the image cannot load the model that way."""
    profile = profile_for(spec.engine.image).profile
    runtime = support.choose_runtime(spec, arch, profile)
    arch_support = profile.support(runtime, arch.hf_architecture) if arch.hf_architecture else None
    precisions = support.allowed_precisions(arch, arch_support, spec.engine.precision, runtime, profile)
    return RuntimePath(runtime, profile, arch_support, precisions)


def _too_old(
    spec: DeploymentSpec, arch: ModelArch, candidates: list[Candidate], path: RuntimePath
) -> Refusal:
    s = path.support
    assert s is not None
    allowed = ", ".join(f"{c.gpu.product} ({c.gpu.family})" for c in candidates)
    return Refusal(
        "UnsupportedGPU",
        f"{arch.id} needs {s.generation} on the {path.runtime} path of {path.profile.label}; allowed "
        f"products are {allowed}: add one of {s.gpus or 'a newer GPU'} to spec.gpu.products, or pick a "
        "model these GPUs can run (e.g. a DeepSeek-R1 distill). "
        f"Source: {s.source}",
    )


def _refusal(
    spec: DeploymentSpec, arch: ModelArch, candidates: list[Candidate], nodes: list[NodeInfo]
) -> Refusal:
    fitting = [c for c in candidates if c.option is not None]
    allowed = ", ".join(spec.gpu.products) if spec.gpu.products else "any GPU in the cluster"
    if not fitting:
        closest = min(
            (c for c in candidates if c.best_unfit),
            default=None,
            key=lambda c: c.best_unfit.memory.per_gpu_gib - c.gpu.memory_gib if c.best_unfit else 0,
        )
        best = max(candidates, key=lambda c: c.gpu.memory_gib)
        need = f"; {closest.best_unfit.reason}" if closest and closest.best_unfit else ""
        need += "".join(f"; {c.error}" for c in candidates if c.error)
        return Refusal(
            "NoGPUFits",
            f"{arch.id} does not fit on {allowed}{need}; best available GPU: {best.gpu.product} with "
            f"{best.gpu.memory_gib:.1f} GiB; free GPUs: {_free_summary(nodes)}. Allow a larger GPU in "
            "spec.gpu.products, a smaller spec.engine.precision, or fewer tokens.",
        )
    c = fitting[0]
    assert c.option is not None
    o = c.option
    per_node = o.gpus_per_replica // o.nodes_per_replica
    where = (
        f"{o.nodes_per_replica} nodes with {per_node} free GPUs each"
        if o.nodes_per_replica > 1
        else f"a node with {o.gpus_per_replica} free GPUs"
    )
    allowed_products = {x.gpu.product for x in candidates}
    free = _free_summary([n for n in nodes if n.gpu_product in allowed_products])
    return Refusal(
        "NoCapacity",
        f"{arch.id} at {o.precision} needs {o.gpus_per_replica} x {c.gpu.product} per replica "
        f"(TP {o.tensor_parallel} x PP {o.pipeline_parallel}, {o.memory.per_gpu_gib:.1f} GiB per GPU) "
        f"on {where}; free GPUs: {free}. "
        "Free GPUs, add nodes, or allow another product in spec.gpu.products.",
    )


def expert_parallel_layout(
    spec: DeploymentSpec, arch: ModelArch, option: SizingOption, runtime: str
) -> SizingOption:
    """The layout TensorRT-LLM's DeepSeek-V3 recipe runs a multi-node MoE replica with: tensor
    parallelism over every GPU of the replica with as many expert-parallel ranks, no pipeline
    (examples/models/core/deepseek_v3/README.md, multi-node: ``mpirun -H host1:8,host2:8 -n 16
    ... --tp 16 --ep 16``), instead of sizing's TP-in-a-node x PP-across-nodes. The batch is sized
    again for it (the MLA latent cache is whole on every rank); when not even the spec's batch
    fits that way, sizing's option stays."""
    if runtime != "pytorch" or option.nodes_per_replica < 2 or arch.experts == 0:
        return option
    world = option.gpus_per_replica
    if arch.attention_heads % world:
        return option
    e = spec.engine
    capacity = derive_max_batch(
        arch,
        option.gpu,
        option.precision,
        world,
        1,
        e.max_input_tokens,
        e.max_output_tokens,
        e.kv_cache_memory_fraction,
    )
    batch = e.max_batch_size or capacity
    if capacity < 1 or batch > capacity:
        return option
    memory = estimate_memory(arch, option.precision, world, 1, batch, e.max_input_tokens, e.max_output_tokens)
    seq = e.max_input_tokens + e.max_output_tokens
    reason = (
        f"fits: {memory.per_gpu_gib:.1f} GiB per GPU of {option.gpu.memory_gib:.1f} GiB on "
        f"{option.gpu.product} as TP {world} x EP {world} over {option.nodes_per_replica} nodes "
        f"(TensorRT-LLM's multi-node DeepSeek recipe) for {batch} sequences of {seq} tokens"
    )
    return replace(
        option, tensor_parallel=world, pipeline_parallel=1, max_batch_size=batch, memory=memory, reason=reason
    )


def _plan(
    spec: DeploymentSpec, arch: ModelArch, path: RuntimePath, chosen: Candidate, same_shape: list[Candidate]
) -> Plan:
    assert chosen.option is not None
    runtime = path.runtime
    o = expert_parallel_layout(spec, arch, chosen.option, runtime)
    fabric = spec.nccl.fabric
    if fabric == "auto":
        fabric = nccl.detect_fabric(list(chosen.nodes), o.nodes_per_replica)
    profile = nccl.nccl_profile(
        fabric,
        spec.nccl.env,
        list(chosen.nodes),
        allocatable=[dict(n.extended_resources) for n in chosen.nodes],
    )
    # The engine path's engine is tied to one GPU type; the PyTorch path may run on any product
    # on which the same parallelism fits, in the order of preference.
    products = (
        (chosen.gpu.product,) if runtime == "tensorrt-llm" else tuple(c.gpu.product for c in same_shape)
    )
    m = o.memory
    return Plan(
        runtime=runtime,
        precision=o.precision,
        gpu_product=chosen.gpu.product,
        gpus_per_replica=o.gpus_per_replica,
        tensor_parallel=o.tensor_parallel,
        pipeline_parallel=o.pipeline_parallel,
        nodes_per_replica=o.nodes_per_replica,
        weights_gib=round(m.weights_gib, 1),
        estimated_gpu_memory_gib=round(m.per_gpu_gib, 1),
        max_batch_size=o.max_batch_size,
        expert_parallel=o.tensor_parallel if o is not chosen.option else 1,
        fabric=profile.fabric,
        nccl_env=profile.env,
        gpu_products=products,
        extra_resources=profile.extra_resources,
        memory_breakdown=(
            ("weights", round(m.weights_gib, 1)),
            ("kvCache", round(m.kv_cache_gib, 1)),
            ("activations", round(m.activations_gib, 1)),
            ("overhead", round(m.overhead_gib, 1)),
        ),
    )


def catalog_nodes(
    products: tuple[str, ...] = CATALOG_GPUS,
    gpus_per_node: int = DEFAULT_GPUS_PER_NODE,
    nodes_per_product: int = 2,
) -> list[NodeInfo]:
    """An idealised empty cluster (every product, free nodes) for planning from the catalog alone."""
    out = []
    for product in products:
        t = gpu_types.gpu_type(product)
        for i in range(nodes_per_product):
            out.append(
                NodeInfo(
                    name=f"{product.lower()}-{i}",
                    gpu_product=product,
                    gpu_memory_mib=int(t.memory_gib * 1024),
                    gpus_allocatable=gpus_per_node,
                    gpus_requested=0,
                    compute_major=t.compute_major,
                    compute_minor=t.compute_minor,
                    family=t.family,
                    fabric_hints=nccl.fabric_hints({GPU_PRODUCT_LABEL: product}, {}),
                )
            )
    return out


def plan_deployment(spec: DeploymentSpec) -> Plan:
    """A plan for ``spec`` without a cluster: placement on an idealised empty cluster of every catalog
    GPU (8 per node). Raises :class:`SpecError` with the numbers when nothing fits."""
    result = plan_placement(spec, catalog.arch_from_spec(spec.model), catalog_nodes())
    if isinstance(result, Refusal):
        raise SpecError(f"spec.gpu: {result.message}")
    return result
