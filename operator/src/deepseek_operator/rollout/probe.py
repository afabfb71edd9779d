"""The I/O of analysis: golden prompts sent to one Triton revision, and its metrics read back.

:func:`run_cases` sends each :class:`~deepseek_operator.rollout.golden.GoldenCase` to a
Triton model over HTTP (KServe v2 protocol, ``tritonclient.http``) and never raises;
:func:`scrape_metrics` reads Triton's Prometheus endpoints and :func:`parse_metrics` (pure)
pulls out the request counters and the p99 latency of one model.

What Triton's latency quantiles mean (Triton 2.51, checked against the server pytriton
bundles and triton-inference-server/core ``metric_model_reporter.{h,cc}``):

* ``nv_inference_request_summary_us`` only exists when Triton runs with
  ``--metrics-config summary_latencies=true``. Its labels are ``model``, ``version`` and
  ``quantile`` (0.5, 0.9, 0.95, 0.99, 0.999).
* The quantiles cover a sliding time window of about one minute, not the server's
  lifetime: Triton creates each summary with prometheus-cpp's defaults (``max_age`` 60 s,
  5 age buckets, so the window moves every 12 s) and an observation stays in the
  quantiles for 48-60 s. Seen here: after 20 requests of 200 ms followed by fast ones,
  p99 stayed at 204 ms for 54 s and dropped to 3.6 ms between 54 and 56 s. So a read is
  "p99 over roughly the last minute", never "since the revision started": a judgement
  over a longer analysis must read repeatedly (at most every 48 s to miss nothing) and
  combine the reads, and slow requests older than a minute are invisible.
* Before any request, and once a window passes with no request, the quantiles are NaN
  (``parse_metrics`` gives ``None``).
* Only successful requests are observed (``_count`` equals ``nv_inference_request_success``):
  failed requests never raise p99; watch the failure counter for them.
* The estimator (CKMS) is coarse with few samples: with two observations p99 reported the
  smaller one. Judge p99 only over windows with enough requests.
* ``nv_inference_request_failure`` carries a ``reason`` label (OTHER, BACKEND, CANCELED,
  REJECTED); the failure count here is the sum over reasons.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from deepseek_operator.rollout.golden import GoldenCase

SUCCESS_METRIC = "nv_inference_request_success"
FAILURE_METRIC = "nv_inference_request_failure"
LATENCY_SUMMARY_METRIC = "nv_inference_request_summary_us"
TEXT_INPUT = "text_input"
TEXT_OUTPUT = "text_output"
# Triton's error text for a failing Python model carries the whole traceback; an error
# that ends up in a status condition must stay readable.
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class CaseResult:
    """What one golden request returned: the text, or why there is none."""

    output: str | None  # text_output; None when the request failed
    latency_ms: float
    error: str | None


def _error_text(err: BaseException) -> str:
    # Whitespace collapsed: a multi-line traceback becomes one line a condition can carry.
    text = " ".join(str(err).split())
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 3] + "..."
    return text


def _decode_output(value: Any) -> str:
    # text_output is [batch, beams] for the ensemble, [batch] or [1] for other models;
    # the first element is this request's (first beam's) text in every layout.
    if value is None:
        raise ValueError(f"the response has no {TEXT_OUTPUT}")
    flat = value.reshape(-1)
    if flat.size == 0:
        raise ValueError(f"{TEXT_OUTPUT} is empty")
    first = flat[0]
    if isinstance(first, bytes):
        return first.decode("utf-8", errors="replace")
    return str(first)


def _run_one(
    address: str, model: str, max_tokens_input: str, case: GoldenCase, timeout_s: float
) -> CaseResult:
    # Imported here: tritonclient.http pulls in gevent, which the rest of the operator
    # does not need to pay for at import time.
    import numpy as np  # noqa: PLC0415
    import tritonclient.http as triton_http  # noqa: PLC0415

    started = time.perf_counter()
    client: Any = None
    try:
        # One client per request: tritonclient's HTTP client is not safe to share
        # between threads, and closing it lets the server drop the connection at once.
        client = triton_http.InferenceServerClient(
            address, connection_timeout=timeout_s, network_timeout=timeout_s
        )
        text = triton_http.InferInput(TEXT_INPUT, [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[case.prompt.encode("utf-8")]], dtype=np.object_))
        max_tokens = triton_http.InferInput(max_tokens_input, [1, 1], "INT32")
        max_tokens.set_data_from_numpy(np.array([[case.max_tokens]], dtype=np.int32))
        result = client.infer(
            model, [text, max_tokens], outputs=[triton_http.InferRequestedOutput(TEXT_OUTPUT)]
        )
        output = _decode_output(result.as_numpy(TEXT_OUTPUT))
    except Exception as err:  # the promise is "never raises": every failure becomes a result
        return CaseResult(
            output=None, latency_ms=(time.perf_counter() - started) * 1000.0, error=_error_text(err)
        )
    finally:
        if client is not None:
            # Closing a broken connection must not turn a result into a crash.
            with contextlib.suppress(Exception):
                client.close()
    return CaseResult(output=output, latency_ms=(time.perf_counter() - started) * 1000.0, error=None)


def run_cases(
    address: str,
    model: str,
    max_tokens_input: str,
    cases: Sequence[GoldenCase],
    timeout_s: float,
    concurrency: int = 8,
) -> list[CaseResult]:
    """Send every case to ``model`` at ``address`` (Triton's HTTP "host:port"); one result per case, in order.

    Each request carries ``text_input`` (BYTES [1,1]) and ``max_tokens_input`` (INT32 [1,1];
    "max_tokens" for the TensorRT-LLM ensemble, "sampling_param_max_tokens" for the LLM-API
    model "tensorrt_llm") and reads ``text_output``. At most ``concurrency`` requests are in
    flight; each is bounded by ``timeout_s`` for connecting and for each network read/write.
    Never raises for a failed request: a refusal, timeout or server error gives
    ``output=None`` and the error text. ``latency_ms`` is measured around each request.
    Raises ValueError only for a ``concurrency`` below 1 or a ``timeout_s`` that is not positive.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, not {timeout_s}")
    if not cases:
        return []
    with ThreadPoolExecutor(max_workers=min(concurrency, len(cases)), thread_name_prefix="golden") as pool:
        futures = [pool.submit(_run_one, address, model, max_tokens_input, case, timeout_s) for case in cases]
        return [f.result() for f in futures]


def _openai_model(address: str, timeout_s: float) -> str:
    """The model name an OpenAI-compatible server lists first (trtllm-serve lists the one it
    serves, named after its model argument); "default" when it lists none."""
    with urllib.request.urlopen(f"http://{address}/v1/models", timeout=timeout_s) as resp:
        data = json.loads(resp.read())
    models = data.get("data") or []
    return str(models[0]["id"]) if models else "default"


def _run_openai_one(address: str, model: str, case: GoldenCase, timeout_s: float) -> CaseResult:
    started = time.perf_counter()
    body = json.dumps(
        {"model": model, "prompt": case.prompt, "max_tokens": case.max_tokens, "temperature": 0}
    ).encode()
    req = urllib.request.Request(
        f"http://{address}/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            answer = json.loads(resp.read())
        output = str(answer["choices"][0]["text"])
    except Exception as err:  # never raises: every failure becomes a result
        return CaseResult(None, (time.perf_counter() - started) * 1000.0, _error_text(err))
    return CaseResult(output, (time.perf_counter() - started) * 1000.0, None)


def run_openai_cases(
    address: str, cases: Sequence[GoldenCase], timeout_s: float, concurrency: int = 8
) -> list[CaseResult]:
    """Send every case to the OpenAI-compatible completions API at ``address`` ("host:port"), as a
    multi-node leader's ``trtllm-serve`` serves it (``POST /v1/completions`` with ``prompt``,
    ``max_tokens``, ``temperature`` 0; the text is ``choices[0].text``: TensorRT-LLM's DeepSeek-V3
    README queries it so). One result per case, in order; never raises for a failed request."""
    if not cases:
        return []
    try:
        model = _openai_model(address, timeout_s)
    except Exception as err:
        return [CaseResult(None, 0.0, _error_text(err)) for _ in cases]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(cases)), thread_name_prefix="golden") as pool:
        futures = [pool.submit(_run_openai_one, address, model, case, timeout_s) for case in cases]
        return [f.result() for f in futures]


