"""The operator's own Prometheus metrics (served by ``deepseek-operator run --metrics-port``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ANALYSES = Counter(
    "deepseek_operator_analyses",
    "Rollout analyses run, by verdict (Pass, Fail, Inconclusive) and role (canary, stable)",
    ["namespace", "name", "verdict", "role"],
)
ROLLBACKS = Counter(
    "deepseek_operator_rollbacks",
    "Automatic rollbacks, by reason (latency, error-rate, accuracy, startup) and role of the revision",
    ["namespace", "name", "reason", "role"],
)
PROMOTIONS = Counter(
    "deepseek_operator_promotions",
    "Canaries promoted to serve all traffic",
    ["namespace", "name"],
)
DRIFT_TO_ROLLBACK = Histogram(
    "deepseek_operator_drift_to_rollback_seconds",
    "Seconds from the first failing analysis of a streak (the drift seen) to the rollback applied",
    ["namespace", "name"],
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)
