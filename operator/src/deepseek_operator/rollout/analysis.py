"""One analysis of one revision: reach its pods, read Triton's metrics, send the golden set.

How the operator reaches a revision:

- in a cluster, the ready pods of the revision (their IPs, found through the API): golden-set
  requests go to their HTTP port, and each pod's metrics port is scraped, so that p99 and the
  counters cover every pod of the revision rather than the one a Service would pick;
- outside a cluster (development, the simulated cluster, whose pods have no network), the file
  named by ``$DEEPSEEK_OPERATOR_ENDPOINTS`` maps ``namespace/name/revision`` to addresses::

      llm/r1-qwen-7b/6d4f9c0a1b:
        http: 127.0.0.1:18000                       # Triton's HTTP endpoint (host:port)
        metrics: http://127.0.0.1:18002/metrics      # one URL or a list

  The file is read at every analysis, so it can be edited while the operator runs. A mapping
  there wins over the pods' addresses also in a cluster; either way a revision with no ready
  pod is not analysed (the analysis is inconclusive).

Figures (see :mod:`deepseek_operator.rollout.decisions` for the verdict):

- latency: p99 from Triton's quantile summaries (``nv_inference_request_summary_us``, which the
  serving pods publish: the operator starts Triton with ``summary_latencies=true``) when the
  revision had traffic besides the operator's own requests since the last analysis; otherwise
  p99 of the golden-set requests' round trips;
- error rate: Triton's failure and success counters over the interval (less the operator's own
  requests counted there, which are counted directly), plus the golden-set requests now;
- accuracy: the fraction of golden-set cases answered as expected.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from deepseek_operator.api.constants import LWS_WORKER_INDEX_LABEL
from deepseek_operator.api.spec import DeploymentSpec
from deepseek_operator.builders import serving
from deepseek_operator.kube import client as kube
from deepseek_operator.rollout import golden, probe
from deepseek_operator.rollout.decisions import Measurement
from deepseek_operator.rollout.figures import SMOKE_CASE, Counters, combine, model_inputs, startup_failure

ENDPOINTS_ENV = "DEEPSEEK_OPERATOR_ENDPOINTS"
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"  # set by the LeaderWorkerSet controller on its pods


@dataclass(frozen=True)
class StartupFailure:
    """The revision's pods cannot start: a verdict in itself."""

    reason: str


@dataclass(frozen=True)
class Target:
    """Where one revision answers, and how: Triton's KServe v2 API, or (a multi-node leader's
    trtllm-serve) the OpenAI-compatible one, which publishes no Triton summaries: its latency is
    then the golden-set requests' round trips and its errors are theirs."""

    http: tuple[str, ...]  # host:port of the HTTP endpoint, one per pod (multi-node: per leader)
    metrics: tuple[str, ...]  # Triton metrics URLs, one per pod (none for OpenAI targets)
    openai: bool = False


