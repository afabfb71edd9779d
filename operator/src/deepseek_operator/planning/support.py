"""What the serving image can load (pure): runtime path, precisions and GPU generation, from its profile.

A plan may only choose what the chosen runtime path of the image's TensorRT-LLM can actually
load; everything else is refused here with the reason, the source, and the alternative. A model
outside the catalog (no known Hugging Face architecture) is not checked: the profile has nothing
to say about it.
"""

from __future__ import annotations

from deepseek_operator.api.spec import DeploymentSpec
from deepseek_operator.errors import SpecError
from deepseek_operator.images import CHECKPOINT, ArchSupport, ImageProfile
from deepseek_operator.planning.types import GPUType, ModelArch

RUNTIMES = ("tensorrt-llm", "pytorch")


def _paths(profile: ImageProfile, hf: str) -> str:
    found = [r for r in RUNTIMES if profile.support(r, hf)]
    return " and ".join(found) if found else "neither runtime path"


def choose_runtime(spec: DeploymentSpec, arch: ModelArch, profile: ImageProfile) -> str:
    """``spec.engine.runtime`` with ``auto`` resolved against the image's profile.

    ``auto``: the PyTorch (LLM API) path when it supports the architecture and the model is MoE
    or comes from a uri (nothing to build an engine from in place) or the engine path cannot
    build it; else the engine path. Raises :class:`SpecError` naming ``spec.engine.runtime`` when
    the chosen (or every) path of the image cannot load the architecture.
    """
    hf = arch.hf_architecture
    requested = spec.engine.runtime
    if not hf:  # outside the catalog: the profile cannot judge it
        if requested != "auto":
            return requested
        return "pytorch" if arch.family == "moe" or spec.model.source.uri else "tensorrt-llm"
    py, eng = profile.support("pytorch", hf), profile.support("tensorrt-llm", hf)
    if requested != "auto":
        if profile.support(requested, hf) is None:
            raise SpecError(
                f"spec.engine.runtime: {requested} cannot load {arch.id} ({hf}) in {profile.label}: "
                f"its supported-models list has {hf} on {_paths(profile, hf)}. "
                + _alternative(profile, hf, arch)
            )
        return requested
    if py is not None and (arch.family == "moe" or spec.model.source.uri or eng is None):
        return "pytorch"
    if eng is not None:
        return "tensorrt-llm"
    raise SpecError(
        f"spec.model.id: {arch.id} ({hf}) cannot be served by {profile.label} (spec.engine.image "
        f"{spec.engine.image}): neither its PyTorch path nor its engine path supports {hf}. "
        + _alternative(profile, hf, arch)
    )


def _alternative(profile: ImageProfile, hf: str, arch: ModelArch) -> str:
    found = [r for r in RUNTIMES if profile.support(r, hf)]
    if found:
        return f"Use spec.engine.runtime {found[0]} (or auto)."
    return (
        f"Use a tritonserver image newer than {profile.release} whose TensorRT-LLM lists {hf} (and that "
        "the operator has a profile for), or another model."
    )


def gpu_problem(
    arch: ModelArch, support: ArchSupport | None, gpu: GPUType, runtime: str, profile: ImageProfile
) -> str:
    """Why ``gpu`` cannot run ``arch`` on ``runtime`` ("" when it can)."""
    if support is None or support.runs_on(gpu.compute_major, gpu.compute_minor):
        return ""
    return (
        f"{gpu.product} is {gpu.family} (compute capability {gpu.compute_major}.{gpu.compute_minor}); "
        f"{arch.id} needs {support.generation} on the {runtime} path of {profile.label} "
        f"(source: {support.source})"
    )


def allowed_precisions(
    arch: ModelArch, support: ArchSupport | None, requested: str, runtime: str, profile: ImageProfile
) -> tuple[str, ...]:
    """The precisions the runtime path can load for ``arch`` (empty: no limit known).

    ``checkpoint`` in the profile means the path loads the checkpoint as it is: the model's
    native precision only. Raises :class:`SpecError` naming ``spec.engine.precision`` when an
    explicit precision is not among them, with the ones that are.
    """
    if support is None:
        return ()
    allowed = tuple(
        dict.fromkeys(arch.native_precision if p == CHECKPOINT else p for p in support.precisions)
    )
    if requested == "auto" or requested in allowed:
        return allowed
    if CHECKPOINT in support.precisions:
        how = (
            f"it loads the checkpoint as it is ({arch.native_precision}) and nothing in the image converts "
            "it at load time"
        )
        other = [r for r in RUNTIMES if r != runtime and profile.support(r, arch.hf_architecture)]
        alt = (
            f"; or use spec.engine.runtime {other[0]}, which converts and quantizes"
            if other and requested in (profile.support(other[0], arch.hf_architecture) or support).precisions
            else "; or point spec.model.source at a checkpoint already in it, under its own model id"
        )
    else:
        how = f"its converter builds only {', '.join(allowed)}"
        alt = ""
    raise SpecError(
        f"spec.engine.precision: {requested} cannot be loaded for {arch.id} by the {runtime} path of "
        f"{profile.label}: {how} (source: {support.source}). Use precision auto or "
        f"{' or '.join(allowed)}{alt}"
    )
