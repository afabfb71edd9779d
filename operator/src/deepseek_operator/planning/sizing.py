"""Memory estimate and sizing (pure): what one replica of a model needs on one GPU type.

Per GPU, for the busiest GPU of a replica of TP x PP ranks::

    weights      sum of the stage's weight groups x bytes per parameter / how TP splits them
    activations  max_num_tokens x bytes per token of the forward pass's live buffers (+ MoE routing, logits)
    overhead     CUDA context, cuBLAS workspaces, runtime buffers, CUDA graphs (+ NCCL when TP x PP > 1)
    KV cache     batch x (max_input + max_output) x KV bytes per token on that GPU

The KV cache gets ``kv_cache_memory_fraction`` of what the first three leave of the
usable memory, as TensorRT-LLM's ``kv_cache_free_gpu_mem_fraction`` does. docs/sizing.md
derives every constant and lists the results for the catalog.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deepseek_operator.errors import SpecError
from deepseek_operator.planning.catalog import (
    Component,
    embedding_components,
    head_components,
    is_mla,
    is_moe_layer,
    layer_components,
)
from deepseek_operator.planning.gpus import supports_bf16
from deepseek_operator.planning.types import GPUType, MemoryEstimate, ModelArch, SizingOption, SizingRequest

GIB = 1024**3

# Bytes per weight of the groups quantization touches. INT4 AWQ stores one FP16 scale
# per group of 128 weights (TensorRT-LLM's int4_awq default group size): 0.5 + 2/128.
# FP8 and INT8 scales (per tensor, per channel, or per 128x128 block for DeepSeek's
# checkpoints: 4 bytes per 16384 weights) are below 0.03 % and left out.
BYTES_PER_PARAM: dict[str, float] = {
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4-awq": 0.5 + 2 / 128,
}
# Embeddings, output head, norms and router gates stay in 16 bits whatever the precision
# (TensorRT-LLM's quantize.py and DeepSeek's FP8 checkpoints both leave them out).
UNQUANTIZED_BYTES = 2.0

MAX_AUTO_BATCH = 256  # the most sequences a derived batch goes to
# With the batch left to the operator, a replica must hold at least this many
# full-length sequences: below it the GPUs hold little but weights, and in-flight
# batching has nothing to batch. It is what makes the published minimums come out
# (32B BF16 on one 80 GB GPU holds ~10 sequences of 5120 tokens: TP 2 is the minimum).
MIN_AUTO_BATCH = 16
DEFAULT_MAX_NUM_TOKENS = 8192  # TensorRT-LLM's default max_num_tokens
OVERHEAD_GIB = 2.0  # CUDA context (~0.5), cuBLAS/cuBLASLt workspaces, runtime buffers, CUDA graphs
COMM_OVERHEAD_GIB = 1.0  # NCCL communicators and TensorRT-LLM's all-reduce workspace, when TP x PP > 1
RESERVE_FRACTION = 0.02  # of GPU memory kept free: driver, fragmentation
RESERVE_MIN_GIB = 0.5
MAX_PIPELINE_PARALLEL = 16  # spec.gpu.pipelineParallel's maximum
MAX_GPUS_PER_REPLICA = 64  # spec.gpu.perReplica's maximum
DSA_INDEX_SCALE_BYTES = 4  # V3.2's indexer caches FP8 keys with one FP32 scale per token and layer


def kv_bytes_per_token(arch: ModelArch, kv_bytes: int = 2) -> int:
    """KV cache bytes one token takes in the whole model (no TP replication counted).

    GQA: 2 x layers x KV heads x head dim x bytes. MLA: layers x (kv_lora_rank +
    qk_rope_head_dim) x bytes (V3: 61 x 576 x 2 = 70,272); V3.2 adds its indexer's FP8
    key and scale per layer.
    """
    if is_mla(arch):
        latent = arch.layers * (arch.kv_lora_rank + arch.qk_rope_head_dim) * kv_bytes
        index = arch.layers * (arch.index_head_dim + DSA_INDEX_SCALE_BYTES) if arch.index_head_dim else 0
        return latent + index
    return 2 * arch.layers * arch.kv_heads * arch.head_dim * kv_bytes


def usable_memory_gib(gpu: GPUType) -> float:
    """GPU memory a replica may plan with: the total less a small reserve."""
    return gpu.memory_gib - max(RESERVE_MIN_GIB, RESERVE_FRACTION * gpu.memory_gib)


def overhead_gib(world_size: int) -> float:
    """Per-GPU memory that is neither weights, activations nor KV cache."""
    return OVERHEAD_GIB + (COMM_OVERHEAD_GIB if world_size > 1 else 0.0)


@dataclass(frozen=True)
class _Stage:
    """One pipeline stage, as one of its TP ranks holds it."""

    layers: int
    weight_bytes: float
    kv_bytes_per_token: float


def _divisor(c: Component, arch: ModelArch, tp: int) -> float:
    if c.shard == "tp":
        return tp
    if c.shard == "kv":
        return arch.kv_heads / math.ceil(arch.kv_heads / tp)
    return 1.0


def _bytes(components: list[Component], arch: ModelArch, precision: str, tp: int) -> float:
    per = BYTES_PER_PARAM[precision]
    return sum(
        c.params * (per if c.quantizable else UNQUANTIZED_BYTES) / _divisor(c, arch, tp) for c in components
    )


def _kv_per_layer_per_gpu(arch: ModelArch, tp: int, kv_bytes: int) -> float:
    if is_mla(arch):
        # Every TP rank reads the whole latent, so each keeps all of it.
        index = arch.index_head_dim + DSA_INDEX_SCALE_BYTES if arch.index_head_dim else 0
        return (arch.kv_lora_rank + arch.qk_rope_head_dim) * kv_bytes + index
    return 2 * math.ceil(arch.kv_heads / tp) * arch.head_dim * kv_bytes


def _stages(arch: ModelArch, precision: str, tp: int, pp: int, kv_bytes: int) -> list[_Stage]:
    """Contiguous layer ranges, earlier stages taking the remainder, as TensorRT-LLM splits them."""
    stages = []
    start = 0
    kv_layer = _kv_per_layer_per_gpu(arch, tp, kv_bytes)
    for s in range(pp):
        n = arch.layers // pp + (1 if s < arch.layers % pp else 0)
        comps: list[Component] = []
        for layer in range(start, start + n):
            comps += layer_components(arch, layer)
        if s == 0:
            comps += embedding_components(arch)
        if s == pp - 1:
            comps += head_components(arch)
        stages.append(_Stage(n, _bytes(comps, arch, precision, tp), n * kv_layer))
        start += n
    return stages


def max_num_tokens(max_input_tokens: int) -> int:
    """Tokens one forward pass may carry: TensorRT-LLM's default 8192, or a whole prompt if longer
    (without chunked context a prompt is one pass)."""
    return max(DEFAULT_MAX_NUM_TOKENS, max_input_tokens)


def activation_bytes(arch: ModelArch, tensor_parallel: int, max_input_tokens: int) -> float:
    """Peak activation memory of one GPU during a forward pass of ``max_num_tokens`` tokens.

    Buffers are reused from layer to layer, so the peak is one layer's: per token, in
    16 bits, the residual stream and its normed copy plus the attention output and a
    temporary (4 x hidden, whole on every rank after the all-reduce), the attention
    projections' outputs (this rank's heads; MLA counts q, the full keys, the decompressed
    k_nope and v, and the replicated latents; docs/sizing-measured.md), and the
    MLP's gate, up and activated outputs (3 x width / TP; for MoE the routed top-k plus
    shared experts). MoE adds its routing buffers: tokens permuted to their top-k
    experts and back (2 x top-k x hidden) and FP32 router logits. Last, FP32 logits of
    the largest batch for sampling.
    """
    tp = tensor_parallel
    t = max_num_tokens(max_input_tokens)
    h = arch.hidden_size
    if is_mla(arch):
        qk = arch.qk_nope_head_dim + arch.qk_rope_head_dim
        # q, the full keys (nope + rope, materialised beside kv_b_proj's output), k_nope and v per head
        attn = arch.attention_heads * (2 * qk + arch.qk_nope_head_dim + arch.v_head_dim) / tp
        attn += (
            arch.q_lora_rank
            + arch.kv_lora_rank
            + arch.qk_rope_head_dim
            + arch.index_n_heads * arch.index_head_dim
        )
    else:
        attn = (arch.attention_heads / tp + 2 * math.ceil(arch.kv_heads / tp)) * arch.head_dim
    widths = []
    if any(not is_moe_layer(arch, i) for i in range(arch.layers)):
        widths.append(arch.intermediate_size)
    moe = arch.family == "moe" and arch.experts > 0
    if moe:
        widths.append(arch.moe_intermediate_size * (arch.active_experts + arch.shared_experts))
    per_token = 2.0 * (4 * h + attn + 3 * max(widths) / tp)
    if moe:
        per_token += 2 * arch.active_experts * h * 2.0 + arch.experts * 4.0
    logits = MAX_AUTO_BATCH * arch.vocab_size / tp * 4.0
    return t * per_token + logits


@dataclass(frozen=True)
class _Breakdown:
    """The estimate and the busiest GPU's parts, in GiB."""

    estimate: MemoryEstimate
    weights: float
    kv: float
    activations: float
    overhead: float