def map_revision(path: str | os.PathLike[str], key: str, http: str, metrics: str) -> None:
    """Add (or replace) ``key`` (``namespace/name/revision``) in the endpoints file at ``path``,
    atomically, so that an operator reading it meanwhile sees the old or the new file, never half."""
    target = os.fspath(path)
    data: dict[str, Any] = {}
    if os.path.exists(target):
        with open(target, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    data[key] = {"http": http, "metrics": metrics}
    with open(target + ".tmp", "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f)
    os.replace(target + ".tmp", target)


def _endpoints_file() -> dict[str, Any]:
    path = os.environ.get(ENDPOINTS_ENV)
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def resolve_target(
    namespace: str, owner: str, revision: str, pods: Sequence[Mapping[str, Any]]
) -> Target | StartupFailure | str:
    """The addresses of ``revision``'s ready pods (``pods``: the revision's serving pods, from the
    watch cache); a StartupFailure when they crash-loop or cannot pull their image; else why
    there are none (a sentence). A LeaderWorkerSet revision's leaders serve the OpenAI-compatible
    API on http and no Triton metrics (its workers serve nothing)."""
    openai = any(LWS_NAME_LABEL in ((p.get("metadata") or {}).get("labels") or {}) for p in pods)
    if openai:
        pods = [
            p
            for p in pods
            if ((p.get("metadata") or {}).get("labels") or {}).get(LWS_WORKER_INDEX_LABEL) == "0"
        ]
    ips = sorted(
        str(p["status"]["podIP"])
        for p in pods
        if (p.get("status") or {}).get("podIP")
        and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
    )
    if not ips:
        if failure := startup_failure(pods):
            return StartupFailure(failure)
        return f"revision {revision} has no ready pods"
    mapped = _endpoints_file().get(f"{namespace}/{owner}/{revision}")
    if isinstance(mapped, dict) and mapped.get("http"):
        metrics = mapped.get("metrics") or []
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        http = mapped["http"]
        urls = () if openai else tuple(str(m) for m in metrics)
        return Target((http,) if isinstance(http, str) else tuple(http), urls, openai)
    if not _in_cluster():
        return (
            f"revision {revision} cannot be reached from outside the cluster; map it in the file "
            f"${ENDPOINTS_ENV} names (docs/rollout.md)"
        )
    return Target(
        tuple(f"{ip}:{serving.HTTP_PORT}" for ip in ips),
        () if openai else tuple(f"http://{ip}:{serving.METRICS_PORT}/metrics" for ip in ips),
        openai,
    )


def load_golden_set(spec: DeploymentSpec, namespace: str) -> tuple[golden.GoldenCase, ...] | None:
    """The golden set the spec names (None when it names none); raises GoldenSetError when the
    ConfigMap or key is missing or the content is malformed."""
    ref = spec.rollout.analysis.accuracy.golden_set
    if ref is None:
        return None
    source = f"ConfigMap {namespace}/{ref.config_map_name} key {ref.key}"
    cm = kube.get("v1", "ConfigMap", namespace, ref.config_map_name)
    if cm is None:
        raise golden.GoldenSetError(
            source, None, None, "the ConfigMap does not exist", f"create it in namespace {namespace}"
        )
    data = cm.get("data") or {}
    if ref.key not in data:
        keys = ", ".join(sorted(data)) or "none"
        raise golden.GoldenSetError(
            source, None, None, f"no such key (the ConfigMap has: {keys})", "add the key or fix goldenSet.key"
        )
    return golden.parse_golden_set(str(data[ref.key]), source)


def request_timeout_s(spec: DeploymentSpec) -> float:
    """How long one golden-set request may take: long enough to measure a slow answer, short
    enough to keep an analysis within its interval."""
    a = spec.rollout.analysis
    return max(2.0, min(3 * a.max_p99_latency_ms / 1000.0, a.interval_seconds, 60.0))


def _split(cases: Sequence[golden.GoldenCase], n: int) -> list[list[tuple[int, golden.GoldenCase]]]:
    groups: list[list[tuple[int, golden.GoldenCase]]] = [[] for _ in range(n)]
    for i, case in enumerate(cases):
        groups[i % n].append((i, case))
    return groups


def send_cases(
    target: Target, runtime: str, cases: Sequence[golden.GoldenCase], timeout_s: float
) -> list[probe.CaseResult]:
    """Send ``cases`` spread over the target's pods; results in case order."""
    model, max_tokens_input = model_inputs(runtime)
    results: list[probe.CaseResult | None] = [None] * len(cases)
    for address, group in zip(target.http, _split(cases, len(target.http)), strict=True):
        if not group:
            continue
        todo = [c for _, c in group]
        answers = (
            probe.run_openai_cases(address, todo, timeout_s)
            if target.openai
            else probe.run_cases(address, model, max_tokens_input, todo, timeout_s)
        )
        for (i, _), res in zip(group, answers, strict=True):
            results[i] = res
    return [r for r in results if r is not None]


def measure(
    namespace: str,
    owner: str,
    revision: str,
    runtime: str,
    spec: DeploymentSpec,
    cases: tuple[golden.GoldenCase, ...] | None,
    previous: Counters | None,
    pods: Sequence[Mapping[str, Any]],
) -> tuple[Measurement, Counters | None]:
    """Analyse ``revision`` now: metrics first (so that this analysis's own requests are counted at
    the next one), then the golden set (or one unscored request when there is none)."""
    target = resolve_target(namespace, owner, revision, pods)
    if isinstance(target, StartupFailure):
        return Measurement(startup_failure=target.reason), previous
    if isinstance(target, str):
        return Measurement(problems=(target,)), previous
    model, _ = model_inputs(runtime)
    timeout = request_timeout_s(spec)
    sample = probe.scrape_metrics(list(target.metrics), model, timeout) if target.metrics else None
    to_send = cases if cases is not None else (SMOKE_CASE,)
    results = send_cases(target, runtime, to_send, timeout)
    m, kept = combine(sample, previous, results, cases is not None, to_send)
    if results and all(r.error is not None for r in results) and sample is None:
        # Nothing answered at all: the address is wrong or the pods are gone, not a verdict on
        # the model. (A server that answers with errors is a verdict: its counters say so.)
        first = results[0].error or "no answer"
        return Measurement(problems=(f"revision {revision} did not answer: {first}",)), previous
    return m, kept


def score_only(
    namespace: str,
    owner: str,
    revision: str,
    runtime: str,
    spec: DeploymentSpec,
    cases: tuple[Any, ...],
    pods: Sequence[Mapping[str, Any]],
) -> float | None:
    """The golden-set score of ``revision`` (the baseline a canary is compared with), None when it
    cannot be reached."""
    target = resolve_target(namespace, owner, revision, pods)
    if not isinstance(target, Target):
        return None
    results = send_cases(target, runtime, cases, request_timeout_s(spec))
    if not results or all(r.error is not None for r in results):
        return None
    return golden.score(cases, [r.output for r in results])