@dataclass(frozen=True)
class MetricsSample:
    """One model's request counters and p99 latency, summed over the pods that answered."""

    success: float  # nv_inference_request_success, summed over pods (and versions)
    failure: float  # nv_inference_request_failure, summed over pods, versions and reasons
    p99_us: float | None  # max over pods of the p99 request latency; None when absent or NaN
    pods: int  # how many endpoints answered


def parse_metrics(text: str, model: str) -> MetricsSample:
    """Read ``model``'s counters and p99 latency from one Prometheus text exposition (pods=1).

    Samples are matched on the ``model`` label; several versions of the model are summed
    (p99: the maximum). A model that does not appear gives zeros and ``p99_us=None``; so
    does a server started without summary latencies (for p99). Raises ValueError when the
    text is not Prometheus text format.
    """
    success = 0.0
    failure = 0.0
    p99: float | None = None
    for family in text_string_to_metric_families(text):
        if family.name not in (SUCCESS_METRIC, FAILURE_METRIC, LATENCY_SUMMARY_METRIC):
            continue
        # prometheus_client's parser names a counter's samples "<family>_total" even when
        # Triton writes them without the suffix, so samples are matched by family.
        for sample in family.samples:
            if sample.labels.get("model") != model or sample.name.endswith("_created"):
                continue
            if family.name == SUCCESS_METRIC:
                success += sample.value
            elif family.name == FAILURE_METRIC:
                failure += sample.value
            elif (
                sample.name == LATENCY_SUMMARY_METRIC
                and _is_p99(sample.labels.get("quantile"))
                and not math.isnan(sample.value)
            ):
                p99 = sample.value if p99 is None else max(p99, sample.value)
    return MetricsSample(success=success, failure=failure, p99_us=p99, pods=1)


