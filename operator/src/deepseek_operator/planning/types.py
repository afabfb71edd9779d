"""The data the planning modules pass between them (all frozen, all pure).

catalog (ModelArch) -> sizing (SizingRequest, GPUType -> SizingOption/MemoryEstimate)
inventory (NodeInfo) -> placement (-> Plan, or a refusal with numbers) -> nccl (NCCLProfile)
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelArch:
    """Architecture figures sizing needs, from a model's published config (``source`` says where)."""

    id: str
    family: str  # "dense" | "moe"
    layers: int
    hidden_size: int
    intermediate_size: int  # dense MLP width (MoE models: of the dense layers)
    attention_heads: int
    kv_heads: int  # GQA key/value heads (MLA models: attention_heads)
    head_dim: int
    vocab_size: int
    native_precision: str  # "bf16" | "fp16" | "fp8"
    context_length: int
    published_params_b: float  # the model card's total parameter count, billions
    source: str  # where the figures come from
    tie_word_embeddings: bool = False
    # DeepSeekMoE
    experts: int = 0  # routed experts per MoE layer
    active_experts: int = 0  # routed experts per token
    shared_experts: int = 0
    moe_intermediate_size: int = 0
    first_dense_layers: int = 0  # first_k_dense_replace
    # Multi-head Latent Attention (MLA); kv_lora_rank > 0 means MLA
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    mtp_layers: int = 0  # multi-token-prediction modules shipped in the checkpoint
    published_active_params_b: float = 0.0
    # DeepSeek Sparse Attention (V3.2): the lightning indexer's heads and key width; its
    # per-token FP8 key cache sits beside the MLA latent (config index_n_heads, index_head_dim)
    index_n_heads: int = 0
    index_head_dim: int = 0
    # The Hugging Face config.json `architectures` entry ("" for a model outside the catalog): what
    # an image profile says each runtime path can load.
    hf_architecture: str = ""


@dataclass(frozen=True)
class GPUType:
    """A GPU model as GPU Feature Discovery names it, with what sizing needs."""

    product: str  # nvidia.com/gpu.product, e.g. NVIDIA-H100-80GB-HBM3
    memory_gib: float
    compute_major: int
    compute_minor: int
    family: str  # hopper, ampere, ada-lovelace, blackwell

    @property
    def supports_fp8(self) -> bool:
        """FP8 tensor cores need compute capability 8.9 or newer (Ada, Hopper, Blackwell)."""
        return (self.compute_major, self.compute_minor) >= (8, 9)


@dataclass(frozen=True)
class SizingRequest:
    """What the spec asks of the engine; 0 means "decide"."""

    precision: str = "auto"  # auto | bf16 | fp16 | fp8 | int8 | int4-awq
    max_batch_size: int = 0
    max_input_tokens: int = 4096
    max_output_tokens: int = 1024
    kv_cache_memory_fraction: float = 0.9
    tensor_parallel: int = 0
    pipeline_parallel: int = 1
    per_replica: int = 0
    # What the runtime path of the image can load for the model (its profile); empty: no limit known.
    precisions: tuple[str, ...] = ()


@dataclass(frozen=True)
class MemoryEstimate:
    """GPU memory of one replica, in GiB: totals over the replica and the share of one GPU."""

    weights_gib: float  # whole replica
    kv_cache_gib: float  # whole replica, for max_batch_size sequences of max_input+max_output tokens
    activations_gib: float  # whole replica
    overhead_gib: float  # whole replica (CUDA context, runtime, NCCL buffers)
    per_gpu_gib: float  # the busiest GPU's share of the above
    kv_bytes_per_token: int  # whole replica


@dataclass(frozen=True)
class SizingOption:
    """One way to run the model on one GPU type: precision, parallelism, memory, batch."""

    gpu: GPUType
    precision: str
    tensor_parallel: int
    pipeline_parallel: int
    gpus_per_replica: int
    nodes_per_replica: int
    max_batch_size: int
    memory: MemoryEstimate
    fits: bool
    reason: str  # why it does or does not fit, with numbers


@dataclass(frozen=True)
class NodeInfo:
    """One node as the inventory sees it."""

    name: str
    gpu_product: str | None  # None: no GPUs
    gpu_memory_mib: int
    gpus_allocatable: int
    gpus_requested: int  # by pods bound to it that are not finished
    compute_major: int = 0
    compute_minor: int = 0
    family: str = ""
    sharing: str = (
        "none"  # none | mps | time-slicing (GFD nvidia.com/gpu.sharing-strategy, or -SHARED product)
    )
    schedulable: bool = True
    taints: tuple[tuple[str, str, str], ...] = ()  # (key, value, effect)
    labels: tuple[tuple[str, str], ...] = ()
    fabric_hints: tuple[str, ...] = field(default_factory=tuple)  # e.g. "infiniband", "efa", "roce", "nvlink"
    # Allocatable resources other than cpu/memory/pods/GPUs (RDMA, EFA, ...), for the NCCL profile.
    extended_resources: tuple[tuple[str, str], ...] = ()

    @property
    def gpus_free(self) -> int:
        """GPUs not requested by any running pod."""
        return max(0, self.gpus_allocatable - self.gpus_requested)


@dataclass(frozen=True)
class NCCLProfile:
    """The NCCL environment for one fabric."""

    fabric: str  # nvlink | pcie | infiniband | roce | ethernet | efa
    env: tuple[tuple[str, str], ...]
    extra_resources: tuple[tuple[str, str], ...] = ()  # e.g. (("vpc.amazonaws.com/efa", "4"),)
    notes: str = ""


@dataclass(frozen=True)
class Plan:
    """Decisions about one revision of a deployment, reported in ``status.placement``.

    :mod:`deepseek_operator.planning.placement` makes it from the catalog, the memory
    estimate and the GPU inventory.
    """

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
    # Expert-parallel ranks (MoE on the PyTorch path across nodes: TP x EP over the whole replica,
    # as TensorRT-LLM's DeepSeek-V3 recipe runs it); 1: none.
    expert_parallel: int = 1
    gpu_products: tuple[str, ...] = ()  # products allowed in required node affinity, preferred first
    extra_resources: tuple[tuple[str, str], ...] = ()  # e.g. EFA interfaces for multi-node replicas
    memory_breakdown: tuple[tuple[str, float], ...] = ()  # GiB per replica: weights, kvCache, ...

    @property
    def world_size(self) -> int:
        """MPI ranks of one replica (TP x PP)."""
        return self.tensor_parallel * self.pipeline_parallel