def _estimate(
    arch: ModelArch, precision: str, tp: int, pp: int, batch: int, seq: int, max_input: int, kv_bytes: int
) -> _Breakdown:
    stages = _stages(arch, precision, tp, pp, kv_bytes)
    act = activation_bytes(arch, tp, max_input) / GIB
    ovh = overhead_gib(tp * pp)
    busiest = max(stages, key=lambda s: s.weight_bytes + batch * seq * s.kv_bytes_per_token)
    w = busiest.weight_bytes / GIB
    kv = batch * seq * busiest.kv_bytes_per_token / GIB
    replica_kv_per_token = tp * sum(s.kv_bytes_per_token for s in stages)
    est = MemoryEstimate(
        weights_gib=tp * sum(s.weight_bytes for s in stages) / GIB,
        kv_cache_gib=batch * seq * replica_kv_per_token / GIB,
        activations_gib=act * tp * pp,
        overhead_gib=ovh * tp * pp,
        per_gpu_gib=w + kv + act + ovh,
        kv_bytes_per_token=int(replica_kv_per_token),
    )
    return _Breakdown(est, w, kv, act, ovh)


def estimate_memory(
    arch: ModelArch,
    precision: str,
    tensor_parallel: int,
    pipeline_parallel: int,
    max_batch_size: int,
    max_input_tokens: int,
    max_output_tokens: int,
    kv_bytes: int = 2,
) -> MemoryEstimate:
    """GPU memory of one replica serving ``max_batch_size`` sequences of input + output tokens.

    Replica totals are sums over its GPUs (what is allocated: MLA's latent cache and the
    replicated projections count once per TP rank); ``per_gpu_gib`` is the busiest GPU's.
    ``kv_bytes`` is the KV cache's element size (2: BF16/FP16, the default for every
    precision here).
    """
    _check_precision(precision)
    seq = max_input_tokens + max_output_tokens
    return _estimate(
        arch, precision, tensor_parallel, pipeline_parallel, max_batch_size, seq, max_input_tokens, kv_bytes
    ).estimate


