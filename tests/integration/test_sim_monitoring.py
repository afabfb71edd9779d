"""The dcgm-exporter stand-in scraped by a real Prometheus, for pods the real scheduler placed."""

from __future__ import annotations

import subprocess
from typing import Any

from deepseek_operator.sim.cluster import SimCluster
from deepseek_operator.sim.monitoring import Monitoring
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
