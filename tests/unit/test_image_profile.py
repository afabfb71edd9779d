"""The image profile and what builders and planning take from it: one test per finding of issue 10.

Each test names the upstream file its expectation comes from (NVIDIA/TensorRT-LLM at v1.0.0, the
TensorRT-LLM of tritonserver 25.10; triton-inference-server/tensorrtllm_backend v1.0.0). Every one
of them failed on the code before the profile existed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from deepseek_operator.api.spec import DeploymentSpec, parse_spec
from deepseek_operator.builders import model_repository as repo
from deepseek_operator.builders import multinode, serving
from deepseek_operator.errors import OperatorError
from deepseek_operator.images import default_profile, parse_profile, profile_for, profiles
from deepseek_operator.planning import catalog
from deepseek_operator.planning.inventory import build_inventory
from deepseek_operator.planning.placement import Refusal, catalog_nodes, plan_placement
from deepseek_operator.planning.types import Plan
from deepseek_operator.sim.gpus import node_manifests, parse_gpu_spec

OWNER: dict[str, Any] = {
    "apiVersion": "serving.deepseek.ai/v1alpha1",
    "kind": "DeepSeekDeployment",
    "metadata": {"name": "m", "namespace": "llm", "uid": "00000000-0000-0000-0000-000000000001"},
}


def _spec(model: str, source: dict[str, Any] | None = None, **extra: Any) -> DeploymentSpec:
    raw: dict[str, Any] = {"model": {"id": model, "source": source or {"pvc": {"claimName": "store"}}}}
    raw.update(extra)
    return parse_spec(raw)


def _cluster(text: str) -> Any:
    nodes = node_manifests(parse_gpu_spec(text), 1)
    for n in nodes:
        n.setdefault("status", {})["conditions"] = [{"type": "Ready", "status": "True"}]
    return build_inventory(nodes, [])


def _place(spec: DeploymentSpec, nodes: Any = None) -> Plan | Refusal:
    return plan_placement(spec, catalog.arch_from_spec(spec.model), nodes or catalog_nodes())


def _plan(spec: DeploymentSpec, nodes: Any = None) -> Plan:
    plan = _place(spec, nodes)
    assert isinstance(plan, Plan), plan
    return plan


# --- the profile itself -------------------------------------------------------------------------


def test_every_fact_of_every_profile_has_a_source() -> None:
    """A profile is data with sources; the 25.10 one says which TensorRT-LLM it holds (Triton's
    release compatibility matrix: 25.10 has TensorRT-LLM 1.0.0) and which tag was read."""
    assert "25.10" in profiles()
    p = profiles()["25.10"]
    assert (p.tensorrt_llm_version, p.upstream_tag) == ("1.0.0", "v1.0.0")
    for key in ("versions.tensorrt_llm", "paths.examples", "required_parameters.tensorrt_llm", "installed"):
        assert p.sources[key].strip(), key
    assert all(s.source for table in p.runtimes.values() for s in table.values())


def test_a_fact_without_a_source_is_refused() -> None:
    text = (Path(repo.__file__).parent.parent / "images" / "25.10.yaml").read_text()
    broken = text.replace(
        "    value: /app/examples\n    source: >-",
        "    value: /app/examples\n    note: >-",
        1,
    )
    assert broken != text
    with pytest.raises(OperatorError, match=r"broken.yaml: examples needs a value and a non-empty source"):
        parse_profile(broken, "broken.yaml")


def test_image_without_a_profile_uses_the_nearest_older_one_unverified() -> None:
    exact = profile_for("nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3")
    assert exact.verified and exact.profile.release == "25.10" and exact.note == ""
    newer = profile_for("nvcr.io/nvidia/tritonserver:26.02-trtllm-python-py3")
    assert not newer.verified and newer.profile.release == "25.10"
    assert "26.02" in newer.note and "not verified" in newer.note and "25.10" in newer.note
    custom = profile_for("registry.local/my-triton:v3")
    assert not custom.verified and "not verified" in custom.note


# --- finding 1: the tensorrt_llm model loads ----------------------------------------------------


def _engine_files(spec: DeploymentSpec | None = None) -> dict[str, str]:
    spec = spec or _spec("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", engine={"runtime": "tensorrt-llm"})
    plan = _plan(spec)
    paths = repo.RepositoryPaths(tokenizer_dir="/models/ckpt", model_dir="/models/ckpt", engine_dir="/e/x")
    return repo.build_model_repository(spec, plan, paths)


def _parse(text: str) -> Any:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_tensorrt_llm_config_declares_every_parameter_the_backend_reads_without_default() -> None:
    """TensorRT-LLM v1.0.0 triton_backend/inflight_batcher_llm/src/model_instance_state.cc:
    getGuidedDecodingConfigFromParams() reads guided_decoding_backend and
    xgrammar_tokenizer_info_path with GetParameter<std::string>, which (model_state.cc) throws
    "Cannot find parameter with name" for an absent key: the model would not load."""
    config = _parse(_engine_files()["tensorrt_llm/config.pbtxt"])
    params = {k: v.string_value for k, v in config.parameters.items()}
    for key in ("guided_decoding_backend", "xgrammar_tokenizer_info_path", "tokenizer_dir", "gpt_model_type"):
        assert key in params, key
    assert params["guided_decoding_backend"] == "" and params["xgrammar_tokenizer_info_path"] == ""
    for key in default_profile().required_parameters["tensorrt_llm"]:
        assert key in params, key


# --- finding 2 and build item 3: the final model repository -------------------------------------

_STOCK_MODELS = ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble", "tensorrt_llm_bls")


def _fake_image_folder(root: Path) -> Path:
    """A stand-in for the image's /app/all_models/inflight_batcher_llm: every stock model folder with
    a config.pbtxt that, like the stock templates, still holds ${...} placeholders (not protobuf
    text), and a 1/ version folder."""
    src = root / "inflight_batcher_llm"
    for model in _STOCK_MODELS:
        (src / model / "1").mkdir(parents=True)
        (src / model / "1" / "model.py").write_text("# stand-in\n")
        (src / model / "config.pbtxt").write_text(
            f'name: "{model}"\nmax_batch_size: ${{triton_max_batch_size}}\n'
        )
    return src


def _assemble(tmp_path: Path, files: dict[str, str], runtime: str) -> Path:
    """Runs the init container's own script against the stand-in folder: the repository it leaves."""
    src = _fake_image_folder(tmp_path / "app")
    config = tmp_path / "config"
    config.mkdir()
    for path, text in files.items():
        (config / path.replace("/", "__")).write_text(text)
    out = tmp_path / "repo"
    out.mkdir()
    script = serving.assemble_script(
        str(src), repo.repository_models(runtime), str(config), str(out), "img:25.10-trtllm-python-py3"
    )
    subprocess.run(["sh", "-c", script], check=True, capture_output=True, timeout=30)
    return out


