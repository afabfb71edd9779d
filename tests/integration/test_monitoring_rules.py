"""The alert rules and the monitoring objects of the chart, checked with the real tools: promtool
(Debian's prometheus package) checks the rules and runs their unit tests; helm renders the
ServiceMonitor, PodMonitor and PrometheusRule only where the Prometheus Operator's CRDs are."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from deepseek_operator.sim.tools import repo_root
from tests.support.chart import template

ROOT = repo_root()
RULES = ROOT / "manifests" / "monitoring" / "deepseek-operator.rules.yaml"
UNIT_TESTS = ROOT / "tests" / "monitoring" / "alerts.test.yaml"
MONITORING_API = ["monitoring.coreos.com/v1/PrometheusRule", "monitoring.coreos.com/v1/ServiceMonitor"]
MONITORING_API += ["monitoring.coreos.com/v1/PodMonitor"]


def _render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_monitoring", ROOT / "hack" / "render-monitoring.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool (from Debian's prometheus package: hack/install-monitoring-tools.sh)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run hack/install-monitoring-tools.sh (make tools)")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=120)


def _alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def test_promtool_check_rules_is_clean() -> None:
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 12 rules found" in out.stdout, out.stdout


def test_promtool_unit_tests_pass() -> None:
    out = promtool("test", "rules", str(UNIT_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_has_a_test_that_fires_and_one_that_does_not() -> None:
    rules = _alerts(yaml.safe_load(RULES.read_text())["groups"])
    fires: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test") or []:
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    assert set(rules) == fires, f"alerts without a firing test: {set(rules) - fires}"
    assert set(rules) == silent, f"alerts without a test where they stay silent: {set(rules) - silent}"
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_a_mutated_threshold_fails_the_unit_tests(tmp_path: Path) -> None:
    """The unit tests hold the thresholds: one degree lower and the temperature test fails."""
    (tmp_path / "manifests" / "monitoring").mkdir(parents=True)
    (tmp_path / "tests" / "monitoring").mkdir(parents=True)
    text = RULES.read_text().replace("      > 85\n", "      > 84\n")
    assert text != RULES.read_text()
    (tmp_path / "manifests" / "monitoring" / RULES.name).write_text(text)
    shutil.copy(UNIT_TESTS, tmp_path / "tests" / "monitoring" / UNIT_TESTS.name)
    out = promtool("test", "rules", str(tmp_path / "tests" / "monitoring" / UNIT_TESTS.name))
    assert out.returncode != 0
    assert "DeepSeekGPUTemperatureHigh" in out.stdout + out.stderr


def test_the_plain_files_are_the_charts() -> None:
    """manifests/monitoring/ is what `make chart` renders from the chart (hack/render-monitoring.py)."""
    render = _render_module()
    text = RULES.read_text()
    assert text == render.HEADER + render.rules_text(render.rule_groups()), "run `make chart`"
    assert render.DASHBOARD.read_bytes() == render.CHART_DASHBOARD.read_bytes(), "run `make chart`"


def test_thresholds_and_durations_are_chart_values(tmp_path: Path) -> None:
    render = _render_module()
    default = _alerts(render.rule_groups())
    assert default["DeepSeekGPUTemperatureHigh"]["for"] == "5m"
    assert default["DeepSeekGPUTemperatureHigh"]["expr"].rstrip().endswith("> 85")
    assert default["DeepSeekGPUMemoryHigh"]["for"] == "1m"
    assert default["DeepSeekGPUMemoryHigh"]["expr"].rstrip().endswith("> 0.9")
    assert default["DeepSeekInferenceP99High"]["expr"].rstrip().endswith("> 500")
    assert default["DeepSeekBatchFailureRateHigh"]["expr"].rstrip().endswith("> 0.05")
    assert default["DeepSeekRequestTimeoutRateHigh"]["expr"].rstrip().endswith("> 0.02")
    assert default["DeepSeekOutputRejectionRateHigh"]["expr"].rstrip().endswith("> 0.01")
    assert default["DeepSeekDegraded"]["for"] == "10m"
    groups = render.rule_groups(
        [
            'monitoring.alerts.gpuTemperature={"threshold": 80, "for": "2m", "severity": "critical"}',
            'monitoring.alerts.timeoutRate={"threshold": 0.1, "window": "1m", "for": "30s", '
            '"severity": "warning"}',
            'monitoring.tritonModel="tensorrt_llm"',
        ]
    )
    custom = _alerts(groups)
    temp = custom["DeepSeekGPUTemperatureHigh"]
    assert (temp["for"], temp["labels"]["severity"]) == ("2m", "critical")
    assert temp["expr"].rstrip().endswith("> 80")
    assert "Above 80 °C for 2m" in temp["annotations"]["description"]
    timeouts = custom["DeepSeekRequestTimeoutRateHigh"]
    assert "[1m]" in timeouts["expr"] and 'model="tensorrt_llm"' in timeouts["expr"]
    assert "More than 10 % of the requests" in timeouts["annotations"]["description"]
    path = tmp_path / "custom.rules.yaml"
    path.write_text(render.rules_text(groups))
    out = promtool("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_bad_threshold_is_refused_naming_the_value() -> None:
    from tests.support.chart import CHART, KUBE_VERSION, helm  # noqa: PLC0415

    out = helm(
        "template",
        "x",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "--set-json",
        'monitoring.alerts.gpuMemory={"threshold": 0.9, "for": "a minute", "severity": "warning"}',
        check=False,
    )
    assert out.returncode != 0
    assert "/monitoring/alerts/gpuMemory/for" in out.stderr and "(s|m|h)" in out.stderr, out.stderr


def _kinds(objects: list[dict[str, Any]]) -> set[str]:
    return {o["kind"] for o in objects}


def test_monitoring_objects_render_only_with_the_prometheus_operator() -> None:
    without = template()
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule"} & _kinds(without)
    with_crds = template(api_versions=MONITORING_API)
    by_kind = {o["kind"]: o for o in with_crds}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule"} <= set(by_kind)
    sm = by_kind["ServiceMonitor"]["spec"]
    assert sm["endpoints"][0]["honorLabels"] is True  # namespace/name of the resource, not exported_*
    assert sm["endpoints"][0]["relabelings"] == [{"targetLabel": "job", "replacement": "deepseek-operator"}]
    service = next(
        o for o in with_crds if o["kind"] == "Service" and o["metadata"]["name"].endswith("-metrics")
    )
    assert sm["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    pm = by_kind["PodMonitor"]["spec"]
    assert pm["selector"]["matchLabels"] == {
        "app.kubernetes.io/managed-by": "deepseek-operator",
        "app.kubernetes.io/component": "serving",
    }
    assert pm["podMetricsEndpoints"][0]["port"] == "metrics"  # Triton's 8002 (builders/serving.py)
    assert pm["podMetricsEndpoints"][0]["relabelings"][0]["targetLabel"] == "name"
    assert pm["namespaceSelector"] == {"any": True}
    scoped = {o["kind"]: o for o in template({"watchNamespaces": ["team-a"]}, api_versions=MONITORING_API)}
    assert scoped["PodMonitor"]["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}
    rules = by_kind["PrometheusRule"]["spec"]["groups"]
    assert rules == yaml.safe_load(RULES.read_text())["groups"]
    off = template(
        {
            "monitoring": {
                "serviceMonitor": {"enabled": False},
                "podMonitor": {"enabled": False},
                "prometheusRule": {"enabled": False},
            }
        },
        api_versions=MONITORING_API,
    )
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule"} & _kinds(off)


def test_the_dashboard_configmap_is_for_the_grafana_sidecar() -> None:
    (cm,) = [
        o for o in template() if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")
    ]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = cm["data"].values()
    assert json.loads(text) == json.loads(
        (ROOT / "manifests" / "monitoring" / "deepseek-operator-dashboard.json").read_text()
    )
    assert not [
        o
        for o in template({"monitoring": {"dashboard": {"enabled": False}}})
        if o["metadata"]["name"].endswith("-dashboard")
    ]


def test_the_plain_scrape_configs_pass_promtool_check_config(tmp_path: Path) -> None:
    """Debian's prometheus 2.42 is built without the Kubernetes service discovery ("field
    kubernetes_sd_configs not found"), so each job's kubernetes_sd_configs is swapped for a static
    target here: everything else (relabelling, honor_labels, the rules file) is what promtool checks."""
    jobs = yaml.safe_load((ROOT / "manifests" / "monitoring" / "prometheus-scrape-configs.yaml").read_text())
    for job in jobs["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs")[0]["role"] in ("endpoints", "pod")
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    names = [j["job_name"] for j in jobs["scrape_configs"]]
    assert names == ["deepseek-operator", "deepseek-triton", "dcgm-exporter"]
    values = yaml.safe_load((ROOT / "charts" / "deepseek-operator" / "values.yaml").read_text())
    assert names[0] == values["monitoring"]["operatorJob"]  # the job the OperatorDown alert reads
    shutil.copy(RULES, tmp_path / RULES.name)
    config = {"global": {"scrape_interval": "30s"}, "rule_files": [RULES.name], **jobs}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 12 rules found" in out.stdout


def _prometheus_operator_schemas(folder: Path) -> Path:
    """The Prometheus Operator's CRD schemas (hack/fetch-prometheus-operator-crds.sh, cached),
    named as kubeconform looks them up, written into ``folder``."""
    proc = subprocess.run(
        [str(ROOT / "hack" / "fetch-prometheus-operator-crds.sh")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"hack/fetch-prometheus-operator-crds.sh failed:\n{proc.stderr}")
    crds = Path(proc.stdout.strip().splitlines()[-1])
    for path in sorted(crds.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        for v in spec["versions"]:
            name = f"{spec['names']['kind'].lower()}-{spec['group'].split('.')[0]}-{v['name']}.json"
            (folder / name).write_text(json.dumps(_strict(v["schema"]["openAPIV3Schema"])))
    return folder


def _strict(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object that lists its properties
    (as openapi2jsonschema's --strict does), so that an unknown field is an error."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def test_monitoring_objects_fit_the_prometheus_operators_crds(tmp_path: Path) -> None:
    """kubeconform -strict (unknown fields refused) against the CRDs of Prometheus Operator v0.93.0."""
    from deepseek_operator.sim.tools import tool_path  # noqa: PLC0415

    schemas = _prometheus_operator_schemas(tmp_path)
    for values in ({}, {"watchNamespaces": ["team-a"]}):
        objects = [
            o
            for o in template(values, api_versions=MONITORING_API)
            if o["kind"] in ("ServiceMonitor", "PodMonitor", "PrometheusRule")
        ]
        assert len(objects) == 3
        text = "---\n".join(yaml.safe_dump(o) for o in objects)
        out = subprocess.run(
            [
                str(tool_path("kubeconform")),
                "-strict",
                "-summary",
                "-schema-location",
                f"{schemas}/{{{{.ResourceKind}}}}{{{{.KindSuffix}}}}.json",
                "-",
            ],
            input=text,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "Valid: 3, Invalid: 0, Errors: 0, Skipped: 0" in out.stdout, out.stdout
    # The check bites: a field the CRD does not have is refused.
    bad = next(o for o in template(api_versions=MONITORING_API) if o["kind"] == "PodMonitor")
    bad["spec"]["podMetricsEndpoints"][0]["honourLabels"] = True
    out = subprocess.run(
        [
            str(tool_path("kubeconform")),
            "-strict",
            "-schema-location",
            f"{schemas}/{{{{.ResourceKind}}}}{{{{.KindSuffix}}}}.json",
            "-",
        ],
        input=yaml.safe_dump(bad),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "honourLabels" in out.stdout + out.stderr
