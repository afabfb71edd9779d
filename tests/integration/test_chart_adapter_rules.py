"""The chart's prometheus-adapter rules (values autoscaling.adapterRules) are the rules the
operator's HPAs need, for both label layouts, and its metric names reach the operator."""

from __future__ import annotations

import pytest
import yaml

from deepseek_operator.builders.autoscaling import LABEL_LAYOUTS, MetricNames, adapter_rules
from tests.support.chart import template


@pytest.mark.parametrize("layout", LABEL_LAYOUTS)
def test_the_charts_adapter_rules_are_the_operators(layout: str) -> None:
    names = {"gpuUtilization": "gpu_util", "queuePending": "pending", "queueRatio": "ratio"}
    values = {"autoscaling": {"metricNames": names, "adapterRules": {"enabled": True, "labelLayout": layout,
                                                                     "rateWindow": "2m"}}}  # fmt: skip
    objects = template(values)
    (cm,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("adapter-rules")
    ]
    expected = adapter_rules(layout, MetricNames("gpu_util", "pending", "ratio"), rate_window="2m")
    assert yaml.safe_load(cm["data"]["config.yaml"]) == expected
    (dep,) = [o for o in objects if o["kind"] == "Deployment"]
    env = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DSO_METRIC_GPU_UTILIZATION"] == "gpu_util" and env["DSO_METRIC_QUEUE_RATIO"] == "ratio"


def test_no_adapter_rules_unless_asked() -> None:
    assert not [o for o in template() if o["metadata"]["name"].endswith("adapter-rules")]


def test_the_operator_is_told_its_own_image_for_the_decrypt_init_container() -> None:
    objects = template(
        {"image": {"repository": "registry.internal.example/ml/deepseek-operator", "tag": "9.9"}}
    )
    (dep,) = [o for o in objects if o["kind"] == "Deployment"]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert (
        env["DSO_DECRYPT_IMAGE"] == container["image"] == "registry.internal.example/ml/deepseek-operator:9.9"
    )
