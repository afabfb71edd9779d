"""Sizing: the memory estimate, precision choice and the options per GPU type, against published minimums."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from deepseek_operator.errors import SpecError
from deepseek_operator.planning import catalog, sizing
from deepseek_operator.planning.gpus import GPU_TYPES, gpu_type
from deepseek_operator.planning.sizing import (
    best_option,
    choose_precision,
    derive_max_batch,
    estimate_memory,
    kv_bytes_per_token,
    size_options,
)
from deepseek_operator.planning.types import GPUType, ModelArch, SizingOption, SizingRequest
from deepseek_operator.sim.gpus import GPU_PRODUCTS

GPUS = {
    "H100": "NVIDIA-H100-80GB-HBM3",
    "H200": "NVIDIA-H200",
    "A100-40": "NVIDIA-A100-SXM4-40GB",
    "A100-80": "NVIDIA-A100-SXM4-80GB",
    "L40S": "NVIDIA-L40S",
    "4090": "NVIDIA-GeForce-RTX-4090",
}
PRECISIONS = ("auto", "bf16", "fp8", "int4-awq")
ALL_IDS = sorted(catalog.CATALOG)


def arch(name: str) -> ModelArch:
    found = catalog.lookup(name)
    assert found is not None, name
    return found


def gpu(short: str) -> GPUType:
    return gpu_type(GPUS[short])


def best(name: str, short: str, precision: str = "auto") -> SizingOption:
    option = best_option(arch(name), gpu(short), SizingRequest(precision=precision))
    assert option is not None, (name, short, precision)
    return option


def layout(o: SizingOption) -> tuple[str, int, int, int]:
    return o.precision, o.tensor_parallel, o.pipeline_parallel, o.nodes_per_replica


# --- KV cache per token ------------------------------------------------------------------------


def test_v3_kv_cache_per_token_is_the_mla_latent() -> None:
    # DOMAIN.md: about 61 x (512 + 64) x 2 bytes per token in BF16.
    assert kv_bytes_per_token(arch("DeepSeek-V3")) == 61 * (512 + 64) * 2 == 70272
    assert kv_bytes_per_token(arch("DeepSeek-R1"), kv_bytes=1) == 61 * 576


def test_gqa_kv_cache_per_token() -> None:
    assert kv_bytes_per_token(arch("DeepSeek-R1-Distill-Llama-70B")) == 2 * 80 * 8 * 128 * 2
    assert kv_bytes_per_token(arch("DeepSeek-R1-Distill-Qwen-7B")) == 2 * 28 * 4 * 128 * 2


def test_v32_caches_its_indexer_keys_beside_the_latent() -> None:
    assert kv_bytes_per_token(arch("DeepSeek-V3.2")) == 61 * (576 * 2 + 128 + 4)


def test_mla_latent_is_kept_whole_by_every_tp_rank() -> None:
    one = estimate_memory(arch("DeepSeek-V3"), "fp8", 8, 1, 1, 4096, 1024)
    assert one.kv_bytes_per_token == 8 * 70272
    gqa = estimate_memory(arch("DeepSeek-R1-Distill-Llama-70B"), "bf16", 4, 1, 1, 4096, 1024)
    assert gqa.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2  # split by KV head: no replication at TP 4


# --- the estimate ------------------------------------------------------------------------------


def test_weights_follow_bytes_per_parameter() -> None:
    a = arch("DeepSeek-R1-Distill-Qwen-7B")
    bf16 = estimate_memory(a, "bf16", 1, 1, 1, 4096, 1024).weights_gib
    fp8 = estimate_memory(a, "fp8", 1, 1, 1, 4096, 1024).weights_gib
    int4 = estimate_memory(a, "int4-awq", 1, 1, 1, 4096, 1024).weights_gib
    assert bf16 == pytest.approx(catalog.parameter_count_b(a) * 2e9 / 2**30, rel=1e-6)
    # Embedding and head stay 16-bit: quantized sizes are above the naive ones.
    assert bf16 / 2 < fp8 < bf16 * 0.6
    assert bf16 / 4 < int4 < fp8


def test_estimate_splits_over_tp_and_pp() -> None:
    a = arch("DeepSeek-R1-Distill-Llama-70B")
    tp1 = estimate_memory(a, "bf16", 1, 1, 8, 4096, 1024)
    tp4 = estimate_memory(a, "bf16", 4, 1, 8, 4096, 1024)
    pp2 = estimate_memory(a, "bf16", 4, 2, 8, 4096, 1024)
    assert tp4.weights_gib == pytest.approx(tp1.weights_gib, rel=1e-3)  # norms are replicated
    assert tp4.per_gpu_gib < tp1.per_gpu_gib / 3
    assert pp2.per_gpu_gib < tp4.per_gpu_gib
    assert tp4.overhead_gib == pytest.approx(4 * (sizing.OVERHEAD_GIB + sizing.COMM_OVERHEAD_GIB))
    assert tp1.overhead_gib == pytest.approx(sizing.OVERHEAD_GIB)


def test_kv_cache_grows_with_batch_and_length() -> None:
    a = arch("DeepSeek-R1-Distill-Qwen-14B")
    small = estimate_memory(a, "bf16", 1, 1, 8, 1024, 1024)
    big = estimate_memory(a, "bf16", 1, 1, 16, 3072, 1024)
    assert big.kv_cache_gib == pytest.approx(4 * small.kv_cache_gib)
    assert small.kv_cache_gib == pytest.approx(8 * 2048 * kv_bytes_per_token(a) / 2**30)


def test_unknown_precision_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"spec\.engine\.precision"):
        estimate_memory(arch("DeepSeek-V3"), "fp4", 8, 1, 1, 4096, 1024)


def test_derive_max_batch_fills_the_kv_fraction_and_caps_at_256() -> None:
    a = arch("DeepSeek-R1-Distill-Qwen-7B")
    n = derive_max_batch(a, gpu("H100"), "bf16", 1, 1, 4096, 1024)
    assert 150 < n < 256
    est = estimate_memory(a, "bf16", 1, 1, n, 4096, 1024)
    more = estimate_memory(a, "bf16", 1, 1, n + 1, 4096, 1024)
    usable = sizing.usable_memory_gib(gpu("H100"))
    fixed = est.per_gpu_gib - est.kv_cache_gib
    assert est.kv_cache_gib <= 0.9 * (usable - fixed) < more.kv_cache_gib
    assert (
        derive_max_batch(arch("DeepSeek-R1-Distill-Qwen-1.5B"), gpu("H200"), "bf16", 1, 1, 4096, 1024) == 256
    )
    # A lower fraction leaves room for fewer sequences.
    assert derive_max_batch(a, gpu("H100"), "bf16", 1, 1, 4096, 1024, kv_cache_memory_fraction=0.5) < n


def test_derive_max_batch_is_zero_when_the_weights_do_not_fit() -> None:
    assert derive_max_batch(arch("DeepSeek-V3"), gpu("H100"), "fp8", 8, 1, 4096, 1024) == 0


# --- precision ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "short", "expected"),
    [
        ("DeepSeek-R1-Distill-Qwen-7B", "H100", ["bf16", "fp8", "int4-awq"]),
        ("DeepSeek-R1-Distill-Qwen-7B", "A100-80", ["bf16", "int8", "int4-awq"]),
        ("DeepSeek-R1", "H200", ["fp8", "int4-awq"]),
        ("DeepSeek-R1", "L40S", ["fp8", "int4-awq"]),
        ("DeepSeek-R1", "A100-80", ["bf16", "int4-awq"]),  # an FP8-native model on A100: bf16 or int4
    ],
)
def test_auto_precision_is_native_first_then_smaller(name: str, short: str, expected: list[str]) -> None:
    assert choose_precision(arch(name), "auto", gpu(short)) == expected


@pytest.mark.parametrize("short", ["A100-40", "A100-80"])
def test_fp8_is_refused_on_a100(short: str) -> None:
    with pytest.raises(SpecError) as e:
        choose_precision(arch("DeepSeek-R1"), "fp8", gpu(short))
    assert str(e.value).startswith("spec.engine.precision: fp8 needs")
    assert "8.0" in str(e.value)


def test_explicit_precision_is_the_only_one() -> None:
    assert choose_precision(arch("DeepSeek-R1"), "int4-awq", gpu("A100-40")) == ["int4-awq"]
    assert choose_precision(arch("DeepSeek-R1"), "fp8", gpu("4090")) == ["fp8"]


def test_bf16_needs_ampere() -> None:
    t4 = gpu_type("Tesla-T4", memory_mib=15360, compute_major=7, compute_minor=5)
    with pytest.raises(SpecError, match="fp16"):
        choose_precision(arch("DeepSeek-R1-Distill-Qwen-7B"), "bf16", t4)
    assert choose_precision(arch("DeepSeek-R1-Distill-Qwen-7B"), "auto", t4)[0] == "fp16"


# --- published minimums ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["DeepSeek-R1", "DeepSeek-V3", "DeepSeek-R1-0528", "DeepSeek-V3.1-Terminus"])
def test_v3_r1_fp8_needs_8_h200_on_one_node(name: str) -> None:
    o = best(name, "H200", "fp8")
    assert layout(o) == ("fp8", 8, 1, 1)
    assert o.gpus_per_replica == 8


@pytest.mark.parametrize("name", ["DeepSeek-R1", "DeepSeek-V3"])
def test_v3_r1_fp8_needs_16_h100_across_two_nodes(name: str) -> None:
    o = best(name, "H100", "fp8")
    assert layout(o) == ("fp8", 8, 2, 2)
    assert o.gpus_per_replica == 16
    one_node = [
        x
        for x in size_options(arch(name), gpu("H100"), SizingRequest(precision="fp8"))
        if x.gpus_per_replica == 8
    ]
    assert one_node
    assert not any(x.fits for x in one_node)
    assert "GiB per GPU" in one_node[0].reason
    assert "NVIDIA-H100-80GB-HBM3" in one_node[0].reason


def test_v3_on_8_h100_only_with_4_bit_weights() -> None:
    a, h100 = arch("DeepSeek-R1"), gpu("H100")
    pinned = SizingRequest(tensor_parallel=8, pipeline_parallel=1)
    assert best_option(a, h100, replace(pinned, precision="fp8")) is None
    assert best_option(a, h100, replace(pinned, precision="bf16")) is None
    o = best_option(a, h100, replace(pinned, precision="int4-awq"))
    assert o is not None
    assert layout(o) == ("int4-awq", 8, 1, 1)


@pytest.mark.parametrize(("short", "tp"), [("H100", 4), ("H200", 2)])
def test_70b_bf16(short: str, tp: int) -> None:
    assert layout(best("DeepSeek-R1-Distill-Llama-70B", short, "bf16")) == ("bf16", tp, 1, 1)


@pytest.mark.parametrize("short", ["H100", "A100-80"])
def test_32b_bf16_wants_tp2_on_80gb_cards(short: str) -> None:
    assert layout(best("DeepSeek-R1-Distill-Qwen-32B", short, "bf16")) == ("bf16", 2, 1, 1)


@pytest.mark.parametrize("short", ["H100", "A100-80", "H200"])
def test_7b_bf16_on_one_gpu(short: str) -> None:
    o = best("DeepSeek-R1-Distill-Qwen-7B", short, "bf16")
    assert layout(o) == ("bf16", 1, 1, 1)
    assert o.max_batch_size > 100


def test_v2_model_card_minimums() -> None:
    # DeepSeek-V2's card: BF16 inference needs 8 x 80 GB; V2-Lite's: one 40 GB GPU.
    assert layout(best("DeepSeek-V2-Chat", "A100-80", "bf16")) == ("bf16", 8, 1, 1)
    assert layout(best("DeepSeek-V2", "H100", "bf16")) == ("bf16", 8, 1, 1)
    assert layout(best("DeepSeek-V2-Lite-Chat", "A100-40", "bf16")) == ("bf16", 1, 1, 1)


# --- the whole table: every catalog model x GPU x precision ---------------------------------------

# Best option per architecture and GPU for (auto, bf16, fp8, int4-awq): "precision TPxPP", "refused"
# (SpecError: the GPU cannot run the precision) or "none" (nothing fits within 64 GPUs). Default request:
# 4096 input + 1024 output tokens, batch decided. docs/sizing.md explains every row.
EXPECTED: dict[str, dict[str, tuple[str, str, str, str]]] = {
    "DeepSeek-R1-Distill-Qwen-1.5B": {
        "H100": ("bf16 1x1", "bf16 1x1", "fp8 1x1", "int4-awq 1x1"),
        "H200": ("bf16 1x1", "bf16 1x1", "fp8 1x1", "int4-awq 1x1"),
        "A100-40": ("bf16 1x1", "bf16 1x1", "refused", "int4-awq 1x1"),
        "A100-80": ("bf16 1x1", "bf16 1x1", "refused", "int4-awq 1x1"),
        "L40S": ("bf16 1x1", "bf16 1x1", "fp8 1x1", "int4-awq 1x1"),
        "4090": ("bf16 1x1", "bf16 1x1", "fp8 1x1", "int4-awq 1x1"),
    },
    "DeepSeek-R1-Distill-Qwen-7B": {
        "H100": ("bf16 1x1", "bf16 1x1", "fp8 1x1", "int4-awq 1x1"),
        "H200": ("bf16 1x1", "bf16 1x1", "fp8 1x1", "int4-awq 1x1"),
        "A100-40": ("bf16 1x1", "bf16 1x1", "refused", "int4-awq 1x1"),
        "A100-80": ("bf16 1x1", "bf16 1x1", "refused", "int4-awq 1x1"),
        "L40S": ("bf16 1x1", "bf16 1x1", "fp8 1x1", "int4-awq 1x1"),
        "4090": ("bf16 1x1", "bf16 1x1", "fp8 1x1", "int4-awq 1x1"),
    },
    "DeepSeek-R1-Distill-Qwen-14B": {
        "H100": ("bf16 1x1", "bf16 1x1", "fp8 1x1", "int4-awq 1x1"),
        "H200": ("bf16 1x1", "bf16 1x1", "fp8 1x1", "int4-awq 1x1"),
        "A100-40": ("bf16 2x1", "bf16 2x1", "refused", "int4-awq 1x1"),
        "A100-80": ("bf16 1x1", "bf16 1x1", "refused", "int4-awq 1x1"),
        "L40S": ("bf16 2x1", "bf16 2x1", "fp8 1x1", "int4-awq 1x1"),
        "4090": ("bf16 4x1", "bf16 4x1", "fp8 2x1", "int4-awq 2x1"),
    },
    "DeepSeek-R1-Distill-Qwen-32B": {
        "H100": ("bf16 2x1", "bf16 2x1", "fp8 1x1", "int4-awq 1x1"),
        "H200": ("bf16 1x1", "bf16 1x1", "fp8 1x1", "int4-awq 1x1"),
        "A100-40": ("bf16 4x1", "bf16 4x1", "refused", "int4-awq 2x1"),
        "A100-80": ("bf16 2x1", "bf16 2x1", "refused", "int4-awq 1x1"),
        "L40S": ("bf16 4x1", "bf16 4x1", "fp8 2x1", "int4-awq 1x1"),
        "4090": ("bf16 8x1", "bf16 8x1", "fp8 4x1", "int4-awq 4x1"),
    },
    "DeepSeek-R1-Distill-Llama-8B": {
        "H100": ("bf16 1x1", "bf16 1x1", "fp8 1x1", "int4-awq 1x1"),
        "H200": ("bf16 1x1", "bf16 1x1", "fp8 1x1", "int4-awq 1x1"),
        "A100-40": ("bf16 1x1", "bf16 1x1", "refused", "int4-awq 1x1"),
        "A100-80": ("bf16 1x1", "bf16 1x1", "refused", "int4-awq 1x1"),
        "L40S": ("bf16 1x1", "bf16 1x1", "fp8 1x1", "int4-awq 1x1"),
        "4090": ("bf16 2x1", "bf16 2x1", "fp8 1x1", "int4-awq 1x1"),
    },
    "DeepSeek-R1-Distill-Llama-70B": {
        "H100": ("bf16 4x1", "bf16 4x1", "fp8 2x1", "int4-awq 1x1"),
        "H200": ("bf16 2x1", "bf16 2x1", "fp8 1x1", "int4-awq 1x1"),
        "A100-40": ("bf16 8x1", "bf16 8x1", "refused", "int4-awq 2x1"),
        "A100-80": ("bf16 4x1", "bf16 4x1", "refused", "int4-awq 1x1"),
        "L40S": ("bf16 4x1", "bf16 4x1", "fp8 4x1", "int4-awq 2x1"),
        "4090": ("bf16 8x2", "bf16 8x2", "fp8 8x1", "int4-awq 4x1"),
    },
    "DeepSeek-V2-Lite": {
        "H100": ("bf16 1x1", "bf16 1x1", "fp8 1x1", "int4-awq 1x1"),
        "H200": ("bf16 1x1", "bf16 1x1", "fp8 1x1", "int4-awq 1x1"),
        "A100-40": ("bf16 1x1", "bf16 1x1", "refused", "int4-awq 1x1"),
        "A100-80": ("bf16 1x1", "bf16 1x1", "refused", "int4-awq 1x1"),
        "L40S": ("bf16 1x1", "bf16 1x1", "fp8 1x1", "int4-awq 1x1"),
        "4090": ("bf16 2x1", "bf16 2x1", "fp8 1x1", "int4-awq 1x1"),
    },
    "DeepSeek-V2": {
        "H100": ("bf16 8x1", "bf16 8x1", "fp8 4x1", "int4-awq 2x1"),
        "H200": ("bf16 4x1", "bf16 4x1", "fp8 2x1", "int4-awq 1x1"),
        "A100-40": ("bf16 8x2", "bf16 8x2", "refused", "int4-awq 8x1"),
        "A100-80": ("bf16 8x1", "bf16 8x1", "refused", "int4-awq 2x1"),
        "L40S": ("bf16 8x2", "bf16 8x2", "fp8 8x1", "int4-awq 4x1"),
        "4090": ("bf16 8x4", "bf16 8x4", "fp8 8x2", "int4-awq 8x2"),
    },
    "DeepSeek-V3": {
        "H100": ("fp8 8x2", "bf16 8x3", "fp8 8x2", "int4-awq 8x1"),
        "H200": ("fp8 8x1", "bf16 8x2", "fp8 8x1", "int4-awq 4x1"),
        "A100-40": ("bf16 8x6", "bf16 8x6", "refused", "int4-awq 8x2"),
        "A100-80": ("bf16 8x3", "bf16 8x3", "refused", "int4-awq 8x1"),
        "L40S": ("fp8 8x3", "bf16 8x5", "fp8 8x3", "int4-awq 8x2"),
        "4090": ("fp8 8x5", "none", "fp8 8x5", "int4-awq 8x3"),
    },
    "DeepSeek-V3.2-Exp": {
        "H100": ("fp8 8x2", "bf16 8x3", "fp8 8x2", "int4-awq 8x1"),
        "H200": ("fp8 8x1", "bf16 8x2", "fp8 8x1", "int4-awq 4x1"),
        "A100-40": ("bf16 8x6", "bf16 8x6", "refused", "int4-awq 8x2"),
        "A100-80": ("bf16 8x3", "bf16 8x3", "refused", "int4-awq 8x1"),
        "L40S": ("fp8 8x3", "bf16 8x5", "fp8 8x3", "int4-awq 8x2"),
        "4090": ("fp8 8x6", "none", "fp8 8x6", "int4-awq 8x3"),
    },
}


def _architecture_name(a: ModelArch) -> str:
    """The EXPECTED key of a catalog entry: the first entry with the same figures."""
    figures = replace(a, id="", source="")
    for u in catalog.unique_architectures():
        if replace(u, id="", source="") == figures:
            return u.id.split("/", 1)[1]
    raise AssertionError(f"no architecture for {a.id}")


def _outcome(a: ModelArch, g: GPUType, precision: str) -> tuple[str, list[SizingOption]]:
    try:
        options = size_options(a, g, SizingRequest(precision=precision))
    except SpecError:
        return "refused", []
    first = next((o for o in options if o.fits), None)
    return (
        "none" if first is None else f"{first.precision} {first.tensor_parallel}x{first.pipeline_parallel}"
    ), options


def test_expected_covers_every_architecture() -> None:
    assert sorted(EXPECTED) == sorted(u.id.split("/", 1)[1] for u in catalog.unique_architectures())


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("short", list(GPUS))
@pytest.mark.parametrize("model_id", ALL_IDS)
def test_sizing_table(model_id: str, short: str, precision: str) -> None:
    a, g = catalog.CATALOG[model_id], gpu(short)
    outcome, options = _outcome(a, g, precision)
    assert outcome == EXPECTED[_architecture_name(a)][short][PRECISIONS.index(precision)]

    if precision == "fp8" and g.compute_major == 8 and g.compute_minor < 9:
        assert outcome == "refused"  # FP8 refused on A100
    assert bool(options) == (outcome != "refused")
    seen_unfit = False
    for o in options:
        assert o.tensor_parallel in (1, 2, 4, 8)  # a power of two inside one node of 8
        assert o.gpus_per_replica == o.tensor_parallel * o.pipeline_parallel
        assert o.nodes_per_replica == math.ceil(o.gpus_per_replica / 8)
        assert o.reason
        if o.fits:
            assert not seen_unfit, "fitting options come first"
            assert o.memory.per_gpu_gib <= g.memory_gib
            assert o.memory.per_gpu_gib <= sizing.usable_memory_gib(g)
            assert o.max_batch_size >= sizing.MIN_AUTO_BATCH
            assert o.max_batch_size <= sizing.MAX_AUTO_BATCH
            assert o.reason.startswith("fits")
        else:
            seen_unfit = True
    for p in {o.precision for o in options}:
        gpus = [o.gpus_per_replica for o in options if o.fits and o.precision == p]
        assert gpus == sorted(gpus), "fewest GPUs first within a precision"
    ranks = [choose_precision(a, precision, g).index(o.precision) for o in options if o.fits]
    assert ranks == sorted(ranks), "preferred precision first, then fewest GPUs"


@pytest.mark.parametrize("short", list(GPUS))
@pytest.mark.parametrize("model_id", [u.id for u in catalog.unique_architectures()])
def test_a_smaller_precision_never_needs_more_gpus(model_id: str, short: str) -> None:
    a, g = catalog.CATALOG[model_id], gpu(short)
    ladder = ["bf16", "fp8", "int4-awq"] if g.supports_fp8 else ["bf16", "int8", "int4-awq"]
    counts = []
    for precision in ladder:
        o = best_option(a, g, SizingRequest(precision=precision))
        counts.append(o.gpus_per_replica if o else 10_000)
    assert counts == sorted(counts, reverse=True), counts
    # auto keeps the native precision (bf16 on A100 for an FP8 model) wherever it fits at all.
    auto = best_option(a, g, SizingRequest())
    assert auto is not None
    first = next(p for p in choose_precision(a, "auto", g) if best_option(a, g, SizingRequest(precision=p)))
    assert auto.precision == first
    assert auto.gpus_per_replica == counts[ladder.index(first)]


def test_auto_lists_smaller_precisions_after_the_native_one() -> None:
    # Native FP8 first; 4-bit on one node of 8 stays in the list for placement to fall back to.
    fitting = [o for o in size_options(arch("DeepSeek-R1"), gpu("H100"), SizingRequest()) if o.fits]
    assert [(o.precision, o.gpus_per_replica, o.nodes_per_replica) for o in fitting] == [
        ("fp8", 16, 2),
        ("int4-awq", 8, 1),
    ]


# --- requests that pin the layout or the batch -------------------------------------------------


def test_pinned_tp_and_pp_are_honoured() -> None:
    a, h100 = arch("DeepSeek-R1"), gpu("H100")
    only = size_options(a, h100, SizingRequest(precision="fp8", tensor_parallel=8, pipeline_parallel=2))
    assert [(o.tensor_parallel, o.pipeline_parallel, o.fits) for o in only] == [(8, 2, True)]
    tp8 = size_options(a, h100, SizingRequest(precision="fp8", tensor_parallel=8))
    assert [(o.tensor_parallel, o.pipeline_parallel, o.fits) for o in tp8] == [(8, 1, False)]
    assert "needs" in tp8[0].reason


def test_per_replica_is_honoured() -> None:
    options = size_options(arch("DeepSeek-R1"), gpu("H100"), SizingRequest(precision="fp8", per_replica=16))
    assert {o.gpus_per_replica for o in options} == {16}
    first = options[0]
    assert first.fits
    assert (first.tensor_parallel, first.pipeline_parallel, first.nodes_per_replica) == (8, 2, 2)


def test_pinned_pp_spans_nodes_with_the_tp_decided() -> None:
    options = size_options(
        arch("DeepSeek-R1-Distill-Llama-70B"),
        gpu("H100"),
        SizingRequest(precision="bf16", pipeline_parallel=2),
    )
    assert all(o.pipeline_parallel == 2 for o in options)
    assert (options[0].tensor_parallel, options[0].pipeline_parallel) == (2, 2)


def test_invalid_pinned_layouts_say_why() -> None:
    q7 = arch("DeepSeek-R1-Distill-Qwen-7B")
    (o,) = size_options(q7, gpu("H100"), SizingRequest(precision="bf16", tensor_parallel=8))
    assert not o.fits
    assert "28 attention heads" in o.reason
    (o,) = size_options(arch("DeepSeek-V3"), gpu("H100"), SizingRequest(precision="fp8", tensor_parallel=16))
    assert not o.fits
    assert "inside" in o.reason or "in a node" in o.reason


def test_tp_beyond_the_attention_heads_is_not_offered() -> None:
    options = size_options(
        arch("DeepSeek-R1-Distill-Qwen-1.5B"), gpu("4090"), SizingRequest(precision="bf16")
    )
    assert {o.tensor_parallel for o in options} == {1, 2, 4}  # 12 heads: TP 8 does not divide them


def test_explicit_batch_is_checked_not_derived() -> None:
    a, h100 = arch("DeepSeek-R1-Distill-Qwen-32B"), gpu("H100")
    # A small explicit batch makes one 80 GB GPU enough for 32B BF16 ...
    o = best_option(a, h100, SizingRequest(precision="bf16", max_batch_size=4))
    assert o is not None
    assert (o.tensor_parallel, o.max_batch_size) == (1, 4)
    # ... while left to the operator the batch would be too small to be worth it.
    (tp1,) = [x for x in size_options(a, h100, SizingRequest(precision="bf16")) if x.gpus_per_replica == 1]
    assert not tp1.fits
    assert "room for only" in tp1.reason
    # An explicit batch that does not fit says how many would.
    (big,) = size_options(a, h100, SizingRequest(precision="bf16", max_batch_size=64, tensor_parallel=1))
    assert not big.fits
    assert "at most" in big.reason
    assert big.memory.per_gpu_gib > h100.memory_gib


def test_longer_sequences_need_more_gpus() -> None:
    a = arch("DeepSeek-R1-Distill-Llama-70B")
    short = best_option(a, gpu("H100"), SizingRequest(precision="bf16"))
    long = best_option(
        a, gpu("H100"), SizingRequest(precision="bf16", max_input_tokens=65536, max_output_tokens=8192)
    )
    assert short is not None
    assert long is not None
    assert long.gpus_per_replica > short.gpus_per_replica


def test_nothing_fits_gives_the_closest_option_first() -> None:
    options = size_options(arch("DeepSeek-V3"), gpu("4090"), SizingRequest(precision="bf16"))
    assert not any(o.fits for o in options)
    assert options[0].gpus_per_replica == 64  # the most GPUs tried is the closest
    assert options[0].reason.startswith("needs")
    assert "NVIDIA-GeForce-RTX-4090 has 24.0 GiB" in options[0].reason


# --- GPU types ---------------------------------------------------------------------------------


def test_gpu_table_agrees_with_the_simulated_cluster() -> None:
    for p in GPU_PRODUCTS.values():
        t = GPU_TYPES[p.product]
        assert t.memory_gib == p.memory_mib / 1024
        assert (t.compute_major, t.compute_minor, t.family) == (p.compute_major, p.compute_minor, p.family)


@pytest.mark.parametrize(
    ("product", "mib", "cc"),
    [
        ("NVIDIA-H100-80GB-HBM3", 81559, (9, 0)),
        ("NVIDIA-H200", 143771, (9, 0)),
        ("NVIDIA-A100-SXM4-80GB", 81920, (8, 0)),
        ("NVIDIA-A100-SXM4-40GB", 40960, (8, 0)),
        ("NVIDIA-A100-PCIE-40GB", 40960, (8, 0)),
        ("NVIDIA-A100-PCIE-80GB", 81920, (8, 0)),
        ("NVIDIA-L40S", 46068, (8, 9)),
        ("NVIDIA-GeForce-RTX-4090", 24564, (8, 9)),
        ("NVIDIA-H100-PCIe", 81559, (9, 0)),
        ("NVIDIA-B200", 183359, (10, 0)),
        ("NVIDIA-L4", 23034, (8, 9)),
        ("NVIDIA-A10G", 23028, (8, 6)),
    ],
)
def test_gpu_table(product: str, mib: int, cc: tuple[int, int]) -> None:
    t = gpu_type(product)
    assert t.product == product
    assert t.memory_gib * 1024 == mib
    assert (t.compute_major, t.compute_minor) == cc
    assert t.supports_fp8 == (cc >= (8, 9))


def test_shared_products_map_to_their_base() -> None:
    assert gpu_type("NVIDIA-H100-80GB-HBM3-SHARED") == GPU_TYPES["NVIDIA-H100-80GB-HBM3"]


def test_unknown_products_come_from_labels_then_the_name() -> None:
    t = gpu_type("NVIDIA-H800", memory_mib=81559, compute_major=9, compute_minor=0, family="hopper")
    assert (t.product, t.memory_gib, t.compute_major, t.family) == ("NVIDIA-H800", 81559 / 1024, 9, "hopper")
    guessed = gpu_type("NVIDIA-H20-96GB")
    assert (guessed.memory_gib, guessed.compute_major, guessed.family) == (96.0, 9, "hopper")
    nothing = gpu_type("Acme-Accelerator")
    assert nothing.memory_gib == 0
    assert (
        best_option(arch("DeepSeek-R1-Distill-Qwen-1.5B"), replace(nothing, compute_major=9), SizingRequest())
        is None
    )