def _capacity(
    arch: ModelArch,
    gpu: GPUType,
    precision: str,
    tp: int,
    pp: int,
    seq: int,
    max_input: int,
    fraction: float,
    kv_bytes: int,
) -> int:
    """Full-length sequences the KV pool holds (uncapped); 0 when not even one does."""
    act = activation_bytes(arch, tp, max_input)
    ovh = overhead_gib(tp * pp) * GIB
    usable = usable_memory_gib(gpu) * GIB
    n = math.inf
    for s in _stages(arch, precision, tp, pp, kv_bytes):
        free = usable - s.weight_bytes - act - ovh
        if free <= 0:
            return 0
        if s.kv_bytes_per_token > 0:
            n = min(n, math.floor(fraction * free / (seq * s.kv_bytes_per_token)))
    return int(min(n, 1_000_000))


def derive_max_batch(
    arch: ModelArch,
    gpu: GPUType,
    precision: str,
    tensor_parallel: int,
    pipeline_parallel: int,
    max_input_tokens: int,
    max_output_tokens: int,
    kv_cache_memory_fraction: float = 0.9,
    kv_bytes: int = 2,
) -> int:
    """The largest batch whose KV cache at full length fits, capped at 256; 0 if not even one sequence fits.

    Full length is max_input + max_output tokens per sequence; the KV cache may use
    ``kv_cache_memory_fraction`` of what weights, activations and overhead leave of the
    usable memory, on every pipeline stage.
    """
    _check_precision(precision)
    seq = max_input_tokens + max_output_tokens
    n = _capacity(
        arch,
        gpu,
        precision,
        tensor_parallel,
        pipeline_parallel,
        seq,
        max_input_tokens,
        kv_cache_memory_fraction,
        kv_bytes,
    )
    return min(n, MAX_AUTO_BATCH)


