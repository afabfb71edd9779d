"""The Triton model repository a serving pod loads: spec + plan -> ``{relative path: file content}``.

Two layouts, one per ``plan.runtime``:

- ``tensorrt-llm`` (engine path): the TensorRT-LLM backend's ``inflight_batcher_llm``
  repository, ``ensemble`` chaining ``preprocessing`` (tokenizer, Python) ->
  ``tensorrt_llm`` (the engine, C++ ``tensorrtllm`` backend) -> ``postprocessing``
  (detokenizer, Python). Clients call ``ensemble`` with ``text_input`` and
  ``max_tokens`` and read ``text_output``.
- ``pytorch`` (LLM-API path): the ``llmapi`` repository, one Python model
  ``tensorrt_llm`` whose ``1/model.yaml`` holds the ``tensorrt_llm.LLM`` arguments.
  Clients call ``tensorrt_llm`` with ``text_input`` and ``sampling_param_max_tokens``
  (not ``max_tokens``: the stock ``helpers.py`` reads ``sampling_param_*`` inputs only).

Only the configuration files are built here. The Python models' code (``1/model.py``
and friends) comes from the serving image itself (:func:`repository_sources`), so the
code always matches the TensorRT-LLM version of the image; an init container copies
that folder and overlays these files on it.

The configs are modelled on the stock ones (NVIDIA/TensorRT-LLM,
``triton_backend/all_models/inflight_batcher_llm/*/config.pbtxt`` and
``triton_backend/all_models/llmapi/tensorrt_llm/{config.pbtxt,1/model.yaml}``), trimmed to
text generation; ``tritonserver:25.10-trtllm-python-py3`` ships TensorRT-LLM 1.0.0 (Triton's
release compatibility matrix). Tensors the stock ``model.py`` files look up at load stay
declared, since a missing one fails the model.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from deepseek_operator.api.spec import DeploymentSpec
from deepseek_operator.errors import OperatorError
from deepseek_operator.images import default_profile, profile_for
from deepseek_operator.planning.types import Plan

TEMPLATES_DIR = Path(__file__).parent / "templates"

# Where the stock model folders live inside the image, which of them a repository needs, and
# which parameters each requires: the image's profile (deepseek_operator/images/<yy.mm>.yaml,
# each fact with its upstream source). Images before 25.01 have no /app (tensorrtllm_backend
# issues #721, #739): the init container checks the folder exists and fails with a clear message
# rather than serve an empty repository.
ENGINE_REPOSITORY_SOURCE = default_profile().engine_repository
LLMAPI_REPOSITORY_SOURCE = default_profile().llmapi_repository

ENGINE_RUNTIME = "tensorrt-llm"
PYTORCH_RUNTIME = "pytorch"

# The tokenizer models run on CPU; a few instances keep tokenization off the critical path
# when many requests arrive at once (each instance holds its own tokenizer, a few MB).
TOKENIZER_INSTANCES = 4
# TensorRT-LLM's LLM-API default for max_num_tokens; without chunked prefill a whole prompt
# must fit in one step, so the limit is raised to the longest prompt the spec allows.
DEFAULT_MAX_NUM_TOKENS = 8192
# Requests the tensorrt_llm model queues beyond a full batch, in batches: past it the executor
# refuses new requests (clients see an error and back off) rather than queueing without bound.
QUEUED_BATCHES = 4

_ENGINE_TEMPLATES = {
    "ensemble/config.pbtxt": "ensemble.pbtxt.j2",
    "preprocessing/config.pbtxt": "preprocessing.pbtxt.j2",
    "tensorrt_llm/config.pbtxt": "tensorrt_llm.pbtxt.j2",
    "postprocessing/config.pbtxt": "postprocessing.pbtxt.j2",
}
_LLMAPI_TEMPLATES = {
    "tensorrt_llm/config.pbtxt": "llmapi.pbtxt.j2",
    "tensorrt_llm/1/model.yaml": "llmapi_model.yaml.j2",
}


@dataclass(frozen=True)
class RepositoryPaths:
    """In-container paths the Triton configs point at; the caller decides the mounts.

    ``engine_dir``: the built TensorRT engine (engine path only; empty on the PyTorch path).
    ``tokenizer_dir``: the Hugging Face checkpoint folder, which holds the tokenizer.
    ``model_dir``: the Hugging Face checkpoint folder the PyTorch path loads.
    """

    tokenizer_dir: str
    model_dir: str
    engine_dir: str = ""


def repository_sources(runtime: str, image: str = "") -> str:
    """The folder inside the serving image (``image``; the default one when empty) holding the
    stock model folders for ``runtime``.

    Copy only :func:`repository_models` out of it (each carries its Python model's
    ``1/model.py``), then write the files of :func:`build_model_repository` over them.
    """
    profile = profile_for(image).profile if image else default_profile()
    return profile.repository_source(runtime)


def repository_models(runtime: str, image: str = "") -> tuple[str, ...]:
    """The model folders a repository for ``runtime`` takes from the image, and no others: the
    image's folder also holds unfilled stock models (``tensorrt_llm_bls``) that stop tritonserver."""
    profile = profile_for(image).profile if image else default_profile()
    if runtime not in profile.repository_models:
        raise OperatorError(f"unknown runtime {runtime!r}; expected {ENGINE_RUNTIME} or {PYTORCH_RUNTIME}")
    return profile.repository_models[runtime]


