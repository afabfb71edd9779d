"""``deepseek-operator render``: every object the operator would create, offline, and the model repository."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from deepseek_operator.__main__ import main
from deepseek_operator.sim.tools import repo_root

SAMPLES = repo_root() / "manifests" / "samples"

R1_TWO_NODES = """
apiVersion: serving.deepseek.ai/v1alpha1
kind: DeepSeekDeployment
metadata: {name: r1, namespace: llm}
spec:
  model: {id: deepseek-ai/DeepSeek-R1, source: {pvc: {claimName: model-store, path: deepseek/r1}}}
  gpu: {products: [NVIDIA-H100-80GB-HBM3]}
  replicas: 2
"""


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["render", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _objects(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _repository_files(text: str) -> dict[str, str]:
    """The model repository files printed as comments: ``# --- <path>`` then ``# <line>`` lines."""
    files: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# --- "):
            current = line.removeprefix("# --- ")
            files[current] = []
        elif current is not None and line.startswith("#"):
            files[current].append(line[2:] if line.startswith("# ") else "")
        else:
            current = None
    return {path: "\n".join(lines) + "\n" for path, lines in files.items()}


def test_engine_path_sample_prints_every_object_and_the_repository(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _run(capsys, "-f", str(SAMPLES / "r1-distill-qwen-7b.yaml"), "--gpus", "h100:1x8")
    assert code == 0, err
    objects = _objects(out)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        ["ControllerRevision", "ConfigMap", "Job", "Deployment", "Service", "PodDisruptionBudget"]
    )
    assert all(o["metadata"]["namespace"] == "default" for o in objects)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    affinity = deployment["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == ["NVIDIA-H100-80GB-HBM3"]
    files = _repository_files(out)
    assert sorted(files) == [
        "ensemble/config.pbtxt",
        "postprocessing/config.pbtxt",
        "preprocessing/config.pbtxt",
        "tensorrt_llm/config.pbtxt",
    ]
    config = text_format.Parse(files["tensorrt_llm/config.pbtxt"], model_config_pb2.ModelConfig())
    assert "guided_decoding_backend" in config.parameters
    configmap = next(o for o in objects if o["kind"] == "ConfigMap")
    assert configmap["data"]["tensorrt_llm__config.pbtxt"] == files["tensorrt_llm/config.pbtxt"]
    assert "copied from the image: /app/all_models/inflight_batcher_llm/preprocessing" in out


def test_multi_node_resource_prints_a_leader_worker_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r1.yaml"
    path.write_text(R1_TWO_NODES)
    code, out, err = _run(capsys, "-f", str(path), "--gpus", "h100:2x8")
    assert code == 0, err
    objects = _objects(out)
    lws = next(o for o in objects if o["kind"] == "LeaderWorkerSet")
    assert lws["metadata"]["namespace"] == "llm"
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    service = next(o for o in objects if o["kind"] == "Service")
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    assert "model repository: none" in out


def test_refusal_names_the_gpu_generation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r1.yaml"
    path.write_text(R1_TWO_NODES.replace("NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"))
    code, out, err = _run(capsys, "-f", str(path), "--gpus", "a100-80gb:2x8")
    assert code == 2 and out == ""
    assert "r1: not placed (UnsupportedGPU)" in err and "Hopper or newer" in err


def test_bad_spec_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(R1_TWO_NODES.replace("replicas: 2", "replicas: 2\n  engine: {maxInputTokens: -5}"))
    code, _, err = _run(capsys, "-f", str(path))
    assert code == 2 and "r1:" in err and "spec.engine.maxInputTokens" in err


def test_file_without_a_resource_or_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    code, _, err = _run(capsys, "-f", str(path))
    assert code == 2 and "no DeepSeekDeployment" in err
    code, _, err = _run(capsys, "-f", str(tmp_path / "absent.yaml"))
    assert code == 2 and "cannot read it" in err


def test_every_sample_renders(capsys: pytest.CaptureFixture[str]) -> None:
    for sample in sorted(SAMPLES.glob("*.yaml")):
        if "kind: DeepSeekDeployment" not in sample.read_text():
            continue
        code, out, err = _run(capsys, "-f", str(sample))
        assert code == 0, (sample.name, err)
        assert any(o["kind"] in ("Deployment", "LeaderWorkerSet") for o in _objects(out)), sample.name
