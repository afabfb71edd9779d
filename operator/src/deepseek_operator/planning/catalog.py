"""The DeepSeek model catalog: architecture figures from each model's published ``config.json``.

Every entry carries the figures sizing needs and ``source`` says where they come
from. Parameter counts are *computed* from the figures (:func:`parameter_count_b`)
and checked against the count each model publishes (``published_params_b``), which
is how a typo in a figure gets caught.

Which count is "published":

* DeepSeek-V2/V2-Lite/V3 family: the model card's total (V3: 671B, the main model
  without the 14B multi-token-prediction module; DeepSeek's README_WEIGHTS.md:
  "671B of main model weights and 14B of the MTP module weights", Hugging Face
  shows 685B for the checkpoint, which :func:`parameter_count_b` gives with
  ``include_mtp=True``).
* R1 distills: their names round (1.5B is really 1.78B: the distill unties the
  embeddings of Qwen2.5-Math-1.5B), so the published count is the one Hugging Face
  reports from the checkpoint's safetensors (1.78B, 7.62B, 14.8B, 32.8B, 8.03B, 70.6B).

Counting conventions (documented in docs/sizing.md): biases are left out (Qwen2's
q/k/v biases are < 0.01 % of its weights); active parameters exclude the input
embedding (a lookup, not a matmul) and include the output head, as DeepSeek's
"36.6B activated, including 0.9B for the output head" does.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Literal

from deepseek_operator.api.spec import Architecture, ModelSpec
from deepseek_operator.errors import SpecError
from deepseek_operator.planning.types import ModelArch

ORG = "deepseek-ai"

Shard = Literal["tp", "replicated", "kv"]

# ---------------------------------------------------------------------------
# The architectures. Figures are config.json's; comments name the config keys
# where the ModelArch field name differs.
# ---------------------------------------------------------------------------

_QWEN_SRC = (
    "config.json of deepseek-ai/{name} (Qwen2ForCausalLM, from {base}: num_hidden_layers {l}, "
    "hidden_size {h}, intermediate_size {i}, num_attention_heads {a}, num_key_value_heads {kv}, "
    "vocab_size {v}, max_position_embeddings 131072, tie_word_embeddings false); published count: "
    "Hugging Face safetensors metadata of the checkpoint"
)
_LLAMA_SRC = (
    "config.json of deepseek-ai/{name} (LlamaForCausalLM, from {base}: num_hidden_layers {l}, "
    "hidden_size {h}, intermediate_size {i}, num_attention_heads {a}, num_key_value_heads {kv}, "
    "vocab_size 128256, max_position_embeddings 131072, tie_word_embeddings false); published count: "
    "Hugging Face safetensors metadata of the checkpoint"
)


def _qwen(
    name: str,
    base: str,
    layers: int,
    hidden: int,
    inter: int,
    heads: int,
    kv: int,
    vocab: int,
    published: float,
) -> ModelArch:
    return ModelArch(
        id=f"{ORG}/{name}",
        family="dense",
        layers=layers,
        hidden_size=hidden,
        intermediate_size=inter,
        attention_heads=heads,
        kv_heads=kv,
        head_dim=hidden // heads,
        vocab_size=vocab,
        native_precision="bf16",
        context_length=131072,
        published_params_b=published,
        tie_word_embeddings=False,
        hf_architecture="Qwen2ForCausalLM",
        source=_QWEN_SRC.format(name=name, base=base, l=layers, h=hidden, i=inter, a=heads, kv=kv, v=vocab),
    )


def _llama(
    name: str, base: str, layers: int, hidden: int, inter: int, heads: int, kv: int, published: float
) -> ModelArch:
    return ModelArch(
        id=f"{ORG}/{name}",
        family="dense",
        layers=layers,
        hidden_size=hidden,
        intermediate_size=inter,
        attention_heads=heads,
        kv_heads=kv,
        head_dim=hidden // heads,
        vocab_size=128256,
        native_precision="bf16",
        context_length=131072,
        published_params_b=published,
        tie_word_embeddings=False,
        hf_architecture="LlamaForCausalLM",
        source=_LLAMA_SRC.format(name=name, base=base, l=layers, h=hidden, i=inter, a=heads, kv=kv),
    )


# DeepSeek-V2-Lite: config.json of deepseek-ai/DeepSeek-V2-Lite(-Chat); DeepSeek-V3's
# inference/configs/config_16B.json has the same figures.
_V2_LITE = ModelArch(
    id=f"{ORG}/DeepSeek-V2-Lite",
    family="moe",
    layers=27,
    hidden_size=2048,
    intermediate_size=10944,
    attention_heads=16,
    kv_heads=16,  # num_key_value_heads (MLA: every head reads the shared latent)
    head_dim=192,  # qk_nope_head_dim + qk_rope_head_dim
    vocab_size=102400,
    native_precision="bf16",
    context_length=163840,  # max_position_embeddings (YaRN factor 40 over 4096)
    published_params_b=15.7,
    published_active_params_b=2.4,
    experts=64,  # n_routed_experts
    active_experts=6,  # num_experts_per_tok
    shared_experts=2,  # n_shared_experts
    moe_intermediate_size=1408,
    first_dense_layers=1,  # first_k_dense_replace
    kv_lora_rank=512,
    q_lora_rank=0,  # null: a full q_proj
    qk_nope_head_dim=128,
    qk_rope_head_dim=64,
    v_head_dim=128,
    hf_architecture="DeepseekV2ForCausalLM",
    source=(
        "config.json of deepseek-ai/DeepSeek-V2-Lite (DeepseekV2ForCausalLM; same figures in DeepSeek-V3's "
        "inference/configs/config_16B.json); counts: model card (15.7B total, 2.4B activated; the card's "
        "summary rounds to 16B)"
    ),
)

# DeepSeek-V2: config.json of deepseek-ai/DeepSeek-V2(-Chat) (DeepSeek-V3's config_236B.json agrees).
_V2 = ModelArch(
    id=f"{ORG}/DeepSeek-V2",
    family="moe",
    layers=60,
    hidden_size=5120,
    intermediate_size=12288,
    attention_heads=128,
    kv_heads=128,
    head_dim=192,
    vocab_size=102400,
    native_precision="bf16",
    context_length=163840,
    published_params_b=236.0,
    published_active_params_b=21.0,
    experts=160,
    active_experts=6,
    shared_experts=2,
    moe_intermediate_size=1536,
    first_dense_layers=1,
    kv_lora_rank=512,
    q_lora_rank=1536,
    qk_nope_head_dim=128,
    qk_rope_head_dim=64,
    v_head_dim=128,
    hf_architecture="DeepseekV2ForCausalLM",
    source=(
        "config.json of deepseek-ai/DeepSeek-V2 (DeepseekV2ForCausalLM; DeepSeek-V3's "
        "inference/configs/config_236B.json agrees); counts: model card (236B total, 21B activated)"
    ),
)

# DeepSeek-V3 and everything built on its architecture (R1, R1-0528, V3.1, ...):
# config.json of deepseek-ai/DeepSeek-V3 and inference/configs/config_671B.json.
_V3 = ModelArch(
    id=f"{ORG}/DeepSeek-V3",
    family="moe",
    layers=61,
    hidden_size=7168,
    intermediate_size=18432,
    attention_heads=128,
    kv_heads=128,
    head_dim=192,
    vocab_size=129280,
    native_precision="fp8",  # quantization_config: fp8 e4m3, weight_block_size [128, 128]
    context_length=163840,
    published_params_b=671.0,
    published_active_params_b=37.0,
    experts=256,
    active_experts=8,
    shared_experts=1,
    moe_intermediate_size=2048,
    first_dense_layers=3,
    kv_lora_rank=512,
    q_lora_rank=1536,
    qk_nope_head_dim=128,
    qk_rope_head_dim=64,
    v_head_dim=128,
    mtp_layers=1,  # num_nextn_predict_layers
    hf_architecture="DeepseekV3ForCausalLM",
    source=(
        "config.json of deepseek-ai/DeepSeek-V3 (DeepseekV3ForCausalLM) and the GitHub repository's "
        "inference/configs/config_671B.json; counts: model card and README_WEIGHTS.md (671B main model + 14B "
        "MTP module = 685B checkpoint; 37B activated, 36.6B of it in the main model incl. 0.9B output head)"
    ),
)

# DeepSeek-V3.2(-Exp): V3.1-Terminus plus the DeepSeek Sparse Attention indexer
# (config.json: index_n_heads 64, index_head_dim 128, index_topk 2048).
_V32 = replace(
    _V3,
    id=f"{ORG}/DeepSeek-V3.2-Exp",
    index_n_heads=64,
    index_head_dim=128,
    hf_architecture="DeepseekV32ForCausalLM",
    source=(
        "config.json of deepseek-ai/DeepSeek-V3.2-Exp (DeepseekV32ForCausalLM): the V3 figures plus "
        "index_n_heads 64, index_head_dim 128, index_topk 2048; counts: 671B main model as for V3 (the "
        "indexer adds 0.85B, 0.13 %); Hugging Face shows 685B for the checkpoint, MTP module included"
    ),
)


def _alias(base: ModelArch, name: str) -> ModelArch:
    return replace(base, id=f"{ORG}/{name}", source=f"same architecture as {base.id}: {base.source}")


_ENTRIES: list[ModelArch] = [
    _qwen("DeepSeek-R1-Distill-Qwen-1.5B", "Qwen2.5-Math-1.5B", 28, 1536, 8960, 12, 2, 151936, 1.78),
    _qwen("DeepSeek-R1-Distill-Qwen-7B", "Qwen2.5-Math-7B", 28, 3584, 18944, 28, 4, 152064, 7.62),
    _qwen("DeepSeek-R1-Distill-Qwen-14B", "Qwen2.5-14B", 48, 5120, 13824, 40, 8, 152064, 14.8),
    _qwen("DeepSeek-R1-Distill-Qwen-32B", "Qwen2.5-32B", 64, 5120, 27648, 40, 8, 152064, 32.8),
    _llama("DeepSeek-R1-Distill-Llama-8B", "Llama-3.1-8B", 32, 4096, 14336, 32, 8, 8.03),
    _llama("DeepSeek-R1-Distill-Llama-70B", "Llama-3.3-70B-Instruct", 80, 8192, 28672, 64, 8, 70.6),
    _V2_LITE,
    *(
        _alias(_V2_LITE, n)
        for n in ("DeepSeek-V2-Lite-Chat", "DeepSeek-Coder-V2-Lite-Base", "DeepSeek-Coder-V2-Lite-Instruct")
    ),
    _V2,
    *(
        _alias(_V2, n)
        for n in (
            "DeepSeek-V2-Chat",
            "DeepSeek-V2-Chat-0628",
            "DeepSeek-V2.5",
            "DeepSeek-V2.5-1210",
            "DeepSeek-Coder-V2-Base",
            "DeepSeek-Coder-V2-Instruct",
        )
    ),
    _V3,
    *(
        _alias(_V3, n)
        for n in (
            "DeepSeek-V3-Base",
            "DeepSeek-V3-0324",
            "DeepSeek-R1",
            "DeepSeek-R1-Zero",
            "DeepSeek-R1-0528",
            "DeepSeek-V3.1",
            "DeepSeek-V3.1-Base",
            "DeepSeek-V3.1-Terminus",
        )
    ),
    _V32,
    _alias(_V32, "DeepSeek-V3.2"),
]

CATALOG: dict[str, ModelArch] = {a.id: a for a in _ENTRIES}
_BY_LOWER: dict[str, ModelArch] = {k.lower(): v for k, v in CATALOG.items()}


def lookup(model_id: str) -> ModelArch | None:
    """The catalog entry for a Hugging Face id, case-insensitively; ``deepseek-ai/`` may be left out."""
    key = model_id.strip().strip("/").lower()
    if "/" not in key:
        key = f"{ORG}/{key}"
    return _BY_LOWER.get(key)


# ---------------------------------------------------------------------------
# Parameter counting, by component, so that sizing can place each one on its GPUs.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """A group of weights: how many, whether quantization touches them, how tensor parallelism splits them.

    ``layer`` is the decoder layer (``None`` for embedding, final norm and output head;
    ``arch.layers`` and up for MTP modules). ``shard``: ``tp`` splits evenly over the
    TP ranks, ``replicated`` sits whole on every rank, ``kv`` splits by KV head (a rank
    keeps at least one head, so TP beyond the KV heads replicates them).
    ``active`` is the share used per token (routed experts: top-k / experts).
    """

    name: str
    layer: int | None
    params: int
    quantizable: bool
    shard: Shard
    active: float = 1.0


def is_mla(arch: ModelArch) -> bool:
    """Multi-head Latent Attention: the model caches a compressed latent instead of K and V."""
    return arch.kv_lora_rank > 0


def is_moe_layer(arch: ModelArch, layer: int) -> bool:
    """Whether decoder layer ``layer`` (MTP modules: ``layers`` and up) has routed experts."""
    return arch.family == "moe" and arch.experts > 0 and layer >= arch.first_dense_layers


def _attention(arch: ModelArch, layer: int) -> list[Component]:
    h, n = arch.hidden_size, arch.attention_heads
    c: list[Component] = []
    if is_mla(arch):
        qk = arch.qk_nope_head_dim + arch.qk_rope_head_dim
        if arch.q_lora_rank:
            c += [
                Component("q_a_proj", layer, h * arch.q_lora_rank, True, "replicated"),
                Component("q_a_layernorm", layer, arch.q_lora_rank, False, "replicated"),
                Component("q_b_proj", layer, arch.q_lora_rank * n * qk, True, "tp"),
            ]
        else:
            c.append(Component("q_proj", layer, h * n * qk, True, "tp"))
        c += [
            Component(
                "kv_a_proj_with_mqa",
                layer,
                h * (arch.kv_lora_rank + arch.qk_rope_head_dim),
                True,
                "replicated",
            ),
            Component("kv_a_layernorm", layer, arch.kv_lora_rank, False, "replicated"),
            Component(
                "kv_b_proj",
                layer,
                arch.kv_lora_rank * n * (arch.qk_nope_head_dim + arch.v_head_dim),
                True,
                "tp",
            ),
            Component("o_proj", layer, n * arch.v_head_dim * h, True, "tp"),
        ]
        if arch.index_n_heads:
            ih, idim = arch.index_n_heads, arch.index_head_dim
            c += [
                Component("indexer.wq_b", layer, (arch.q_lora_rank or h) * ih * idim, True, "replicated"),
                Component("indexer.wk", layer, h * idim, True, "replicated"),
                Component("indexer.k_norm", layer, 2 * idim, False, "replicated"),
                Component("indexer.weights_proj", layer, h * ih, False, "replicated"),
            ]
    else:
        d = arch.head_dim
        c += [
            Component("q_proj", layer, h * n * d, True, "tp"),
            Component("k_proj+v_proj", layer, 2 * h * arch.kv_heads * d, True, "kv"),
            Component("o_proj", layer, n * d * h, True, "tp"),
        ]
    return c


def _ffn(arch: ModelArch, layer: int) -> list[Component]:
    h = arch.hidden_size
    if not is_moe_layer(arch, layer):
        return [Component("mlp", layer, 3 * h * arch.intermediate_size, True, "tp")]
    expert = 3 * h * arch.moe_intermediate_size
    c = [
        Component("experts", layer, arch.experts * expert, True, "tp", arch.active_experts / arch.experts),
        Component("gate", layer, arch.experts * h, False, "replicated"),
    ]
    if arch.shared_experts:
        c.append(Component("shared_experts", layer, arch.shared_experts * expert, True, "tp"))
    return c


def layer_components(arch: ModelArch, layer: int) -> list[Component]:
    """The weights of decoder layer ``layer``: attention, MLP or experts, and the two RMSNorms."""
    return list(_layer_components(arch, layer))


@functools.lru_cache(maxsize=4096)
def _layer_components(arch: ModelArch, layer: int) -> tuple[Component, ...]:
    # Placement sizes every layer of every candidate layout: the same few answers many times.
    norms = Component("norms", layer, 2 * arch.hidden_size, False, "replicated")
    return (*_attention(arch, layer), *_ffn(arch, layer), norms)


def embedding_components(arch: ModelArch) -> list[Component]:
    """Input embedding (first pipeline stage); never quantized, split over TP by vocabulary."""
    return [Component("embed_tokens", None, arch.vocab_size * arch.hidden_size, False, "tp", 0.0)]


def head_components(arch: ModelArch) -> list[Component]:
    """Final norm and output head (last pipeline stage); the head is absent when tied to the embedding."""
    c = [Component("norm", None, arch.hidden_size, False, "replicated")]
    if not arch.tie_word_embeddings:
        c.append(Component("lm_head", None, arch.vocab_size * arch.hidden_size, False, "tp"))
    return c


def mtp_components(arch: ModelArch) -> list[Component]:
    """The multi-token-prediction modules as the checkpoint stores them (DeepSeek-V3's README_WEIGHTS.md).

    Each is a full decoder layer plus ``enorm``/``hnorm``/``eh_proj`` and a norm before the
    shared head; the checkpoint also stores copies of the embedding and the output head
    for it, which is why V3's MTP module counts 14B of which 11.5B are its own.
    """
    h = arch.hidden_size
    out: list[Component] = []
    for i in range(arch.mtp_layers):
        layer = arch.layers + i
        out += layer_components(arch, layer)
        out += [
            Component("mtp.enorm+hnorm+head_norm", layer, 3 * h, False, "replicated"),
            Component("mtp.eh_proj", layer, 2 * h * h, True, "tp"),
            Component("mtp.embed_tokens(copy)", layer, arch.vocab_size * h, False, "tp", 0.0),
            Component("mtp.shared_head(copy)", layer, arch.vocab_size * h, False, "tp"),
        ]
    return out


def components(arch: ModelArch, include_mtp: bool = False) -> list[Component]:
    """Every weight group of the model (the MTP modules only when asked)."""
    out = embedding_components(arch)
    for layer in range(arch.layers):
        out += layer_components(arch, layer)
    out += head_components(arch)
    if include_mtp:
        out += mtp_components(arch)
    return out


def parameter_count_b(arch: ModelArch, include_mtp: bool = False) -> float:
    """Total parameters in billions, computed from the figures.

    Embedding, attention (MLA projections and their norms included, V3.2's indexer too),
    dense MLPs, routed and shared experts, router gates, norms and the output head unless
    tied. MTP modules are left out unless ``include_mtp`` (DeepSeek's 671B excludes them;
    with them the V3 checkpoint is 685B).
    """
    return sum(c.params for c in components(arch, include_mtp)) / 1e9


def active_parameter_count_b(arch: ModelArch) -> float:
    """Parameters used per token, in billions: shared weights, output head, top-k of the routed experts.

    The input embedding is a lookup and is not counted (DeepSeek's convention); for a
    dense model this is the total.
    """
    if arch.family != "moe":
        return parameter_count_b(arch)
    return sum(c.params * c.active for c in components(arch)) / 1e9


# ---------------------------------------------------------------------------
# Models the catalog does not know: built from spec.model.architecture + parameters.
# ---------------------------------------------------------------------------

# Shapes of common dense models by size, used only to fill figures a spec leaves out:
# (up to billions, layers, hidden, heads, kv heads).
_SHAPES: tuple[tuple[float, int, int, int, int], ...] = (
    (1.0, 24, 1024, 16, 16),
    (2.5, 28, 1536, 12, 2),  # Qwen2.5-1.5B
    (5.0, 36, 2048, 16, 2),  # Qwen2.5-3B
    (11.0, 32, 4096, 32, 8),  # Llama-3.1-8B
    (24.0, 48, 5120, 40, 8),  # Qwen2.5-14B
    (45.0, 64, 5120, 40, 8),  # Qwen2.5-32B
    (90.0, 80, 8192, 64, 8),  # Llama-3.1-70B
    (200.0, 88, 12288, 96, 8),  # Mistral-Large-2 (123B)
    (math.inf, 126, 16384, 128, 8),  # Llama-3.1-405B
)
_DEFAULT_VOCAB = 152064  # the largest of the common tokenizers (Qwen2.5); a larger guess is the safer one
_DEFAULT_CONTEXT = 131072
_FFN_RATIO = 3.5  # SwiGLU intermediate / hidden of Llama-3 (14336 / 4096)


def _shape(params_b: float) -> tuple[int, int, int, int]:
    for limit, layers, hidden, heads, kv in _SHAPES:
        if params_b <= limit:
            return layers, hidden, heads, kv
    raise AssertionError("unreachable: the last shape has no limit")


def _round_to(x: float, step: int) -> int:
    return max(step, round(x / step) * step)


def arch_from_spec(model: ModelSpec) -> ModelArch:
    """The architecture to size ``model`` with: the catalog entry for its id, else one built from the spec.

    For an unknown id, ``spec.model.architecture`` and ``spec.model.parameters`` describe
    it. Figures left out are derived, and ``source`` lists which: ``headDim`` =
    hidden / heads; ``hiddenSize`` = heads x headDim, else the shape of a common model
    of that size; ``kvHeads`` = ``attentionHeads`` (no GQA: the larger, safer KV cache);
    ``vocabSize`` = 152064; the MLP width (and for MoE the expert width) is solved so that
    the computed count equals ``parameters``; without ``parameters`` the MLP is 3.5 x
    hidden. MoE models need ``parameters`` (expert width cannot be guessed). Raises
    :class:`SpecError` naming the fields to give when neither is there.
    """
    found = lookup(model.id)
    if found is not None:
        return found
    a, params = model.architecture, model.parameters
    _require_size(model, a, params)
    moe = a is not None and a.family == "moe"
    derived: list[str] = []
    s_layers, s_hidden, s_heads, s_kv = _shape(params if params is not None else 8.0)
    templated = a is None or (a.hidden_size is None and a.attention_heads is None)
    hidden, heads, head_dim = _attention_dims(a, s_hidden, s_heads, derived)
    kv_lora = a.kv_lora_rank if a and a.kv_lora_rank else 0
    kv = _kv_heads(a, heads, kv_lora, s_kv if templated else None, derived)
    vocab = a.vocab_size if a and a.vocab_size else None
    if vocab is None:
        vocab = _DEFAULT_VOCAB
        derived.append(f"vocabSize {vocab}")
    nope = rope = v_dim = 0
    if kv_lora:
        nope, rope, v_dim = 128, 64, 128
        head_dim = nope + rope
        derived.append("MLA head dims 128/64/128 (DeepSeek's)")
    experts, active = _experts(a, moe, derived)

    layers = a.layers if a and a.layers else None
    base = ModelArch(
        id=model.id,
        family="moe" if moe else "dense",
        layers=layers or s_layers,
        hidden_size=hidden,
        intermediate_size=_round_to(_FFN_RATIO * hidden, 256),
        attention_heads=heads,
        kv_heads=kv,
        head_dim=head_dim,
        vocab_size=vocab,
        native_precision=a.native_precision if a else "bf16",
        context_length=_DEFAULT_CONTEXT,
        published_params_b=params or 0.0,
        source="",
        experts=experts,
        active_experts=active,
        moe_intermediate_size=hidden if moe else 0,
        kv_lora_rank=kv_lora,
        qk_nope_head_dim=nope,
        qk_rope_head_dim=rope,
        v_head_dim=v_dim,
    )
    if layers is None:
        base = _derive_layers(base, params, templated, derived)
    base = _derive_width(base, params, derived)
    if a is None:
        given = "spec.model.parameters"
    else:
        given = "spec.model.architecture" + (" + spec.model.parameters" if params is not None else "")
    return replace(base, source=f"{given} (derived: {'; '.join(derived) or 'nothing'})")


def _require_size(model: ModelSpec, a: Architecture | None, params: float | None) -> None:
    """Raise :class:`SpecError` unless the spec says enough to size a model outside the catalog."""
    if a is None and params is None:
        raise SpecError(
            f"spec.model.id: {model.id!r} is not in the DeepSeek catalog, so its size is unknown; give "
            "spec.model.parameters (e.g. 7.6B) and, for a better estimate, spec.model.architecture (layers, "
            "hiddenSize, attentionHeads, kvHeads, headDim, vocabSize; for MoE experts, activeExperts, "
            f"kvLoraRank), or use a catalog id such as {ORG}/DeepSeek-R1-Distill-Qwen-7B"
        )
    if a is not None and a.family == "moe" and params is None:
        raise SpecError(
            "spec.model.parameters: required for an MoE model outside the catalog (the expert width is "
            "derived from it); give the total parameter count, e.g. 235B"
        )
    if params is None and (
        a is None or a.layers is None or (a.hidden_size is None and a.attention_heads is None)
    ):
        raise SpecError(
            f"spec.model.parameters: {model.id!r} is not in the catalog and spec.model.architecture lacks "
            "layers and hiddenSize (or attentionHeads); give spec.model.parameters, e.g. 7.6B, or those "
            "figures"
        )


def _attention_dims(
    a: Architecture | None, s_hidden: int, s_heads: int, derived: list[str]
) -> tuple[int, int, int]:
    """(hiddenSize, attentionHeads, headDim): the spec's, else derived from each other or from
    the common model of this size (``s_hidden``, ``s_heads``); what was derived goes to ``derived``."""
    heads = a.attention_heads if a and a.attention_heads else None
    head_dim = a.head_dim if a and a.head_dim else None
    hidden = a.hidden_size if a and a.hidden_size else None
    if hidden is None:
        if heads:
            hidden = heads * (head_dim or 128)
            derived.append(f"hiddenSize = attentionHeads x {head_dim or 128}")
        else:
            hidden, heads = s_hidden, s_heads
            derived.append(f"hiddenSize {hidden}, attentionHeads {heads} (a common model of this size)")
    if heads is None:
        heads = max(1, hidden // (head_dim or 128))
        derived.append(f"attentionHeads {heads} = hiddenSize / {head_dim or 128}")
    if head_dim is None:
        head_dim = hidden // heads
        derived.append("headDim = hiddenSize / attentionHeads")
    return hidden, heads, head_dim


def _kv_heads(
    a: Architecture | None, heads: int, kv_lora: int, template_kv: int | None, derived: list[str]
) -> int:
    """kvHeads: the spec's; for MLA the attention heads; the common model's (``template_kv``, when
    the width was templated too); else no GQA."""
    if a and a.kv_heads:
        return a.kv_heads
    if kv_lora:
        return heads  # MLA: every head reads the latent; KV heads do not size anything
    if template_kv is not None:
        derived.append(f"kvHeads {template_kv} (a common model of this size)")
        return template_kv
    derived.append("kvHeads = attentionHeads (no GQA assumed)")
    return heads


def _experts(a: Architecture | None, moe: bool, derived: list[str]) -> tuple[int, int]:
    """(routed experts, active experts per token); Raises :class:`SpecError` for an MoE without experts."""
    experts = (a.experts or 0) if a else 0
    active = (a.active_experts or 0) if a else 0
    if moe:
        if not experts:
            raise SpecError(
                "spec.model.architecture.experts: required for family moe; give the routed experts"
            )
        if not active:
            active = min(8, experts)
            derived.append(f"activeExperts {active}")
    return experts, active


def _derive_layers(base: ModelArch, params: float | None, templated: bool, derived: list[str]) -> ModelArch:
    """``base`` with its depth derived: the common model's, or solved from the parameter count."""
    if templated:
        derived.append(f"layers {base.layers} (a common model of this size)")
        return base
    # The width is the user's: solve the depth from the count with a 3.5 x hidden MLP.
    assert params is not None
    per_layer = sum(c.params for c in layer_components(base, base.layers))
    fixed = sum(c.params for c in (*embedding_components(base), *head_components(base)))
    base = replace(base, layers=max(1, round((params * 1e9 - fixed) / per_layer)))
    derived.append(f"layers {base.layers} (from parameters)")
    return base


def _derive_width(base: ModelArch, params: float | None, derived: list[str]) -> ModelArch:
    """``base`` with its MLP (or expert) width solved from the parameter count, or the 3.5 x hidden
    default and the count it gives."""
    if params is not None:
        derived.append(
            "expert width from parameters" if base.family == "moe" else "MLP width from parameters"
        )
        return _fit_width(base, params)
    derived.append(f"MLP width {base.intermediate_size} = 3.5 x hiddenSize")
    return replace(base, published_params_b=round(parameter_count_b(base), 2))


def _fit_width(arch: ModelArch, params_b: float) -> ModelArch:
    """Set the MLP (dense) or expert (MoE) width so that the computed count matches ``params_b``."""
    target = params_b * 1e9
    if arch.family == "moe":
        zero = replace(arch, moe_intermediate_size=0)
        rest = sum(c.params for c in components(zero))
        moe_layers = sum(1 for i in range(arch.layers) if is_moe_layer(arch, i))
        per_unit = moe_layers * (arch.experts + arch.shared_experts) * 3 * arch.hidden_size
        width = max(1, round((target - rest) / per_unit)) if per_unit else 0
        return replace(arch, moe_intermediate_size=width)
    zero = replace(arch, intermediate_size=0)
    rest = sum(c.params for c in components(zero))
    width = max(1, round((target - rest) / (3 * arch.hidden_size * arch.layers)))
    return replace(arch, intermediate_size=width)


def catalog_ids() -> list[str]:
    """Every catalog id, sorted."""
    return sorted(CATALOG)


def unique_architectures() -> list[ModelArch]:
    """One entry per distinct architecture (aliases share one), in catalog order."""
    seen: set[tuple[object, ...]] = set()
    out = []
    for arch in CATALOG.values():
        key = (
            arch.layers,
            arch.hidden_size,
            arch.vocab_size,
            arch.experts,
            arch.index_n_heads,
            arch.intermediate_size,
        )
        if key not in seen:
            seen.add(key)
            out.append(arch)
    return out