def serving_model_name(runtime: str) -> str:
    """The Triton model clients call for ``runtime`` (``/v2/models/<name>/generate``, readiness)."""
    if runtime == ENGINE_RUNTIME:
        return "ensemble"
    if runtime == PYTORCH_RUNTIME:
        return "tensorrt_llm"
    raise OperatorError(f"unknown runtime {runtime!r}; expected {ENGINE_RUNTIME} or {PYTORCH_RUNTIME}")


def build_model_repository(spec: DeploymentSpec, plan: Plan, paths: RepositoryPaths) -> dict[str, str]:
    """Relative file path inside the Triton model repository -> file content.

    Pure: the same spec, plan and paths always give the same files, byte for byte.
    Raises :class:`OperatorError` for a runtime it does not know or a path missing
    for that runtime.
    """
    if plan.runtime == ENGINE_RUNTIME:
        _require(paths.engine_dir, "engine_dir", plan.runtime)
        _require(paths.tokenizer_dir, "tokenizer_dir", plan.runtime)
        templates = _ENGINE_TEMPLATES
    elif plan.runtime == PYTORCH_RUNTIME:
        _require(paths.model_dir, "model_dir", plan.runtime)
        templates = _LLMAPI_TEMPLATES
    else:
        raise OperatorError(
            f"unknown runtime {plan.runtime!r}; expected {ENGINE_RUNTIME} or {PYTORCH_RUNTIME}"
        )
    context = _context(spec, plan, paths)
    env = _environment()
    return {path: env.get_template(name).render(context) for path, name in templates.items()}


def _require(value: str, name: str, runtime: str) -> None:
    if not value:
        raise OperatorError(f"RepositoryPaths.{name} is required for the {runtime} runtime")


def _context(spec: DeploymentSpec, plan: Plan, paths: RepositoryPaths) -> dict[str, Any]:
    engine = spec.engine
    max_num_tokens = (
        DEFAULT_MAX_NUM_TOKENS
        if engine.enable_chunked_context
        else max(DEFAULT_MAX_NUM_TOKENS, engine.max_input_tokens)
    )
    return {
        "model_id": spec.model.id,
        "plan": plan,
        "paths": paths,
        "max_batch_size": plan.max_batch_size,
        "max_queue_size": QUEUED_BATCHES * plan.max_batch_size,
        "max_queue_delay_microseconds": engine.max_queue_delay_microseconds,
        "decoupled": engine.streaming,
        "kv_cache_free_gpu_mem_fraction": engine.kv_cache_memory_fraction,
        "enable_kv_cache_reuse": engine.enable_kv_cache_reuse,
        "enable_chunked_context": engine.enable_chunked_context,
        "batch_scheduler_policy": engine.batch_scheduler_policy,
        "max_input_len": engine.max_input_tokens,
        "max_seq_len": engine.max_input_tokens + engine.max_output_tokens,
        "max_num_tokens": max_num_tokens,
        "tokenizer_instances": TOKENIZER_INSTANCES,
    }


def _pbtxt_str(value: object) -> str:
    """A protobuf text-format string literal (quotes included)."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _yaml_str(value: object) -> str:
    """A YAML double-quoted scalar; JSON string syntax is a subset of it."""
    return json.dumps(str(value))


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _number(value: float) -> str:
    """Shortest text that reads back as the same float (0.9, not 0.9000000000000001)."""
    return repr(float(value))


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["pbtxt_str"] = _pbtxt_str
    env.filters["yaml_str"] = _yaml_str
    env.filters["flag"] = _flag
    env.filters["number"] = _number
    return env
