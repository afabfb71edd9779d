"""The DeepSeek catalog: figures, computed parameter counts, lookup and models described in the spec."""

from __future__ import annotations

from dataclasses import replace

import pytest

from deepseek_operator.api.spec import ModelSpec, parse_spec
from deepseek_operator.errors import SpecError
from deepseek_operator.planning import catalog

ALL_IDS = sorted(catalog.CATALOG)
MOE_IDS = [i for i in ALL_IDS if catalog.CATALOG[i].family == "moe"]

# The models the brief names; every one must be in the catalog under its Hugging Face id.
NAMED = [
    "DeepSeek-R1-Distill-Qwen-1.5B",
    "DeepSeek-R1-Distill-Qwen-7B",
    "DeepSeek-R1-Distill-Qwen-14B",
    "DeepSeek-R1-Distill-Qwen-32B",
    "DeepSeek-R1-Distill-Llama-8B",
    "DeepSeek-R1-Distill-Llama-70B",
    "DeepSeek-V2-Lite",
    "DeepSeek-V2-Lite-Chat",
    "DeepSeek-Coder-V2-Lite-Base",
    "DeepSeek-Coder-V2-Lite-Instruct",
    "DeepSeek-V2",
    "DeepSeek-V2-Chat",
    "DeepSeek-Coder-V2-Base",
    "DeepSeek-Coder-V2-Instruct",
    "DeepSeek-V3",
    "DeepSeek-V3-Base",
    "DeepSeek-R1",
    "DeepSeek-R1-Zero",
    "DeepSeek-R1-0528",
    "DeepSeek-V3.1",
    "DeepSeek-V3.1-Terminus",
    "DeepSeek-V3.2-Exp",
    "DeepSeek-V3.2",
]


def _model(raw: dict[str, object]) -> ModelSpec:
    return parse_spec({"model": {"source": {"pvc": {"claimName": "models"}}, **raw}}).model


def _figures(a: catalog.ModelArch) -> catalog.ModelArch:
    return replace(a, id="", source="")


@pytest.mark.parametrize("name", NAMED)
def test_named_models_are_in_the_catalog(name: str) -> None:
    arch = catalog.CATALOG[f"deepseek-ai/{name}"]
    assert arch.id == f"deepseek-ai/{name}"
    assert arch.source


@pytest.mark.parametrize("model_id", ALL_IDS)
def test_computed_parameter_count_is_within_2_percent_of_the_published_one(model_id: str) -> None:
    arch = catalog.CATALOG[model_id]
    computed = catalog.parameter_count_b(arch)
    assert computed == pytest.approx(arch.published_params_b, rel=0.02), (computed, arch.published_params_b)


@pytest.mark.parametrize("model_id", MOE_IDS)
def test_active_parameters_are_near_the_published_ones(model_id: str) -> None:
    # Published active counts are rounded to two figures (V2-Lite's "2.4B" is 2.45B computed).
    arch = catalog.CATALOG[model_id]
    active = catalog.active_parameter_count_b(arch)
    assert active == pytest.approx(arch.published_active_params_b, rel=0.05), active
    assert active < catalog.parameter_count_b(arch) / 5


def test_v3_checkpoint_with_its_mtp_module_is_685b() -> None:
    # DeepSeek: "685B = 671B main model + 14B MTP module"; 36.6B activated incl. the 0.9B head.
    v3 = catalog.CATALOG["deepseek-ai/DeepSeek-V3"]
    assert catalog.parameter_count_b(v3, include_mtp=True) == pytest.approx(685, rel=0.01)
    assert catalog.parameter_count_b(v3, include_mtp=True) - catalog.parameter_count_b(v3) == pytest.approx(
        14, abs=1
    )
    assert catalog.active_parameter_count_b(v3) == pytest.approx(36.6, abs=0.1)
    v32 = catalog.CATALOG["deepseek-ai/DeepSeek-V3.2"]
    assert catalog.parameter_count_b(v32, include_mtp=True) == pytest.approx(685, rel=0.01)


