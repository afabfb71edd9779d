"""The dcgm-exporter stand-in scraped by a real Prometheus, for pods the real scheduler placed."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from deepseek_operator.builders.autoscaling import adapter_rules
from deepseek_operator.sim.cluster import SimCluster
from deepseek_operator.sim.monitoring import Monitoring, PrometheusAdapter
from tests.support.plugin import wait_for


def _deployment(name: str, replicas: int, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                    "containers": [
                        {
                            "name": "triton",
                            "image": "x",
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                        }
                    ],
                },
            },
        },
    }


def test_prometheus_scrapes_gpu_metrics_labelled_with_the_pods_holding_them(
    sim_cluster: SimCluster, kube_api: Any, namespace: str
) -> None:
    from kubernetes import client  # noqa: PLC0415

    client.AppsV1Api(kube_api).create_namespaced_deployment(namespace, _deployment("m", 2, 2))
    with Monitoring(sim_cluster) as mon:
        mon.exporter.set("DCGM_FI_DEV_GPU_UTIL", 90, labels={"app": "m"}, namespace=namespace)
        per_pod = f'avg by (pod) (DCGM_FI_DEV_GPU_UTIL{{namespace="{namespace}"}})'
        mon.prometheus.wait_for(per_pod, lambda v: v == [90.0, 90.0], timeout=60)
        pods = {s.labels["pod"] for s in mon.prometheus.query(per_pod)}
        names = {p.metadata.name for p in client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items}
        assert pods == names
        # each pod holds two GPUs, labelled as dcgm-exporter labels them
        (sample, *_) = mon.prometheus.query(f'DCGM_FI_DEV_GPU_UTIL{{namespace="{namespace}"}}')
        assert {
            "gpu",
            "UUID",
            "pci_bus_id",
            "device",
            "modelName",
            "Hostname",
            "container",
        } <= sample.labels.keys()
        assert sample.labels["container"] == "triton"
        assert len(mon.prometheus.query(f'DCGM_FI_DEV_GPU_UTIL{{namespace="{namespace}"}}')) == 4
        # a value changed by the test reaches Prometheus within a few scrapes
        mon.exporter.set("DCGM_FI_DEV_GPU_UTIL", 15, namespace=namespace)
        mon.prometheus.wait_for(per_pod, lambda v: v == [15.0, 15.0], timeout=15)
        (target,) = mon.prometheus.targets()
        assert target["health"] == "up", target
        # promtool, Prometheus' own linter, parses the page; what it says is only the style
        # dcgm-exporter itself has (camelCase modelName/UUID, counters without _total)
        check = subprocess.run(
            ["promtool", "check", "metrics"],
            input=mon.exporter.metrics_text(),
            capture_output=True,
            text=True,
        )
        problems = {line.split(" ", 1)[1] for line in (check.stdout + check.stderr).splitlines() if line}
        assert problems <= {
            "label names should be written in 'snake_case' not 'camelCase'",
            'counter metrics should have "_total" suffix',
            "metric name should not include type 'counter'",
        }, check.stderr
    client.AppsV1Api(kube_api).delete_namespaced_deployment("m", namespace)
    wait_for(lambda: not mon.prometheus.running(), timeout=5, what="prometheus to stop")


def _adapter_get(adapter: PrometheusAdapter, token: str, path: str) -> dict[str, Any]:
    """A GET straight to the adapter (not registered as an APIService here), as the API server's
    aggregator would make it; the adapter authenticates the token with a TokenReview."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    req = urllib.request.Request(f"https://127.0.0.1:{adapter.port}{path}")
    req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as e:
        return {"error": e.code}


def test_the_gpu_operator_label_layout_needs_its_own_rules(
    sim_cluster: SimCluster, kube_api: Any, namespace: str, tmp_path: Path
) -> None:
    """Behind the GPU Operator's ServiceMonitor (honorLabels: false) the target's own namespace/pod
    labels win and dcgm-exporter's become exported_namespace/exported_pod: the rules of the
    gpu-operator layout serve the metric for the right pods, those of the other layout nothing."""
    from kubernetes import client  # noqa: PLC0415

    client.AppsV1Api(kube_api).create_namespaced_deployment(namespace, _deployment("g", 1, 1))
    with Monitoring(sim_cluster) as mon:
        target = {
            "namespace": "gpu-operator",
            "pod": "nvidia-dcgm-exporter-x7k2p",
            "container": "nvidia-dcgm-exporter",
        }
        mon.prometheus.jobs.clear()
        mon.prometheus.add_job("gpu-operator/nvidia-dcgm-exporter", [mon.exporter.address], labels=target,
                               honor_labels=False)  # fmt: skip
        mon.exporter.set("DCGM_FI_DEV_GPU_UTIL", 66, namespace=namespace)
        expr = f'DCGM_FI_DEV_GPU_UTIL{{exported_namespace="{namespace}"}}'
        mon.prometheus.wait_for(expr, lambda v: v == [66.0], timeout=30)
        (pod,) = client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items
        path = f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/*/DCGM_FI_DEV_GPU_UTIL"
        served = {}
        for layout in ("gpu-operator", "dcgm-exporter"):
            adapter = PrometheusAdapter(
                tmp_path / layout, sim_cluster.kubeconfig, mon.prometheus.url, adapter_rules(layout)
            )
            adapter.start()
            try:

                def items(a: PrometheusAdapter = adapter) -> list[tuple[str, str]]:
                    got = _adapter_get(a, sim_cluster.admin_token, path)
                    return sorted((i["describedObject"]["name"], i["value"]) for i in got.get("items") or [])

                if layout == "gpu-operator":
                    served[layout] = wait_for(
                        items, timeout=20, what="the gpu-operator rules serving the pod"
                    )
                else:
                    time.sleep(2)  # two relists (1 s): whatever this layout's rules find, they serve by now
                    served[layout] = items()
            finally:
                adapter.stop()
        assert served["gpu-operator"] == [(pod.metadata.name, "66")]
        assert served["dcgm-exporter"] == []
    client.AppsV1Api(kube_api).delete_namespaced_deployment("g", namespace)