def _check_precision(precision: str) -> None:
    if precision not in BYTES_PER_PARAM:
        raise SpecError(
            f"spec.engine.precision: {precision!r} is not one of auto, {', '.join(BYTES_PER_PARAM)}"
        )


def choose_precision(
    arch: ModelArch, requested: str, gpu: GPUType, allowed: tuple[str, ...] = ()
) -> list[str]:
    """The precisions to try, in order of preference.

    An explicit precision is the only one, and :class:`SpecError` (naming
    ``spec.engine.precision``) when the GPU cannot run it: FP8 needs compute capability
    8.9 (not A100), BF16 needs 8.0. ``auto``: the native precision first, then smaller
    ones the GPU runs: bf16 -> fp8 -> int4-awq, fp8 -> int4-awq; without FP8 (A100)
    bf16 -> int8 -> int4-awq, and an FP8-native model runs bf16 -> int4-awq. ``allowed`` (what
    the runtime path of the image can load, from its profile) keeps only those; none left is a
    :class:`SpecError` for this GPU.
    """
    order = _preferred_precisions(arch, requested, gpu)
    if not allowed:
        return order
    kept = [p for p in order if p in allowed]
    if not kept:
        raise SpecError(
            f"spec.engine.precision: the runtime path loads {arch.id} only in {', '.join(allowed)}, which "
            f"{gpu.product} (compute capability {gpu.compute_major}.{gpu.compute_minor}) cannot run"
        )
    return kept


def _preferred_precisions(arch: ModelArch, requested: str, gpu: GPUType) -> list[str]:
    if requested != "auto":
        _check_precision(requested)
        if requested == "fp8" and not gpu.supports_fp8:
            raise SpecError(
                "spec.engine.precision: fp8 needs FP8 tensor cores (compute capability 8.9 or newer: Ada, "
                f"Hopper, Blackwell); {gpu.product} has {gpu.compute_major}.{gpu.compute_minor}. Use bf16, "
                "int8 or int4-awq on it, or allow an H100, H200, B200 or L40S in spec.gpu.products"
            )
        if requested == "bf16" and not supports_bf16(gpu):
            raise SpecError(
                f"spec.engine.precision: bf16 needs compute capability 8.0 or newer; {gpu.product} has "
                f"{gpu.compute_major}.{gpu.compute_minor}. Use fp16 on it"
            )
        return [requested]
    half = "bf16" if supports_bf16(gpu) else "fp16"
    if arch.native_precision == "fp8":
        return ["fp8", "int4-awq"] if gpu.supports_fp8 else [half, "int4-awq"]
    native = half if arch.native_precision == "bf16" else arch.native_precision
    return [native, "fp8", "int4-awq"] if gpu.supports_fp8 else [native, "int8", "int4-awq"]