def _is_p99(quantile: str | None) -> bool:
    if quantile is None:
        return False
    try:
        return math.isclose(float(quantile), 0.99)
    except ValueError:
        return False


# No proxy: the endpoints are pod addresses inside the cluster, and an HTTP(S)_PROXY set
# for the operator's own egress must not swallow them.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _scrape_one(url: str, model: str, timeout_s: float) -> MetricsSample | None:
    try:
        with _OPENER.open(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8", errors="replace")
        return parse_metrics(text, model)
    except Exception:  # an endpoint that cannot be read or parsed did not answer
        return None


def scrape_metrics(urls: Sequence[str], model: str, timeout_s: float) -> MetricsSample | None:
    """GET each metrics URL (e.g. ``http://10.0.0.5:8002/metrics``) and combine ``model``'s figures.

    Counters are summed and p99 is the maximum over the endpoints that answered with
    parseable text within ``timeout_s``; the others are skipped and not counted in
    ``pods``. Endpoints are read concurrently. None when no endpoint answered.
    """
    if not urls:
        return None
    with ThreadPoolExecutor(max_workers=min(16, len(urls)), thread_name_prefix="scrape") as pool:
        samples = [s for s in pool.map(lambda u: _scrape_one(u, model, timeout_s), urls) if s is not None]
    if not samples:
        return None
    p99s = [s.p99_us for s in samples if s.p99_us is not None]
    return MetricsSample(
        success=sum(s.success for s in samples),
        failure=sum(s.failure for s in samples),
        p99_us=max(p99s) if p99s else None,
        pods=len(samples),
    )