def test_v3_figures_are_those_of_config_671b() -> None:
    a = catalog.CATALOG["deepseek-ai/DeepSeek-R1"]
    assert (a.layers, a.hidden_size, a.intermediate_size, a.vocab_size) == (61, 7168, 18432, 129280)
    assert (a.attention_heads, a.kv_lora_rank, a.q_lora_rank) == (128, 512, 1536)
    assert (a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim) == (128, 64, 128)
    assert (a.experts, a.active_experts, a.shared_experts, a.moe_intermediate_size) == (256, 8, 1, 2048)
    assert (a.first_dense_layers, a.mtp_layers, a.native_precision) == (3, 1, "fp8")
    assert a.context_length == 163840


def test_distills_are_bf16_dense_with_their_base_shapes() -> None:
    q32 = catalog.CATALOG["deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"]
    assert (q32.layers, q32.hidden_size, q32.intermediate_size, q32.attention_heads, q32.kv_heads) == (
        64,
        5120,
        27648,
        40,
        8,
    )
    l70 = catalog.CATALOG["deepseek-ai/DeepSeek-R1-Distill-Llama-70B"]
    assert (l70.layers, l70.hidden_size, l70.kv_heads, l70.vocab_size) == (80, 8192, 8, 128256)
    for model_id in ALL_IDS:
        a = catalog.CATALOG[model_id]
        if "Distill" in model_id:
            assert (a.family, a.native_precision, a.kv_lora_rank) == ("dense", "bf16", 0)


def test_v32_adds_the_sparse_attention_indexer() -> None:
    v32 = catalog.CATALOG["deepseek-ai/DeepSeek-V3.2-Exp"]
    assert (v32.index_n_heads, v32.index_head_dim) == (64, 128)
    v3 = catalog.CATALOG["deepseek-ai/DeepSeek-V3"]
    extra = catalog.parameter_count_b(v32) - catalog.parameter_count_b(v3)
    assert extra == pytest.approx(0.85, abs=0.02)


@pytest.mark.parametrize(
    ("alias", "base"),
    [
        ("deepseek-ai/DeepSeek-R1", "deepseek-ai/DeepSeek-V3"),
        ("deepseek-ai/DeepSeek-V3.1-Terminus", "deepseek-ai/DeepSeek-V3"),
        ("deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct", "deepseek-ai/DeepSeek-V2-Lite"),
        ("deepseek-ai/DeepSeek-Coder-V2-Instruct", "deepseek-ai/DeepSeek-V2"),
        ("deepseek-ai/DeepSeek-V3.2", "deepseek-ai/DeepSeek-V3.2-Exp"),
    ],
)
def test_aliases_share_their_base_architecture(alias: str, base: str) -> None:
    assert _figures(catalog.CATALOG[alias]) == _figures(catalog.CATALOG[base])
    assert catalog.CATALOG[alias].id == alias
    assert base in catalog.CATALOG[alias].source


@pytest.mark.parametrize(
    "text",
    [
        "deepseek-ai/DeepSeek-R1",
        "DEEPSEEK-AI/deepseek-r1",
        "deepseek-ai/deepseek-R1/",
        "DeepSeek-R1",
        " deepseek-r1 ",
    ],
)
def test_lookup_is_case_insensitive_and_takes_the_bare_name(text: str) -> None:
    found = catalog.lookup(text)
    assert found is not None
    assert found.id == "deepseek-ai/DeepSeek-R1"


def test_lookup_of_unknown_ids() -> None:
    assert catalog.lookup("Qwen/Qwen2.5-7B-Instruct") is None
    assert catalog.lookup("unsloth/DeepSeek-R1") is None  # another org's checkpoint is another model
    assert catalog.lookup("deepseek-ai/DeepSeek-R2") is None