def test_final_repository_has_only_rendered_models_that_parse_and_declare_what_the_backend_needs(
    tmp_path: Path,
) -> None:
    """TensorRT-LLM v1.0.0 triton_backend/all_models/inflight_batcher_llm/ holds tensorrt_llm_bls,
    whose config.pbtxt is a template (``${triton_max_batch_size}``): copied as it is, tritonserver
    exits "failed to load all models". What the init container leaves must be only the models the
    profile names, each config ModelConfig text with no ``${`` and every parameter the profile says
    its code reads without a default."""
    out = _assemble(tmp_path, _engine_files(), "tensorrt-llm")
    models = sorted(p.name for p in out.iterdir())
    assert models == sorted(default_profile().repository_models["tensorrt-llm"])
    assert "tensorrt_llm_bls" not in models
    required = default_profile().required_parameters
    for config_path in out.rglob("config.pbtxt"):
        text = config_path.read_text()
        assert "${" not in text, config_path
        config = _parse(text)
        assert config.name == config_path.parent.name
        for key in required.get(config.name, ()):
            assert key in config.parameters, (config.name, key)
        assert (config_path.parent / "1").is_dir()


def test_final_llmapi_repository_has_only_its_model(tmp_path: Path) -> None:
    spec = _spec("deepseek-ai/DeepSeek-R1", gpu={"products": ["NVIDIA-H200"]})
    plan = _plan(spec)
    files = repo.build_model_repository(spec, plan, repo.RepositoryPaths("/m", "/m"))
    out = _assemble(tmp_path, files, "pytorch")
    assert sorted(p.name for p in out.iterdir()) == ["tensorrt_llm"]
    assert "${" not in (out / "tensorrt_llm" / "config.pbtxt").read_text()
    _parse((out / "tensorrt_llm" / "config.pbtxt").read_text())


