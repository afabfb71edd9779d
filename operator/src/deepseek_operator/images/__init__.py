"""Image profiles: what each supported serving image holds, one YAML file per image release.

A profile (``images/<yy.mm>.yaml``) states, each with its upstream source, the TensorRT-LLM
version inside the image, the paths the operator uses in it, the model folders to copy, the
parameters the backend requires, what each runtime path can load (architectures, precisions,
GPU generations) and what is installed. Builders and planning read it through
:func:`profile_for`; an image tag without a profile gets the nearest older one, marked not
verified.

Pure: reading package data, no cluster, no clock.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deepseek_operator.errors import OperatorError

PROFILES_DIR = Path(__file__).parent
CHECKPOINT = "checkpoint"  # a precision entry meaning "what the checkpoint holds, loaded as it is"
_RELEASE = re.compile(r":(\d{2})\.(\d{2})-trtllm-python-py3$")


@dataclass(frozen=True)
class ArchSupport:
    """One architecture on one runtime path of an image: what it can load and where."""

    architecture: str  # the Hugging Face config.json `architectures` entry
    precisions: tuple[str, ...]  # precisions the path can produce; ("checkpoint",): as shipped
    min_compute: tuple[int, int] | None  # oldest compute capability it runs on; None: no limit known
    gpus: str  # the GPUs the source names, for messages
    converter: str  # engine path: checkpoint converter under the examples folder
    source: str

    def runs_on(self, major: int, minor: int) -> bool:
        """Whether a GPU of compute capability ``major.minor`` is new enough."""
        return self.min_compute is None or (major, minor) >= self.min_compute

    @property
    def generation(self) -> str:
        """The oldest GPU generation, in words ("Hopper or newer (H100, ...)")."""
        if self.min_compute is None:
            return "any GPU"
        name = _GENERATIONS.get(
            self.min_compute, f"compute capability {self.min_compute[0]}.{self.min_compute[1]}"
        )
        return f"{name} or newer ({self.gpus})" if self.gpus else f"{name} or newer"


_GENERATIONS = {(8, 0): "Ampere", (8, 9): "Ada Lovelace", (9, 0): "Hopper", (10, 0): "Blackwell"}


@dataclass(frozen=True)
class ImageProfile:
    """The facts about one serving image release; ``sources`` holds each fact's upstream source."""

    release: str  # "25.10"
    image: str
    tensorrt_llm_version: str
    upstream_tag: str
    engine_repository: str
    llmapi_repository: str
    examples_dir: str
    launch_script: str
    mpi_prefix: str  # OpenMPI's installation folder (mpirun --prefix: where remote ranks find orted)
    quantize_script: str
    repository_models: dict[str, tuple[str, ...]]  # runtime -> model folders to copy
    required_parameters: dict[str, tuple[str, ...]]  # model -> parameters read without a default
    runtimes: dict[str, dict[str, ArchSupport]]  # runtime -> architecture -> support
    installed: dict[str, bool]
    sources: dict[str, str]

    def support(self, runtime: str, architecture: str) -> ArchSupport | None:
        """How ``runtime`` supports ``architecture`` in this image, or None when it does not."""
        return self.runtimes.get(runtime, {}).get(architecture)

    def repository_source(self, runtime: str) -> str:
        """The folder in the image holding the stock model folders of ``runtime``."""
        if runtime == "tensorrt-llm":
            return self.engine_repository
        if runtime == "pytorch":
            return self.llmapi_repository
        raise OperatorError(f"unknown runtime {runtime!r}; expected tensorrt-llm or pytorch")

    @property
    def label(self) -> str:
        """ "tritonserver 25.10 (TensorRT-LLM 1.0.0)", for messages."""
        return f"tritonserver {self.release} (TensorRT-LLM {self.tensorrt_llm_version})"


@dataclass(frozen=True)
class ProfileMatch:
    """The profile used for an image and whether it was verified against that image's tag."""

    profile: ImageProfile
    verified: bool
    note: str  # empty when verified; else what was used and why


def _fact(doc: dict[str, Any], key: str, where: str) -> tuple[Any, str]:
    entry = doc.get(key)
    if not isinstance(entry, dict) or "value" not in entry or not str(entry.get("source") or "").strip():
        raise OperatorError(f"image profile {where}: {key} needs a value and a non-empty source")
    return entry["value"], str(entry["source"]).strip()