def _tp_choices(arch: ModelArch, gpus_per_node: int) -> list[int]:
    out = []
    tp = 1
    while tp <= gpus_per_node:
        if arch.attention_heads % tp == 0:
            out.append(tp)
        tp *= 2
    return out or [1]


def _layout_problem(arch: ModelArch, tp: int, pp: int, gpus_per_node: int) -> str | None:
    if tp < 1 or tp & (tp - 1):
        return f"TP {tp} is not a power of two"
    if tp > gpus_per_node:
        return f"TP {tp} is more than the {gpus_per_node} GPUs of a node (tensor parallelism stays in a node)"
    if arch.attention_heads % tp:
        return f"TP {tp} does not divide the {arch.attention_heads} attention heads of {arch.id}"
    if pp > arch.layers:
        return f"PP {pp} is more than the {arch.layers} layers of {arch.id}"
    return None


def _option(
    arch: ModelArch,
    gpu: GPUType,
    req: SizingRequest,
    precision: str,
    tp: int,
    pp: int,
    gpus_per_node: int,
    problem: str | None = None,
) -> SizingOption:
    seq = req.max_input_tokens + req.max_output_tokens
    capacity = _capacity(
        arch, gpu, precision, tp, pp, seq, req.max_input_tokens, req.kv_cache_memory_fraction, 2
    )
    explicit = req.max_batch_size > 0
    batch = req.max_batch_size if explicit else min(capacity, MAX_AUTO_BATCH)
    b = _estimate(arch, precision, tp, pp, max(batch, 1), seq, req.max_input_tokens, 2)
    usable = usable_memory_gib(gpu)
    have = f"{gpu.product} has {gpu.memory_gib:.1f} GiB ({usable:.1f} usable)"
    parts = (
        f"weights {b.weights:.1f}, KV cache {b.kv:.1f}, activations {b.activations:.1f}, "
        f"overhead {b.overhead:.1f}"
    )
    fits = False
    if problem:
        reason = problem
    elif capacity == 0:
        reason = (
            f"needs {b.estimate.per_gpu_gib:.1f} GiB per GPU for one sequence of {seq} tokens, {have} "
            f"({parts})"
        )
    elif explicit and batch > capacity:
        reason = (
            f"batch {batch} of {seq}-token sequences needs {b.estimate.per_gpu_gib:.1f} GiB per GPU, {have}; "
            f"at most {capacity} fit ({parts})"
        )
    elif not explicit and capacity < MIN_AUTO_BATCH:
        reason = (
            f"room for only {capacity} sequences of {seq} tokens (KV cache {b.kv:.1f} GiB per GPU after "
            f"weights {b.weights:.1f} GiB); at least {MIN_AUTO_BATCH} wanted: use more GPUs, a smaller "
            "precision or fewer tokens, or set spec.engine.maxBatchSize"
        )
    else:
        fits = True
        reason = (
            f"fits: {b.estimate.per_gpu_gib:.1f} GiB per GPU of {gpu.memory_gib:.1f} GiB on {gpu.product} "
            f"for {batch} sequences of {seq} tokens ({parts})"
        )
    return SizingOption(
        gpu=gpu,
        precision=precision,
        tensor_parallel=tp,
        pipeline_parallel=pp,
        gpus_per_replica=tp * pp,
        nodes_per_replica=math.ceil(tp * pp / gpus_per_node),
        max_batch_size=max(batch, 0),
        memory=b.estimate,
        fits=fits,
        reason=reason,
    )


