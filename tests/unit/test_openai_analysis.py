"""Finding 8 of issue 10: a multi-node revision is analysed through what trtllm-serve serves.

trtllm-serve publishes no Triton summaries (nv_inference_request_summary_us); its golden-set
answers come from the OpenAI-compatible ``POST /v1/completions`` (TensorRT-LLM v1.0.0
examples/models/core/deepseek_v3/README.md queries it so). Before, a LeaderWorkerSet revision was
sent Triton requests and scraped for Triton metrics: no data, no verdict. Run here against a
stand-in server on loopback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from deepseek_operator.api.spec import parse_spec
from deepseek_operator.rollout import analysis
from deepseek_operator.rollout.golden import GoldenCase
from tests.support.openai_standin import openai_standin

SPEC = parse_spec({"model": {"id": "deepseek-ai/DeepSeek-R1", "source": {"pvc": {"claimName": "m"}}}})
CASES = (
    GoldenCase("What is 17 * 23?", "contains", "391", 8),
    GoldenCase("Capital of France?", "regex", "(?i)paris"),
)


def _pod(name: str, worker_index: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {
                "leaderworkerset.sigs.k8s.io/name": "r1-rev",
                "leaderworkerset.sigs.k8s.io/worker-index": worker_index,
            },
        },
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


PODS = [_pod("r1-rev-0", "0", "10.244.0.5"), _pod("r1-rev-0-1", "1", "10.244.0.6")]


def test_in_cluster_a_leader_worker_set_is_reached_on_its_leaders_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.delenv(analysis.ENDPOINTS_ENV, raising=False)
    target = analysis.resolve_target("llm", "r1", "rev", PODS)
    assert isinstance(target, analysis.Target)
    assert target.openai and target.http == ("10.244.0.5:8000",) and target.metrics == ()


def test_canary_that_answers_worse_scores_lower(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = {"17": " 391", "France": " Paris."}
    endpoints = tmp_path / "endpoints.yaml"
    monkeypatch.setenv(analysis.ENDPOINTS_ENV, str(endpoints))
    with (
        openai_standin(lambda p: next(v for k, v in good.items() if k in p)) as stable,
        openai_standin(lambda p: " I do not know.") as canary,
    ):
        endpoints.write_text(
            yaml.safe_dump(
                {
                    "llm/r1/stable": {"http": stable.address, "metrics": "http://127.0.0.1:1/metrics"},
                    "llm/r1/canary": {"http": canary.address},
                }
            )
        )
        m_stable, _ = analysis.measure("llm", "r1", "stable", "pytorch", SPEC, CASES, None, PODS)
        m_canary, _ = analysis.measure("llm", "r1", "canary", "pytorch", SPEC, CASES, None, PODS)
        assert sorted(stable.prompts) == sorted(c.prompt for c in CASES)
    assert m_stable.problems == () and m_stable.accuracy == 1.0
    assert m_canary.accuracy == 0.0
    assert m_stable.p99_latency_ms is not None and m_stable.error_rate == 0.0