def test_arch_from_spec_prefers_the_catalog() -> None:
    arch = catalog.arch_from_spec(_model({"id": "deepseek-ai/deepseek-v3", "parameters": "7B"}))
    assert arch.id == "deepseek-ai/DeepSeek-V3"
    assert arch.published_params_b == 671


def test_arch_from_spec_builds_an_unknown_model_from_architecture_and_parameters() -> None:
    arch = catalog.arch_from_spec(
        _model(
            {
                "id": "Qwen/Qwen2.5-7B-Instruct",
                "parameters": "7.6B",
                "architecture": {
                    "layers": 28,
                    "hiddenSize": 3584,
                    "attentionHeads": 28,
                    "kvHeads": 4,
                    "vocabSize": 152064,
                },
            }
        )
    )
    assert (arch.id, arch.family, arch.layers, arch.hidden_size) == (
        "Qwen/Qwen2.5-7B-Instruct",
        "dense",
        28,
        3584,
    )
    assert (arch.attention_heads, arch.kv_heads, arch.head_dim, arch.vocab_size) == (28, 4, 128, 152064)
    assert catalog.parameter_count_b(arch) == pytest.approx(7.6, rel=0.01)
    assert arch.published_params_b == 7.6
    assert "spec.model.architecture" in arch.source
    assert "MLP width from parameters" in arch.source
    # The MLP width solved from the count is close to Qwen2.5-7B's real 18944.
    assert arch.intermediate_size == pytest.approx(18944, rel=0.02)


def test_arch_from_spec_with_parameters_only_takes_a_common_shape() -> None:
    arch = catalog.arch_from_spec(_model({"id": "acme/llm-70b", "parameters": "70B"}))
    assert (arch.layers, arch.hidden_size, arch.attention_heads, arch.kv_heads) == (80, 8192, 64, 8)
    assert catalog.parameter_count_b(arch) == pytest.approx(70, rel=0.01)
    assert arch.source.startswith("spec.model.parameters")


def test_arch_from_spec_with_architecture_only_uses_a_35x_mlp() -> None:
    arch = catalog.arch_from_spec(
        _model({"id": "acme/x", "architecture": {"layers": 32, "hiddenSize": 4096, "attentionHeads": 32}})
    )
    assert arch.kv_heads == 32  # not given: no GQA assumed, the larger KV cache
    assert arch.intermediate_size == 14336
    assert arch.published_params_b == pytest.approx(catalog.parameter_count_b(arch), abs=0.01)


def test_arch_from_spec_builds_an_moe_model() -> None:
    arch = catalog.arch_from_spec(
        _model(
            {
                "id": "acme/moe",
                "parameters": "235B",
                "architecture": {
                    "family": "moe",
                    "layers": 94,
                    "hiddenSize": 4096,
                    "attentionHeads": 64,
                    "kvHeads": 4,
                    "headDim": 128,
                    "experts": 128,
                    "activeExperts": 8,
                },
            }
        )
    )
    assert arch.family == "moe"
    assert catalog.parameter_count_b(arch) == pytest.approx(235, rel=0.01)
    assert catalog.active_parameter_count_b(arch) < 30


def test_arch_from_spec_without_a_description_names_the_fields() -> None:
    with pytest.raises(SpecError) as e:
        catalog.arch_from_spec(_model({"id": "acme/unknown"}))
    assert "spec.model.parameters" in str(e.value)
    assert "spec.model.architecture" in str(e.value)
    assert "acme/unknown" in str(e.value)


def test_arch_from_spec_moe_without_parameters_is_refused() -> None:
    with pytest.raises(SpecError, match=r"spec\.model\.parameters"):
        catalog.arch_from_spec(
            _model({"id": "acme/moe", "architecture": {"family": "moe", "layers": 4, "hiddenSize": 1024}})
        )


def test_arch_from_spec_architecture_without_depth_or_count_is_refused() -> None:
    with pytest.raises(SpecError, match=r"spec\.model\.parameters"):
        catalog.arch_from_spec(_model({"id": "acme/x", "architecture": {"hiddenSize": 4096}}))
