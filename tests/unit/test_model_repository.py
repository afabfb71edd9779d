"""The Triton model repository builder: configs that Triton parses, wired the way the backend expects.

Golden files live in tests/golden/model_repository/<case>/<path>. After an intended change to
the templates, regenerate them with

    UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/unit/test_model_repository.py

and review the diff like code.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from deepseek_operator.api.spec import DeploymentSpec, parse_spec
from deepseek_operator.builders.model_repository import (
    ENGINE_REPOSITORY_SOURCE,
    LLMAPI_REPOSITORY_SOURCE,
    RepositoryPaths,
    build_model_repository,
    repository_sources,
    serving_model_name,
)
from deepseek_operator.errors import OperatorError
from deepseek_operator.planning.types import Plan

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden" / "model_repository"
UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"

ENGINE_FILES = {
    "ensemble/config.pbtxt",
    "preprocessing/config.pbtxt",
    "tensorrt_llm/config.pbtxt",
    "postprocessing/config.pbtxt",
}
LLMAPI_FILES = {"tensorrt_llm/config.pbtxt", "tensorrt_llm/1/model.yaml"}


def _spec(model_id: str, path: str, **engine: Any) -> DeploymentSpec:
    return parse_spec(
        {
            "model": {"id": model_id, "source": {"pvc": {"claimName": "deepseek-models", "path": path}}},
            "engine": engine,
        }
    )


def _plan(runtime: str, precision: str, *, tp: int, batch: int, product: str, weights_gib: float) -> Plan:
    return Plan(
        runtime=runtime,
        precision=precision,
        gpu_product=product,
        gpus_per_replica=tp,
        tensor_parallel=tp,
        pipeline_parallel=1,
        nodes_per_replica=1,
        weights_gib=weights_gib,
        estimated_gpu_memory_gib=round(weights_gib / tp + 2.0, 1),
        max_batch_size=batch,
        fabric="nvlink",
    )


CASES: dict[str, tuple[DeploymentSpec, Plan, RepositoryPaths]] = {
    "engine-1gpu-bf16-7b": (
        _spec(
            "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
            "DeepSeek-R1-Distill-Qwen-7B",
            runtime="tensorrt-llm",
            precision="bf16",
        ),
        _plan("tensorrt-llm", "bf16", tp=1, batch=64, product="NVIDIA-H100-80GB-HBM3", weights_gib=14.2),
        RepositoryPaths(
            tokenizer_dir="/models/DeepSeek-R1-Distill-Qwen-7B",
            model_dir="/models/DeepSeek-R1-Distill-Qwen-7B",
            engine_dir="/engines/r1-distill-qwen-7b-bf16-tp1",
        ),
    ),
    "engine-tp2-streaming": (
        _spec(
            "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
            "DeepSeek-R1-Distill-Qwen-32B",
            runtime="tensorrt-llm",
            precision="bf16",
            streaming=True,
            maxQueueDelayMicroseconds=500,
            batchSchedulerPolicy="guaranteed_no_evict",
            enableChunkedContext=True,
            kvCacheMemoryFraction=0.85,
        ),
        _plan("tensorrt-llm", "bf16", tp=2, batch=128, product="NVIDIA-H100-80GB-HBM3", weights_gib=61.0),
        RepositoryPaths(
            tokenizer_dir="/models/DeepSeek-R1-Distill-Qwen-32B",
            model_dir="/models/DeepSeek-R1-Distill-Qwen-32B",
            engine_dir="/engines/r1-distill-qwen-32b-bf16-tp2",
        ),
    ),
    "pytorch-tp8-fp8-r1": (
        _spec(
            "deepseek-ai/DeepSeek-R1",
            "DeepSeek-R1",
            runtime="pytorch",
            precision="fp8",
            maxInputTokens=16384,
            maxOutputTokens=8192,
        ),
        _plan("pytorch", "fp8", tp=8, batch=32, product="NVIDIA-H200", weights_gib=624.9),
        RepositoryPaths(tokenizer_dir="/models/DeepSeek-R1", model_dir="/models/DeepSeek-R1"),
    ),
}


def _build(case: str) -> dict[str, str]:
    return build_model_repository(*CASES[case])


def _parse(text: str) -> Any:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _configs(files: dict[str, str]) -> dict[str, Any]:
    """Model name -> parsed ModelConfig, for every config.pbtxt in a built repository."""
    return {path.split("/")[0]: _parse(text) for path, text in files.items() if path.endswith("config.pbtxt")}


def _params(config: Any) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


# --- golden files ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_golden_files(case: str) -> None:
    files = _build(case)
    case_dir = GOLDEN_DIR / case
    if UPDATE_GOLDEN:
        for old in case_dir.rglob("*"):
            if old.is_file():
                old.unlink()
        for path, text in files.items():
            (case_dir / path).parent.mkdir(parents=True, exist_ok=True)
            (case_dir / path).write_text(text, encoding="utf-8")
    on_disk = {
        str(p.relative_to(case_dir)): p.read_text(encoding="utf-8")
        for p in case_dir.rglob("*")
        if p.is_file()
    }
    assert sorted(on_disk) == sorted(files), "golden files differ in number; run with UPDATE_GOLDEN=1"
    for path, text in files.items():
        assert text == on_disk[path], f"{case}/{path} differs from its golden file; run with UPDATE_GOLDEN=1"


def test_same_input_same_bytes() -> None:
    for case in CASES:
        assert _build(case) == _build(case)


# --- every config is a ModelConfig Triton can read -------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_config_parses_as_model_config(case: str) -> None:
    files = _build(case)
    configs = _configs(files)
    assert configs, "no config.pbtxt built"
    for model, config in configs.items():
        assert config.name == model
        assert config.backend or config.platform


def test_engine_path_files_and_backends() -> None:
    files = _build("engine-1gpu-bf16-7b")
    assert set(files) == ENGINE_FILES
    configs = _configs(files)
    assert configs["ensemble"].platform == "ensemble"
    assert configs["tensorrt_llm"].backend == "tensorrtllm"
    assert configs["preprocessing"].backend == "python"
    assert configs["postprocessing"].backend == "python"


@pytest.mark.parametrize("case", ["engine-1gpu-bf16-7b", "engine-tp2-streaming"])
def test_engine_path_carries_plan_and_spec(case: str) -> None:
    spec, plan, paths = CASES[case]
    configs = _configs(_build(case))
    for config in configs.values():
        assert config.max_batch_size == plan.max_batch_size
    delay = spec.engine.max_queue_delay_microseconds
    assert configs["tensorrt_llm"].dynamic_batching.max_queue_delay_microseconds == delay
    assert configs["preprocessing"].dynamic_batching.max_queue_delay_microseconds == delay
    assert configs["tensorrt_llm"].model_transaction_policy.decoupled is spec.engine.streaming

    trt = _params(configs["tensorrt_llm"])
    assert trt["gpt_model_type"] == "inflight_fused_batching"
    assert trt["gpt_model_path"] == paths.engine_dir
    assert float(trt["kv_cache_free_gpu_mem_fraction"]) == spec.engine.kv_cache_memory_fraction
    assert trt["enable_kv_cache_reuse"] == str(spec.engine.enable_kv_cache_reuse).lower()
    assert trt["batch_scheduler_policy"] == spec.engine.batch_scheduler_policy
    assert trt["enable_chunked_context"] == str(spec.engine.enable_chunked_context).lower()
    assert _params(configs["preprocessing"])["tokenizer_dir"] == paths.tokenizer_dir
    assert _params(configs["postprocessing"])["tokenizer_dir"] == paths.tokenizer_dir


def test_preprocessing_declares_what_the_stock_model_py_looks_up() -> None:
    # The stock preprocessing/1/model.py reads these at load and fails on a missing one.
    config = _configs(_build("engine-1gpu-bf16-7b"))["preprocessing"]
    outputs = {t.name for t in config.output}
    assert {
        "INPUT_ID", "DECODER_INPUT_ID", "REQUEST_INPUT_LEN", "REQUEST_DECODER_INPUT_LEN",
        "BAD_WORDS_IDS", "STOP_WORDS_IDS", "OUT_END_ID", "OUT_PAD_ID",
        "OUT_PROMPT_TABLE_EXTRA_IDS", "PIXEL_VALUES", "IMAGE_SIZES",
    } <= outputs  # fmt: skip
    assert {"EMBEDDING_BIAS_WORDS", "EMBEDDING_BIAS_WEIGHTS"} <= {t.name for t in config.input}
    assert "multimodal_model_path" in _params(config)


# --- the ensemble wiring ---------------------------------------------------------------------


def _tensors(tensors: Any) -> dict[str, Any]:
    return {t.name: t for t in tensors}


@pytest.mark.parametrize("case", ["engine-1gpu-bf16-7b", "engine-tp2-streaming"])
def test_ensemble_steps_are_wired(case: str) -> None:
    configs = _configs(_build(case))
    ensemble = configs["ensemble"]
    ens_inputs = _tensors(ensemble.input)
    ens_outputs = _tensors(ensemble.output)
    produced: dict[str, Any] = {}  # internal tensor -> its declaration in the producing model
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        inputs, outputs = _tensors(model.input), _tensors(model.output)
        for key, source in step.input_map.items():
            assert key in inputs, f"{step.model_name} has no input {key}"
            assert source in ens_inputs or source in produced, f"{source} is read before it is written"
            upstream = ens_inputs.get(source) or produced[source]
            assert upstream.data_type == inputs[key].data_type, f"{source} -> {step.model_name}.{key}"
        required = {name for name, t in inputs.items() if not t.optional}
        assert required <= set(step.input_map), f"{step.model_name} misses {required - set(step.input_map)}"
        for key, target in step.output_map.items():
            assert key in outputs, f"{step.model_name} has no output {key}"
            produced[target] = outputs[key]
    for name, tensor in ens_outputs.items():
        assert name in produced, f"ensemble output {name} is never produced"
        assert produced[name].data_type == tensor.data_type


def test_ensemble_links_text_input_to_text_output() -> None:
    configs = _configs(_build("engine-1gpu-bf16-7b"))
    ensemble = configs["ensemble"]
    assert ensemble.input[0].name == "text_input"
    assert ensemble.input[0].data_type == model_config_pb2.TYPE_STRING
    assert list(ensemble.input[0].dims) == [1]
    max_tokens = _tensors(ensemble.input)["max_tokens"]
    assert max_tokens.data_type == model_config_pb2.TYPE_INT32 and not max_tokens.optional
    for optional in ("temperature", "top_p", "stop_words", "stream"):
        assert _tensors(ensemble.input)[optional].optional
    pre, trt, post = ensemble.ensemble_scheduling.step
    assert (pre.model_name, trt.model_name, post.model_name) == (
        "preprocessing",
        "tensorrt_llm",
        "postprocessing",
    )
    assert pre.input_map["QUERY"] == "text_input"
    assert pre.input_map["REQUEST_OUTPUT_LEN"] == "max_tokens"
    assert trt.input_map["input_ids"] == pre.output_map["INPUT_ID"]
    assert trt.input_map["streaming"] == "stream"
    assert post.input_map["TOKENS_BATCH"] == trt.output_map["output_ids"]
    assert post.input_map["SEQUENCE_LENGTH"] == trt.output_map["sequence_length"]
    assert post.output_map["OUTPUT"] == "text_output"


# --- the LLM-API (PyTorch) path --------------------------------------------------------------


def test_llmapi_files_and_config() -> None:
    files = _build("pytorch-tp8-fp8-r1")
    assert set(files) == LLMAPI_FILES
    config = _configs(files)["tensorrt_llm"]
    assert config.backend == "python"
    # Stated in both files, equal, so that model.py's auto-complete accepts them and Triton
    # started with --disable-auto-complete-config still sees them.
    triton = yaml.safe_load(files["tensorrt_llm/1/model.yaml"])["triton_config"]
    assert config.max_batch_size == triton["max_batch_size"] == 0
    assert config.model_transaction_policy.decoupled is triton["decoupled"] is False
    assert {"text_input", "sampling_param_max_tokens", "streaming"} <= set(_tensors(config.input))
    assert "text_output" in _tensors(config.output)


def test_llmapi_model_yaml_carries_plan_and_limits() -> None:
    spec, plan, paths = CASES["pytorch-tp8-fp8-r1"]
    model = yaml.safe_load(_build("pytorch-tp8-fp8-r1")["tensorrt_llm/1/model.yaml"])
    assert model["model"] == paths.model_dir
    assert model["backend"] == "pytorch"
    assert model["tensor_parallel_size"] == 8 == plan.tensor_parallel
    assert model["pipeline_parallel_size"] == 1
    assert model["max_batch_size"] == plan.max_batch_size
    assert model["max_input_len"] == 16384
    assert model["max_seq_len"] == 16384 + 8192
    assert model["max_num_tokens"] == 16384  # no chunked prefill: a whole prompt fits one step
    assert model["kv_cache_config"] == {
        "free_gpu_memory_fraction": spec.engine.kv_cache_memory_fraction,
        "enable_block_reuse": True,
    }
    assert model["enable_chunked_prefill"] is False
    assert model["scheduler_config"] == {"capacity_scheduler_policy": "MAX_UTILIZATION"}
    assert model["triton_config"] == {"max_batch_size": 0, "decoupled": False}


# --- table tests: each spec value reaches the file -------------------------------------------


def _engine_case(**engine: Any) -> tuple[dict[str, Any], dict[str, str]]:
    base_spec, plan, paths = CASES["engine-1gpu-bf16-7b"]
    spec = replace(base_spec, engine=replace(base_spec.engine, **engine))
    configs = _configs(build_model_repository(spec, plan, paths))
    return configs, _params(configs["tensorrt_llm"])


def _llmapi_case(**engine: Any) -> dict[str, Any]:
    base_spec, plan, paths = CASES["pytorch-tp8-fp8-r1"]
    spec = replace(base_spec, engine=replace(base_spec.engine, **engine))
    model: dict[str, Any] = yaml.safe_load(
        build_model_repository(spec, plan, paths)["tensorrt_llm/1/model.yaml"]
    )
    return model


@pytest.mark.parametrize("delay", [0, 100, 2500, 1_000_000])
def test_queue_delay(delay: int) -> None:
    configs, _ = _engine_case(max_queue_delay_microseconds=delay)
    assert configs["tensorrt_llm"].dynamic_batching.max_queue_delay_microseconds == delay
    assert configs["preprocessing"].dynamic_batching.max_queue_delay_microseconds == delay


@pytest.mark.parametrize(
    ("policy", "llmapi_policy"),
    [("max_utilization", "MAX_UTILIZATION"), ("guaranteed_no_evict", "GUARANTEED_NO_EVICT")],
)
def test_batch_scheduler_policy(policy: str, llmapi_policy: str) -> None:
    assert _engine_case(batch_scheduler_policy=policy)[1]["batch_scheduler_policy"] == policy
    scheduler = _llmapi_case(batch_scheduler_policy=policy)["scheduler_config"]
    assert scheduler["capacity_scheduler_policy"] == llmapi_policy


@pytest.mark.parametrize(("reuse", "text"), [(True, "true"), (False, "false")])
def test_kv_cache_reuse(reuse: bool, text: str) -> None:
    assert _engine_case(enable_kv_cache_reuse=reuse)[1]["enable_kv_cache_reuse"] == text
    assert _llmapi_case(enable_kv_cache_reuse=reuse)["kv_cache_config"]["enable_block_reuse"] is reuse


@pytest.mark.parametrize(("chunked", "text"), [(True, "true"), (False, "false")])
def test_chunked_context(chunked: bool, text: str) -> None:
    assert _engine_case(enable_chunked_context=chunked)[1]["enable_chunked_context"] == text
    model = _llmapi_case(enable_chunked_context=chunked)
    assert model["enable_chunked_prefill"] is chunked
    # With chunks a prompt may span steps, so the step budget stays at the LLM-API default.
    assert model["max_num_tokens"] == (8192 if chunked else 16384)


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.85, 0.9, 0.99])
def test_kv_cache_fraction(fraction: float) -> None:
    assert (
        float(_engine_case(kv_cache_memory_fraction=fraction)[1]["kv_cache_free_gpu_mem_fraction"])
        == fraction
    )
    assert (
        _llmapi_case(kv_cache_memory_fraction=fraction)["kv_cache_config"]["free_gpu_memory_fraction"]
        == fraction
    )


@pytest.mark.parametrize("streaming", [True, False])
def test_streaming_is_decoupled_mode(streaming: bool) -> None:
    configs, _ = _engine_case(streaming=streaming)
    assert configs["tensorrt_llm"].model_transaction_policy.decoupled is streaming
    base_spec, plan, paths = CASES["pytorch-tp8-fp8-r1"]
    spec = replace(base_spec, engine=replace(base_spec.engine, streaming=streaming))
    files = build_model_repository(spec, plan, paths)
    assert yaml.safe_load(files["tensorrt_llm/1/model.yaml"])["triton_config"]["decoupled"] is streaming
    assert _parse(files["tensorrt_llm/config.pbtxt"]).model_transaction_policy.decoupled is streaming


@pytest.mark.parametrize(("max_input", "expected"), [(1024, 8192), (8192, 8192), (32768, 32768)])
def test_llmapi_step_budget_fits_the_longest_prompt(max_input: int, expected: int) -> None:
    assert (
        _llmapi_case(max_input_tokens=max_input, enable_chunked_context=False)["max_num_tokens"] == expected
    )


def test_odd_paths_are_quoted() -> None:
    spec, plan, _ = CASES["engine-1gpu-bf16-7b"]
    odd = 'C:\\weird "dir"/tok'
    paths = RepositoryPaths(tokenizer_dir=odd, model_dir=odd, engine_dir=odd + "/engine")
    configs = _configs(build_model_repository(spec, plan, paths))
    assert _params(configs["preprocessing"])["tokenizer_dir"] == odd
    assert _params(configs["tensorrt_llm"])["gpt_model_path"] == odd + "/engine"
    spec_pt, plan_pt, _ = CASES["pytorch-tp8-fp8-r1"]
    model = yaml.safe_load(build_model_repository(spec_pt, plan_pt, paths)["tensorrt_llm/1/model.yaml"])
    assert model["model"] == odd


# --- sources and refusals --------------------------------------------------------------------


def test_repository_sources() -> None:
    assert (
        repository_sources("tensorrt-llm")
        == ENGINE_REPOSITORY_SOURCE
        == "/app/all_models/inflight_batcher_llm"
    )
    assert repository_sources("pytorch") == LLMAPI_REPOSITORY_SOURCE == "/app/all_models/llmapi"
    assert serving_model_name("tensorrt-llm") == "ensemble"
    assert serving_model_name("pytorch") == "tensorrt_llm"
    with pytest.raises(OperatorError):
        repository_sources("vllm")
    with pytest.raises(OperatorError):
        serving_model_name("auto")


def test_refuses_unknown_runtime_and_missing_paths() -> None:
    spec, plan, paths = CASES["engine-1gpu-bf16-7b"]
    with pytest.raises(OperatorError, match="runtime"):
        build_model_repository(spec, replace(plan, runtime="auto"), paths)
    with pytest.raises(OperatorError, match="engine_dir"):
        build_model_repository(spec, plan, replace(paths, engine_dir=""))
    spec_pt, plan_pt, paths_pt = CASES["pytorch-tp8-fp8-r1"]
    with pytest.raises(OperatorError, match="model_dir"):
        build_model_repository(spec_pt, plan_pt, replace(paths_pt, model_dir=""))