def test_assemble_fails_clearly_when_the_image_lacks_a_model(tmp_path: Path) -> None:
    script = serving.assemble_script(
        str(tmp_path / "nothing"),
        ("tensorrt_llm",),
        str(tmp_path),
        str(tmp_path),
        "img:24.12-trtllm-python-py3",
    )
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "tensorrt_llm" in done.stderr and "25.01 or later" in done.stderr


# --- finding 3: where the engine build Job looks ------------------------------------------------


def _job_env(job: dict[str, Any]) -> dict[str, str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_engine_build_uses_the_triton_images_examples_folder() -> None:
    """tensorrtllm_backend v1.0.0 dockerfile/Dockerfile.triton.trt_llm_backend, final stage:
    ``WORKDIR /app`` then ``COPY tensorrt_llm/examples examples``: /app/examples, not
    /app/tensorrt_llm/examples (that is the tensorrt-llm/release image)."""
    spec = _spec("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", engine={"runtime": "tensorrt-llm"})
    job = serving.build_engine_job(OWNER, spec, _plan(spec))
    assert _job_env(job)["TRTLLM_EXAMPLES"] == "/app/examples"


def test_deepseek_v2_converter_is_the_contrib_one() -> None:
    """TensorRT-LLM v1.0.0 examples/models/contrib/deepseek_v2/convert_checkpoint.py (not core/)."""
    spec = _spec("deepseek-ai/DeepSeek-V2-Lite-Chat", gpu={"products": ["NVIDIA-H100-80GB-HBM3"]})
    plan = _plan(spec)
    script = serving.engine_build_script(spec, plan, serving.layout(spec, plan))
    assert '"$TRTLLM_EXAMPLES/models/contrib/deepseek_v2/convert_checkpoint.py"' in script
    assert "models/core/deepseek_v2" not in script


# --- finding 4: what the image's PyTorch path cannot load ----------------------------------------


def test_v2_lite_takes_the_engine_path_on_25_10() -> None:
    """TensorRT-LLM 1.0.0's docs/source/models/supported-models.md has no DeepseekV2ForCausalLM on
    the PyTorch backend (issue 10; the profile records it); examples/models/contrib/deepseek_v2
    builds it as an engine (BF16 only)."""
    plan = _plan(_spec("deepseek-ai/DeepSeek-V2-Lite-Chat"))
    assert (plan.runtime, plan.precision) == ("tensorrt-llm", "bf16")


def test_v2_lite_on_the_pytorch_path_is_refused_with_the_image_version() -> None:
    """The sample sent V2-Lite to the PyTorch path, whose TensorRT-LLM 1.0.0 (Triton's compatibility
    matrix, 25.10) lacks DeepseekV2ForCausalLM: refused naming the image's TensorRT-LLM and the path
    that works."""
    refusal = _place(_spec("deepseek-ai/DeepSeek-V2-Lite-Chat", engine={"runtime": "pytorch"}))
    assert isinstance(refusal, Refusal) and refusal.reason == "UnsupportedModel"
    assert "spec.engine.runtime" in refusal.message and "TensorRT-LLM 1.0.0" in refusal.message
    assert "25.10" in refusal.message and "tensorrt-llm" in refusal.message


def test_v3_2_is_refused_on_25_10_with_what_it_needs() -> None:
    """DeepseekV32ForCausalLM came to TensorRT-LLM after 1.0 (DOMAIN.md; supported-models.md lists it
    only in later versions) and has no converter in examples/: neither path of 25.10 loads it."""
    refusal = _place(_spec("deepseek-ai/DeepSeek-V3.2", gpu={"products": ["NVIDIA-H200"]}))
    assert isinstance(refusal, Refusal) and refusal.reason == "UnsupportedModel"
    assert "DeepseekV32ForCausalLM" in refusal.message and "newer than 25.10" in refusal.message


def test_v2_lite_sample_plans_on_hopper() -> None:
    """The sample's first product was an A100: contrib/deepseek_v2/README.md says the MLA kernel of
    the engine path runs on Hopper (SM90) only."""
    spec = _spec(
        "deepseek-ai/DeepSeek-V2-Lite-Chat",
        gpu={"products": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"]},
    )
    assert _plan(spec).gpu_product == "NVIDIA-H100-80GB-HBM3"


# --- finding 5: sizing offers only what the path can load ---------------------------------------


@pytest.mark.parametrize(
    ("gpus", "products"),
    [("a100-80gb:2x8", ["NVIDIA-A100-SXM4-80GB"]), ("l40s:4x8", ["NVIDIA-L40S"])],
)
def test_r1_on_pre_hopper_fleets_is_refused_naming_the_generation(gpus: str, products: list[str]) -> None:
    """TensorRT-LLM v1.0.0 examples/models/core/deepseek_v3/README.md lists Hopper and Blackwell GPUs
    only (H100, H20, H200, B200); Ampere (and Ada) are not supported for V3/R1."""
    refusal = _place(_spec("deepseek-ai/DeepSeek-R1", gpu={"products": products}), _cluster(gpus))
    assert isinstance(refusal, Refusal) and refusal.reason == "UnsupportedGPU", refusal
    assert "Hopper or newer" in refusal.message and products[0] in refusal.message
    assert "spec.gpu.products" in refusal.message and "H100" in refusal.message
    assert "distill" in refusal.message


@pytest.mark.parametrize("precision", ["bf16", "int4-awq"])
def test_r1_only_in_its_checkpoints_fp8_on_the_pytorch_path(precision: str) -> None:
    """The PyTorch path loads DeepSeek-R1's FP8 checkpoint as it is; nothing in the image converts it
    (examples/models/core/deepseek_v3/README.md: a 4-bit model needs its own quantized checkpoint)."""
    refusal = _place(_spec("deepseek-ai/DeepSeek-R1", engine={"precision": precision}))
    assert isinstance(refusal, Refusal) and refusal.reason == "UnsupportedModel"
    assert f"spec.engine.precision: {precision}" in refusal.message and "fp8" in refusal.message
    assert _plan(_spec("deepseek-ai/DeepSeek-R1")).precision == "fp8"


def test_distill_on_pytorch_path_is_loaded_in_bf16_and_quantized_only_by_the_engine_path() -> None:
    """The LLM API loads the distill's BF16 checkpoint as it is; examples/quantization/quantize.py
    (engine path) is what makes FP8."""
    uri = {"uri": "hf://deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}
    refusal = _place(_spec("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", uri, engine={"precision": "fp8"}))
    assert isinstance(refusal, Refusal) and "runtime tensorrt-llm" in refusal.message
    auto = _plan(_spec("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", uri, gpu={"products": ["NVIDIA-L40S"]}))
    assert (auto.runtime, auto.precision) == ("pytorch", "bf16")
    engine = _plan(
        _spec(
            "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
            engine={"precision": "fp8", "runtime": "tensorrt-llm"},
            gpu={"products": ["NVIDIA-H100-80GB-HBM3"]},
        )
    )
    assert engine.precision == "fp8"


# --- finding 8 -----------------------------------------------------------------------------------


def test_tensorrt_llm_model_has_a_bounded_queue() -> None:
    """model_instance_state.cc passes dynamic_batching.default_queue_policy.max_queue_size to the
    executor (maxQueueSize); the stock tensorrt_llm/config.pbtxt declares it."""
    config = _parse(_engine_files()["tensorrt_llm/config.pbtxt"])
    assert config.dynamic_batching.default_queue_policy.max_queue_size >= config.max_batch_size > 0


def _r1_two_nodes() -> tuple[DeploymentSpec, Plan]:
    spec = _spec("deepseek-ai/DeepSeek-R1", gpu={"products": ["NVIDIA-H100-80GB-HBM3"]})
    plan = _plan(spec, _cluster("h100:2x8"))
    assert plan.nodes_per_replica == 2
    return spec, plan


def test_multi_node_leader_passes_max_num_tokens() -> None:
    """examples/models/core/deepseek_v3/README.md passes --max_num_tokens to trtllm-serve; without it
    the LLM API's default (8192) would cut a longer prompt the spec allows."""
    spec, plan = _r1_two_nodes()
    command = " ".join(multinode.leader_command(spec, plan))
    assert f"--max_num_tokens {max(8192, spec.engine.max_input_tokens)}" in command


def test_host_memory_holds_the_nodes_share_of_the_weights() -> None:
    """examples/models/core/deepseek_v3/README.md: about 671 GB of FP8 weights; the ranks of a node
    read their share through the page cache, which counts against the pod's memory limit (16 GiB
    per GPU gave 8 ranks 128 GiB for a 321 GB share)."""
    spec, plan = _r1_two_nodes()
    lws = multinode.build_leader_worker_set(OWNER, spec, plan, None)
    leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    gib = int(leader["resources"]["limits"]["memory"].removesuffix("Gi"))
    assert gib >= plan.weights_gib / 2 + 8 * 8


def test_build_job_memory_holds_a_70b_checkpoint() -> None:
    """examples/models/contrib/deepseek_v2/README.md: converting on the CPU took ">= 770GB" for 472 GB
    of BF16 weights; the converters hold the checkpoint whole, so 64 Gi cannot convert 70B."""
    spec = _spec(
        "deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
        engine={"runtime": "tensorrt-llm", "precision": "bf16"},
        gpu={"products": ["NVIDIA-H200"]},
    )
    job = serving.build_engine_job(OWNER, spec, _plan(spec))
    gib = int(job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"][:-2])
    assert gib >= 1.6 * 70.6e9 * 2 / 2**30  # the BF16 checkpoint, whole, with the room V2's README saw


def test_multi_node_service_exposes_only_what_the_leader_declares() -> None:
    """A multi-node leader runs trtllm-serve (examples/models/core/deepseek_v3/README.md: one
    --port, the OpenAI-compatible API): no grpc or Triton metrics port to point a Service at."""
    spec, plan = _r1_two_nodes()
    lws = multinode.build_leader_worker_set(OWNER, spec, plan, None)
    leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    declared = {p["name"] for p in leader["ports"]}
    service = serving.build_service(OWNER, spec, leader_only=True)
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= declared


def test_quantize_reads_a_calibration_dataset_from_the_volume() -> None:
    """TensorRT-LLM v1.0.0 examples/quantization/quantize.py: --calib_dataset is "The huggingface
    dataset name or the local directory of the dataset for calibration", default cnn_dailymail,
    fetched at run time: an air-gapped cluster must be able to point at a folder on the PVC."""
    base = {
        "engine": {"runtime": "tensorrt-llm", "precision": "fp8"},
        "gpu": {"products": ["NVIDIA-H100-80GB-HBM3"]},
    }
    plain = _spec("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", **base)
    offline = _spec(
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        **{**base, "engine": {**base["engine"], "calibrationDataset": "calibration/cnn/"}},
    )
    plan = _plan(plain)
    assert "--calib_dataset" not in serving.engine_build_script(plain, plan, serving.layout(plain, plan))
    script = serving.engine_build_script(offline, plan, serving.layout(offline, plan))
    assert "--qformat fp8 --kv_cache_dtype fp8 --calib_dataset /models/calibration/cnn " in script
    # A different calibration is a different engine and a different revision.
    assert serving.engine_cache_key(offline, plan) != serving.engine_cache_key(plain, plan)
    assert serving.revision_hash(offline, plan) != serving.revision_hash(plain, plan)


def test_an_image_without_a_profile_deploys_and_the_placed_condition_says_so() -> None:
    """Build item 1 of issue 10: an image tag without a profile still deploys, with the nearest
    older profile, and a condition saying it was not verified against that tag."""
    from tests.support.world import World, sample  # noqa: PLC0415

    body = sample()
    body["spec"]["engine"]["image"] = "nvcr.io/nvidia/tritonserver:26.02-trtllm-python-py3"
    w = World(body)
    w.converge()
    placed = {c["type"]: c for c in w.body["status"]["conditions"]}["Placed"]
    assert placed["status"] == "True"
    assert "26.02" in placed["message"] and "25.10" in placed["message"]
    assert "not verified" in placed["message"]
    ready = World(sample())
    ready.converge()
    placed = {c["type"]: c for c in ready.body["status"]["conditions"]}["Placed"]
    assert "not verified" not in placed["message"]
