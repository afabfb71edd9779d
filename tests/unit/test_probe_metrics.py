"""parse_metrics on Triton's Prometheus text: counters, p99, several models and versions."""

from __future__ import annotations

import pytest

from deepseek_operator.rollout.probe import MetricsSample, parse_metrics

# Scraped from the Triton 2.51 that pytriton runs (sim/standin.py) with summary latencies on,
# after 8 requests of which 2 failed; trimmed of the compute_* families.
REAL_STANDIN = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="ensemble",version="1"} 6
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="ensemble",reason="OTHER",version="1"} 0
nv_inference_request_failure{model="ensemble",reason="BACKEND",version="1"} 2
nv_inference_request_failure{model="ensemble",reason="CANCELED",version="1"} 0
nv_inference_request_failure{model="ensemble",reason="REJECTED",version="1"} 0
# HELP nv_inference_count Number of inferences performed (does not include cached requests)
# TYPE nv_inference_count counter
nv_inference_count{model="ensemble",version="1"} 6
# HELP nv_inference_exec_count Number of model executions performed (does not include cached requests)
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="ensemble",version="1"} 8
# HELP nv_inference_request_duration_us Cumulative inference request duration in microseconds
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="ensemble",version="1"} 1271881
# HELP nv_inference_pending_request_count Instantaneous number of pending requests awaiting execution
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="ensemble",version="1"} 0
# HELP nv_pinned_memory_pool_total_bytes Pinned memory pool total memory size, in bytes
# TYPE nv_pinned_memory_pool_total_bytes gauge
nv_pinned_memory_pool_total_bytes 268435456
# HELP nv_cpu_utilization CPU utilization rate [0.0 - 1.0]
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 0.7575757575757576
# HELP nv_inference_request_summary_us Summary of inference request duration in microseconds
# TYPE nv_inference_request_summary_us summary
nv_inference_request_summary_us_count{model="ensemble",version="1"} 6
nv_inference_request_summary_us_sum{model="ensemble",version="1"} 1271881
nv_inference_request_summary_us{model="ensemble",version="1",quantile="0.5"} 189799
nv_inference_request_summary_us{model="ensemble",version="1",quantile="0.9"} 222178
nv_inference_request_summary_us{model="ensemble",version="1",quantile="0.95"} 222178
nv_inference_request_summary_us{model="ensemble",version="1",quantile="0.99"} 222178
nv_inference_request_summary_us{model="ensemble",version="1",quantile="0.999"} 222178
# HELP nv_inference_queue_summary_us Summary of inference queuing duration in microseconds
# TYPE nv_inference_queue_summary_us summary
nv_inference_queue_summary_us_count{model="ensemble",version="1"} 6
nv_inference_queue_summary_us_sum{model="ensemble",version="1"} 417
nv_inference_queue_summary_us{model="ensemble",version="1",quantile="0.5"} 52
nv_inference_queue_summary_us{model="ensemble",version="1",quantile="0.99"} 900000
"""

# What a TensorRT-LLM pod publishes: the ensemble and its composing models (each with its
# own counters and summaries), TensorRT-LLM's own metrics, and GPU metrics.
TRTLLM_POD = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="ensemble",version="1"} 120
nv_inference_request_success{model="preprocessing",version="1"} 125
nv_inference_request_success{model="tensorrt_llm",version="1"} 121
nv_inference_request_success{model="postprocessing",version="1"} 120
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="ensemble",reason="OTHER",version="1"} 1
nv_inference_request_failure{model="ensemble",reason="BACKEND",version="1"} 4
nv_inference_request_failure{model="ensemble",reason="CANCELED",version="1"} 0
nv_inference_request_failure{model="ensemble",reason="REJECTED",version="1"} 2
nv_inference_request_failure{model="tensorrt_llm",reason="BACKEND",version="1"} 4
nv_inference_request_failure{model="preprocessing",reason="BACKEND",version="1"} 0
# HELP nv_trt_llm_request_metrics TRT LLM request metrics
# TYPE nv_trt_llm_request_metrics gauge
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="active",version="1"} 3
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="max",version="1"} 64
# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-0b7a"} 0.93
# HELP nv_inference_request_summary_us Summary of inference request duration in microseconds
# TYPE nv_inference_request_summary_us summary
nv_inference_request_summary_us_count{model="ensemble",version="1"} 120
nv_inference_request_summary_us_sum{model="ensemble",version="1"} 360000000
nv_inference_request_summary_us{model="ensemble",version="1",quantile="0.5"} 2800000
nv_inference_request_summary_us{model="ensemble",version="1",quantile="0.99"} 4100000
nv_inference_request_summary_us_count{model="tensorrt_llm",version="1"} 121
nv_inference_request_summary_us_sum{model="tensorrt_llm",version="1"} 350000000
nv_inference_request_summary_us{model="tensorrt_llm",version="1",quantile="0.5"} 2700000
nv_inference_request_summary_us{model="tensorrt_llm",version="1",quantile="0.99"} 9900000
nv_inference_request_summary_us_count{model="preprocessing",version="1"} 125
nv_inference_request_summary_us_sum{model="preprocessing",version="1"} 12500
nv_inference_request_summary_us{model="preprocessing",version="1",quantile="0.99"} 300
"""