def _layouts(arch: ModelArch, req: SizingRequest, gpus_per_node: int) -> list[tuple[int, int]] | None:
    """The (TP, PP) pairs the request pins down, or None when sizing decides."""
    tp, pp, per = req.tensor_parallel, max(1, req.pipeline_parallel), req.per_replica
    if tp:
        return [(tp, pp)]
    if per:
        if pp > 1:
            return [(per // pp, pp)] if per % pp == 0 else [(max(1, per // pp), pp)]
        pairs = [(t, per // t) for t in _tp_choices(arch, min(gpus_per_node, per)) if per % t == 0]
        return pairs or [(1, per)]
    if pp > 1:
        return [(t, pp) for t in _tp_choices(arch, gpus_per_node)]
    return None


def _pinned_options(
    arch: ModelArch,
    gpu: GPUType,
    request: SizingRequest,
    precision: str,
    layouts: list[tuple[int, int]],
    gpus_per_node: int,
) -> list[tuple[SizingOption, bool]]:
    """One option per pinned (TP, PP) layout, each with whether the layout itself is invalid."""
    out: list[tuple[SizingOption, bool]] = []
    for tp, pp in layouts:
        problem = None
        if request.per_replica and tp * pp != request.per_replica:
            problem = (
                f"spec.gpu.perReplica {request.per_replica} is not TP x PP; TP {tp} x PP {pp} = {tp * pp}"
            )
        problem = problem or _layout_problem(arch, tp, pp, gpus_per_node)
        out.append((_option(arch, gpu, request, precision, tp, pp, gpus_per_node, problem), bool(problem)))
    return out


def _searched_options(
    arch: ModelArch, gpu: GPUType, request: SizingRequest, precision: str, gpus_per_node: int
) -> list[SizingOption]:
    """Every single-node TP; when none fits, the widest TP with 2, 3, ... pipeline stages until one
    fits or the replica grows too large."""
    tps = _tp_choices(arch, gpus_per_node)
    out = [_option(arch, gpu, request, precision, tp, 1, gpus_per_node) for tp in tps]
    if any(o.fits for o in out):
        return out
    tp = tps[-1]
    for pp in range(2, MAX_PIPELINE_PARALLEL + 1):
        if tp * pp > MAX_GPUS_PER_REPLICA or pp > arch.layers:
            break
        option = _option(arch, gpu, request, precision, tp, pp, gpus_per_node)
        out.append(option)
        if option.fits:
            break
    return out


def size_options(
    arch: ModelArch, gpu: GPUType, request: SizingRequest, gpus_per_node: int = 8
) -> list[SizingOption]:
    """Candidate (precision, TP, PP) combinations for one replica on ``gpu``, best first.

    TP is a power of two up to ``gpus_per_node`` dividing the attention heads (tensor
    parallelism stays inside one node); when no single-node layout fits, PP stages of a
    full node each span nodes. ``request.tensor_parallel``/``pipeline_parallel``/
    ``per_replica`` pin the layout when set.

    Order: options that fit, in :func:`choose_precision`'s order of preference (native
    first: ``auto`` quantizes only where the native precision does not fit, or where
    placement finds no room for it and takes the next option), then fewest GPUs, fewest
    nodes, higher TP; then those that do not fit, closest to fitting first. Raises
    :class:`SpecError` for a precision the GPU cannot run.
    """
    precisions = choose_precision(arch, request.precision, gpu, request.precisions)
    pinned = _layouts(arch, request, gpus_per_node)
    options: list[tuple[SizingOption, bool]] = []  # (option, layout invalid)
    for precision in precisions:
        if pinned is not None:
            options += _pinned_options(arch, gpu, request, precision, pinned, gpus_per_node)
        else:
            options += [(o, False) for o in _searched_options(arch, gpu, request, precision, gpus_per_node)]
    rank = {p: i for i, p in enumerate(precisions)}
    usable = usable_memory_gib(gpu)

    def key(item: tuple[SizingOption, bool]) -> tuple[float, ...]:
        o, invalid = item
        if o.fits:
            return (0, rank[o.precision], o.gpus_per_replica, o.nodes_per_replica, o.pipeline_parallel)
        common = (o.gpus_per_replica, rank[o.precision], o.nodes_per_replica, o.pipeline_parallel)
        return (1, invalid, round(o.memory.per_gpu_gib - usable, 3), *common)

    return [o for o, _ in sorted(options, key=key)]


def best_option(
    arch: ModelArch, gpu: GPUType, request: SizingRequest, gpus_per_node: int = 8
) -> SizingOption | None:
    """The first option of :func:`size_options` that fits, or None when none does."""
    return next((o for o in size_options(arch, gpu, request, gpus_per_node) if o.fits), None)
