"""The dcgm-exporter stand-in's format, labels and GPU allocation (sim/monitoring.py).

The expected strings are dcgm-exporter's, read from its source at tag 4.5.3-4.8.2:
etc/default-counters.csv (counters), internal/pkg/rendermetrics/render_metrics.go
(gpuMetricsFormat: label order), internal/pkg/transformation/kubernetes.go (pod attributes),
internal/pkg/collector/gpu_collector.go (``%d`` / ``%f`` values, XID attributes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from deepseek_operator.errors import SimError
from deepseek_operator.sim import monitoring as mon
from deepseek_operator.sim.monitoring import GPU, GPUAllocator, SimNode

H100 = "NVIDIA-H100-80GB-HBM3"


def _counter(name: str) -> mon.Counter:
    return next(c for c in mon.STAND_IN_COUNTERS if c.name == name)


def test_default_counters_are_the_csv_of_4_5_3_4_8_2() -> None:
    names = [c.name for c in mon.DEFAULT_COUNTERS]
    # The uncommented metric lines of etc/default-counters.csv, in file order.
    assert names == [
        "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_MEMORY_TEMP",
        "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL",
        "DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_DEV_DEC_UTIL", "DCGM_FI_DEV_XID_ERRORS",
        "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_RESERVED",
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "DCGM_FI_DEV_VGPU_LICENSE_STATUS",
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_DEV_ROW_REMAP_FAILURE", "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_PROF_DRAM_ACTIVE",
        "DCGM_FI_PROF_PCIE_TX_BYTES", "DCGM_FI_PROF_PCIE_RX_BYTES",
    ]  # fmt: skip
    types = {c.name: c.prom_type for c in mon.DEFAULT_COUNTERS}
    assert types["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"] == "counter"
    assert types["DCGM_FI_DEV_GPU_UTIL"] == "gauge"
    assert "DCGM_FI_PROF_SM_ACTIVE" not in names  # commented out in the CSV ...
    assert "DCGM_FI_PROF_SM_ACTIVE" in [c.name for c in mon.STAND_IN_COUNTERS]  # ... served as an extra


def test_a_gpu_held_by_a_pod_has_dcgm_exporters_labels_in_its_order() -> None:
    gpu = GPU("gpu-h100-0", 3, H100, 81559, "ns", "p-0", "triton")
    text = mon.render([gpu], lambda c, g: 73, [_counter("DCGM_FI_DEV_GPU_UTIL")])
    assert text == (
        "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).\n"
        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
        f'DCGM_FI_DEV_GPU_UTIL{{gpu="3",UUID="{mon.gpu_uuid("gpu-h100-0", 3)}",'
        'pci_bus_id="00000000:5D:00.0",device="nvidia3",modelName="NVIDIA H100 80GB HBM3",'
        'Hostname="gpu-h100-0",DCGM_FI_DRIVER_VERSION="570.172.08",'
        'container="triton",namespace="ns",pod="p-0"} 73\n'
    )


def test_a_free_gpu_has_no_pod_labels_and_main_spells_hostname_in_lower_case() -> None:
    gpu = GPU("n", 0, H100, 81559)
    labels = dict(mon.series_labels(gpu, _counter("DCGM_FI_DEV_GPU_UTIL"), "hostname"))
    assert labels["hostname"] == "n" and "Hostname" not in labels
    assert not {"pod", "namespace", "container"} & labels.keys()
    with pytest.raises(SimError, match="hostname_label"):
        mon.DcgmExporterStandIn("https://x", "t", Path("/nonexistent"), hostname_label="host")


def test_values_print_as_dcgm_exporter_prints_int64_and_double_fields() -> None:
    assert mon.format_value(73, _counter("DCGM_FI_DEV_GPU_UTIL")) == "73"
    assert mon.format_value(71.25, _counter("DCGM_FI_DEV_POWER_USAGE")) == "71.250000"
    assert mon.format_value(0.5, _counter("DCGM_FI_PROF_SM_ACTIVE")) == "0.500000"
    assert mon.format_value(1e9, _counter("DCGM_FI_PROF_PCIE_TX_BYTES")) == "1000000000"


def test_xid_errors_carry_err_code_and_err_msg_before_the_pod_labels() -> None:
    keys = [
        k
        for k, _ in mon.series_labels(
            GPU("n", 0, H100, 1, "ns", "p", "c"), _counter("DCGM_FI_DEV_XID_ERRORS")
        )
    ]
    assert keys[-5:] == ["container", "err_code", "err_msg", "namespace", "pod"]


@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 100), st.sampled_from(["a", "b"])), min_size=1, max_size=6
    )
)
def test_the_whole_page_parses_as_prometheus_text(gpus: list[tuple[int, int, str]]) -> None:
    page = mon.render(
        [GPU(f"node-{n}", i % 8, H100, 81559, "ns", f"p-{i}-{n}", c) for n, i, c in gpus],
        lambda c, g: 1.5,
    )
    families = {f.name: f for f in text_string_to_metric_families(page)}
    # the parser drops a counter's _total-less name to its base name; every counter is there
    assert len(families) == len(mon.STAND_IN_COUNTERS)
    util = families["DCGM_FI_DEV_GPU_UTIL"]
    assert len(util.samples) == len(gpus)
    assert all(s.labels["modelName"] == "NVIDIA H100 80GB HBM3" for s in util.samples)


def _pod(name: str, node: str | None, gpus: int, uid: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": uid or f"uid-{name}", "labels": {"app": "m"}},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "sidecar"},
                {"name": "triton", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}},
            ],
        },
        "status": {"phase": extra.get("phase", "Running")},
    }


def test_containers_keep_their_gpus_while_their_pods_live() -> None:
    nodes = {"n0": SimNode(H100, 8, 81559)}
    alloc = GPUAllocator()
    gpus = alloc.assign(nodes, [_pod("a", "n0", 2), _pod("b", "n0", 4), _pod("pending", None, 8)])
    held = {g.index: g.pod for g in gpus if g.pod}
    assert held == {0: "a", 1: "a", 2: "b", 3: "b", 4: "b", 5: "b"}
    assert {g.container for g in gpus if g.pod} == {"triton"}
    # a goes away, c arrives: b keeps 2-5, c takes the lowest free ones
    gpus = alloc.assign(nodes, [_pod("b", "n0", 4), _pod("c", "n0", 3)])
    held = {g.index: g.pod for g in gpus if g.pod}
    assert held == {0: "c", 1: "c", 2: "b", 3: "b", 4: "b", 5: "b", 6: "c"}
    # finished pods hold nothing
    gpus = alloc.assign(nodes, [_pod("b", "n0", 4, phase="Succeeded")])
    assert not [g for g in gpus if g.pod] and len(gpus) == 8


def test_a_later_setting_wins_and_selectors_match_pods() -> None:
    exp = mon.DcgmExporterStandIn("https://x", "t", Path("/nonexistent"))
    util = _counter("DCGM_FI_DEV_GPU_UTIL")
    a = GPU("n0", 0, H100, 81559, "ns", "a", "triton", {"app": "m"})
    free = GPU("n0", 1, H100, 81559)
    assert exp._value(util, a) == 0
    exp.set("DCGM_FI_DEV_GPU_UTIL", 20)
    exp.set("DCGM_FI_DEV_GPU_UTIL", 90, labels={"app": "m"})
    assert (exp._value(util, a), exp._value(util, free)) == (90, 20)
    exp.set("DCGM_FI_DEV_GPU_UTIL", 10)  # the same key again moves to the end: latest wins
    assert exp._value(util, a) == 10
    exp.set("DCGM_FI_DEV_FB_USED", 60000, pod="a")
    assert exp._value(_counter("DCGM_FI_DEV_FB_FREE"), a) == 81559 - 60000 - 528
    with pytest.raises(SimError, match="DCGM_FI_DEV_NOPE is not served"):
        exp.set("DCGM_FI_DEV_NOPE", 1)
    exp.reset()
    assert exp._value(util, a) == 0