def _compute(text: object) -> tuple[int, int] | None:
    if text in (None, ""):
        return None
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def _runtimes(doc: dict[str, Any], where: str) -> tuple[dict[str, dict[str, ArchSupport]], dict[str, str]]:
    out: dict[str, dict[str, ArchSupport]] = {}
    sources: dict[str, str] = {}
    for runtime, body in (doc.get("runtimes") or {}).items():
        table: dict[str, ArchSupport] = {}
        for arch, entry in (body.get("architectures") or {}).items():
            source = str(entry.get("source") or "").strip()
            if not source:
                raise OperatorError(f"image profile {where}: runtimes.{runtime}.{arch} needs a source")
            table[arch] = ArchSupport(
                architecture=arch,
                precisions=tuple(entry.get("precisions") or ()),
                min_compute=_compute(entry.get("min_compute")),
                gpus=str(entry.get("gpus") or ""),
                converter=str(entry.get("converter") or ""),
                source=source,
            )
            sources[f"runtimes.{runtime}.{arch}"] = source
        out[str(runtime)] = table
    return out, sources


def parse_profile(text: str, where: str) -> ImageProfile:
    """A profile from its YAML text; :class:`OperatorError` naming the fact that lacks a source."""
    doc = yaml.safe_load(text) or {}
    sources: dict[str, str] = {}

    def fact(section: str, key: str) -> Any:
        value, source = _fact(doc.get(section) or {}, key, where)
        sources[f"{section}.{key}"] = source
        return value

    def top(key: str) -> Any:
        value, source = _fact(doc, key, where)
        sources[key] = source
        return value

    runtimes, runtime_sources = _runtimes(doc, where)
    sources.update(runtime_sources)
    models = doc.get("repository_models") or {}
    params = doc.get("required_parameters") or {}
    return ImageProfile(
        release=str(doc["release"]),
        image=str(doc["image"]),
        tensorrt_llm_version=str(fact("versions", "tensorrt_llm")),
        upstream_tag=str(fact("versions", "upstream_tag")),
        engine_repository=str(fact("paths", "engine_repository")),
        llmapi_repository=str(fact("paths", "llmapi_repository")),
        examples_dir=str(fact("paths", "examples")),
        launch_script=str(fact("paths", "launch_script")),
        mpi_prefix=str(fact("paths", "mpi_prefix")),
        quantize_script=str(top("quantize_script")),
        repository_models={k: tuple(fact("repository_models", k)) for k in models},
        required_parameters={k: tuple(fact("required_parameters", k)) for k in params},
        runtimes=runtimes,
        installed={str(k): bool(v) for k, v in dict(top("installed")).items()},
        sources=sources,
    )


def _release_key(release: str) -> tuple[int, int]:
    year, _, month = release.partition(".")
    return int(year), int(month)


@functools.cache
def profiles() -> dict[str, ImageProfile]:
    """Every profile shipped, by release ("25.10")."""
    out = {}
    for path in sorted(PROFILES_DIR.glob("*.yaml")):
        p = parse_profile(path.read_text(encoding="utf-8"), path.name)
        out[p.release] = p
    if not out:
        raise OperatorError(f"no image profiles in {PROFILES_DIR}")
    return out


def default_profile() -> ImageProfile:
    """The newest profile: the one of the default serving image."""
    return profiles()[max(profiles(), key=_release_key)]


@functools.cache
def profile_for(image: str) -> ProfileMatch:
    """The profile of ``image``: its own when shipped; else the nearest older one (or the oldest,
    for an image older than every profile; the default, for an image whose tag is not a
    ``<yy.mm>-trtllm-python-py3`` one), marked not verified with a note saying which was used."""
    table = profiles()
    m = _RELEASE.search(image.strip())
    if m is None:
        p = default_profile()
        return ProfileMatch(
            p,
            False,
            f"image {image} is not a tritonserver <yy.mm>-trtllm-python-py3 tag; the {p.release} profile "
            f"({p.label}) was used and was not verified against it",
        )
    release = f"{m[1]}.{m[2]}"
    if release in table:
        return ProfileMatch(table[release], True, "")
    key = _release_key(release)
    older = [r for r in table if _release_key(r) < key]
    chosen = max(older, key=_release_key) if older else min(table, key=_release_key)
    p = table[chosen]
    return ProfileMatch(
        p,
        False,
        f"image {image} has no profile; the nearest {'older' if older else 'newer'} one, {p.release} "
        f"({p.label}), was used and was not verified against that tag",
    )