def test_real_standin_scrape() -> None:
    assert parse_metrics(REAL_STANDIN, "ensemble") == MetricsSample(
        success=6.0, failure=2.0, p99_us=222178.0, pods=1
    )


def test_only_the_asked_model_counts() -> None:
    assert parse_metrics(TRTLLM_POD, "ensemble") == MetricsSample(
        success=120.0, failure=7.0, p99_us=4100000.0, pods=1
    )
    assert parse_metrics(TRTLLM_POD, "tensorrt_llm") == MetricsSample(
        success=121.0, failure=4.0, p99_us=9900000.0, pods=1
    )
    # Other summaries with a 0.99 quantile (queue time) never stand in for request latency.
    assert parse_metrics(REAL_STANDIN, "ensemble").p99_us == 222178.0


def test_absent_model_gives_zeros() -> None:
    assert parse_metrics(TRTLLM_POD, "llama") == MetricsSample(success=0.0, failure=0.0, p99_us=None, pods=1)
    assert parse_metrics("", "ensemble") == MetricsSample(success=0.0, failure=0.0, p99_us=None, pods=1)


def test_nan_quantiles_are_none() -> None:
    # Triton writes "Nan" before the first request and once a minute passes without one.
    text = """\
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="ensemble",version="1"} 0
# TYPE nv_inference_request_summary_us summary
nv_inference_request_summary_us_count{model="ensemble",version="1"} 0
nv_inference_request_summary_us_sum{model="ensemble",version="1"} 0
nv_inference_request_summary_us{model="ensemble",version="1",quantile="0.5"} Nan
nv_inference_request_summary_us{model="ensemble",version="1",quantile="0.99"} Nan
"""
    assert parse_metrics(text, "ensemble") == MetricsSample(success=0.0, failure=0.0, p99_us=None, pods=1)


def test_missing_summary_leaves_counters() -> None:
    # A Triton started without --metrics-config summary_latencies=true.
    text = "\n".join(line for line in REAL_STANDIN.splitlines() if "summary" not in line)
    assert parse_metrics(text, "ensemble") == MetricsSample(success=6.0, failure=2.0, p99_us=None, pods=1)


def test_versions_are_summed_and_p99_is_the_worst() -> None:
    text = """\
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="ensemble",version="1"} 10
nv_inference_request_success{model="ensemble",version="2"} 5
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="ensemble",version="1"} 1
nv_inference_request_failure{model="ensemble",version="2"} 2
# TYPE nv_inference_request_summary_us summary
nv_inference_request_summary_us{model="ensemble",quantile="0.99",version="1"} 1000
nv_inference_request_summary_us{model="ensemble",quantile="0.99",version="2"} 3000
nv_inference_request_summary_us{model="ensemble",quantile="0.990",version="3"} Nan
"""
    # Also: failures without a reason label (Triton before 2.49), labels in any order.
    assert parse_metrics(text, "ensemble") == MetricsSample(success=15.0, failure=3.0, p99_us=3000.0, pods=1)


def test_untyped_exposition_still_parses() -> None:
    # Without # TYPE lines the parser yields "unknown" families named after the samples.
    text = (
        'nv_inference_request_success{model="ensemble",version="1"} 3\n'
        'nv_inference_request_failure{model="ensemble",reason="BACKEND",version="1"} 1\n'
    )
    assert parse_metrics(text, "ensemble") == MetricsSample(success=3.0, failure=1.0, p99_us=None, pods=1)


def test_not_prometheus_text_raises_value_error() -> None:
    with pytest.raises(ValueError):
        parse_metrics("<html><body>502 Bad Gateway</body></html>\n", "ensemble")
