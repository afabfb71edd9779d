"""`deepseek-operator plan` from the catalog alone."""

from __future__ import annotations

import json

import pytest

from deepseek_operator.__main__ import main
from deepseek_operator.plan_cli import PlanRequest, plan_report, render_table


def test_r1_options_follow_the_published_minimums() -> None:
    report = plan_report(PlanRequest(model="deepseek-ai/DeepSeek-R1"))
    rows = {r["gpu"]: r for r in report["options"]}
    assert len(rows) == 6
    h200, h100 = rows["NVIDIA-H200"], rows["NVIDIA-H100-80GB-HBM3"]
    assert (h200["fits"], h200["precision"], h200["gpus"], h200["nodes"]) == (True, "fp8", 8, 1)
    assert (h100["fits"], h100["precision"], h100["gpus"], h100["nodes"]) == (True, "fp8", 16, 2)
    # TensorRT-LLM's two-node DeepSeek-V3 recipe (deepseek_v3/README.md: --tp 16 --ep 16)
    assert h100["tensorParallel"] == 16 and h100["pipelineParallel"] == 1
    assert "EP 16" in h100["reason"] and str(h100["maxBatchSize"]) in h100["reason"]
    # The DeepSeek-V3 recipe supports Hopper and Blackwell only: the rest say so.
    for gpu in ("NVIDIA-A100-SXM4-80GB", "NVIDIA-L40S"):
        assert not rows[gpu]["fits"] and "Hopper or newer" in rows[gpu]["reason"]
    assert report["runtime"] == "pytorch"
    for row in (r for r in rows.values() if r["fits"]):
        parts = row["weightsGiB"] + row["kvCacheGiB"] + row["activationsGiB"] + row["overheadGiB"]
        assert parts / row["gpus"] <= row["perGpuGiB"] * 1.01 + 0.1
    assert "placement" not in report


def test_explicit_gpu_and_precision() -> None:
    report = plan_report(
        PlanRequest(
            model="deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
            precision="bf16",
            products=("NVIDIA-H100-80GB-HBM3", "NVIDIA-H200"),
        )
    )
    tps = {r["gpu"]: r["tensorParallel"] for r in report["options"]}
    assert tps == {"NVIDIA-H100-80GB-HBM3": 4, "NVIDIA-H200": 2}


def test_fp8_on_a100_is_a_row_that_says_why() -> None:
    report = plan_report(
        PlanRequest(
            model="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
            precision="fp8",
            products=("NVIDIA-A100-SXM4-80GB",),
        )
    )
    (row,) = report["options"]
    assert row["fits"] is False and "compute capability" in row["reason"]


def test_cli_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "--gpu", "NVIDIA-H100-80GB-HBM3"]) == 0
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if line.startswith("GPU"))
    assert header.split()[:6] == ["GPU", "FITS", "PRECISION", "GPUS", "TPxPP", "NODES"]
    assert "NVIDIA-H100-80GB-HBM3  yes" in table and "2x1" in table
    assert main(["plan", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
    assert data["nativePrecision"] == "bf16" and len(data["options"]) == 6


def test_unknown_model_needs_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "acme/unknown-13b"]) == 2
    assert "spec.model" in capsys.readouterr().err
    assert main(["plan", "acme/unknown-13b", "--parameters", "13B", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["parametersB"] == pytest.approx(13, rel=0.05)


def test_render_table_mentions_reasons() -> None:
    text = render_table(
        plan_report(
            PlanRequest(model="deepseek-ai/DeepSeek-V2-Lite-Chat", products=("NVIDIA-GeForce-RTX-4090",))
        )
    )
    assert "NVIDIA-GeForce-RTX-4090:" in text
