"""NCCL: fabric hints from node labels and resources, fabric detection, profiles and env validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepseek_operator.errors import SpecError
from deepseek_operator.planning.nccl import (
    DEBUG_KNOBS,
    EFA_RESOURCE,
    FABRICS,
    PROFILES,
    detect_fabric,
    fabric_hints,
    nccl_profile,
    validate_nccl_env,
)
from deepseek_operator.planning.types import NodeInfo

NFD = "feature.node.kubernetes.io/"
PRODUCT = "nvidia.com/gpu.product"
H100_SXM = "NVIDIA-H100-80GB-HBM3"


def node(
    name: str,
    product: str = H100_SXM,
    labels: dict[str, str] | None = None,
    allocatable: dict[str, str] | None = None,
) -> NodeInfo:
    """A NodeInfo as the inventory builds it: hints from the node's labels and allocatable."""
    all_labels = {PRODUCT: product, **(labels or {})}
    return NodeInfo(
        name=name,
        gpu_product=product,
        gpu_memory_mib=81559,
        gpus_allocatable=8,
        gpus_requested=0,
        labels=tuple(sorted(all_labels.items())),
        fabric_hints=fabric_hints(all_labels, allocatable or {}),
    )


IB = {"rdma/rdma_shared_device_a": "63"}
EFA = {EFA_RESOURCE: "32"}


# ------------------------------------------------------------------ fabric_hints


@pytest.mark.parametrize(
    ("labels", "allocatable", "expected"),
    [
        # GPUs inside the node (GFD product names)
        ({PRODUCT: "NVIDIA-H100-80GB-HBM3"}, {}, ("nvlink",)),
        ({PRODUCT: "NVIDIA-H200"}, {}, ("nvlink",)),
        ({PRODUCT: "NVIDIA-B200"}, {}, ("nvlink",)),
        ({PRODUCT: "NVIDIA-A100-SXM4-80GB"}, {}, ("nvlink",)),
        ({PRODUCT: "NVIDIA-A100-SXM4-40GB-SHARED"}, {}, ("nvlink",)),
        ({PRODUCT: "NVIDIA-H100-PCIe"}, {}, ("pcie",)),
        ({PRODUCT: "NVIDIA-A100-PCIE-40GB"}, {}, ("pcie",)),
        ({PRODUCT: "NVIDIA-A100-80GB-PCIe"}, {}, ("pcie",)),
        ({PRODUCT: "NVIDIA-H100-NVL"}, {}, ("pcie",)),
        ({PRODUCT: "NVIDIA-L40S"}, {}, ("pcie",)),
        ({PRODUCT: "NVIDIA-L4"}, {}, ("pcie",)),
        ({PRODUCT: "NVIDIA-A10G"}, {}, ("pcie",)),
        ({PRODUCT: "NVIDIA-GeForce-RTX-4090"}, {}, ("pcie",)),
        ({PRODUCT: "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"}, {}, ()),  # MIG: no NVLink P2P
        ({PRODUCT: "Some-Future-GPU"}, {}, ()),
        ({"nvidia.com/gpu.clique": "a1b2c3.0"}, {}, ("nvlink",)),  # GFD: fabric-attached GPUs
        # EFA
        ({}, {EFA_RESOURCE: "4"}, ("efa",)),
        ({}, {EFA_RESOURCE: "0"}, ()),  # advertised but none allocatable
        ({PRODUCT: H100_SXM}, {EFA_RESOURCE: "32"}, ("efa", "nvlink")),
        # RDMA device-plugin resources
        ({}, {"rdma/hca_shared_devices_a": "1000"}, ("infiniband",)),
        ({}, {"rdma/rdma_shared_device_a": "63"}, ("infiniband",)),
        ({}, {"rdma/ib": "1"}, ("infiniband",)),
        ({}, {"rdma/rdma_shared_device_ib": "63"}, ("infiniband",)),
        ({}, {"nvidia.com/hostdev": "8"}, ("infiniband",)),
        ({}, {"rdma/roce": "1"}, ("roce",)),
        ({}, {"rdma/rdma_shared_device_eth": "63"}, ("roce",)),
        ({}, {"rdma/rdma_a100": "0"}, ()),
        # A generic RDMA resource next to a ConnectX in Ethernet mode: RoCE
        ({NFD + "pci-0200_15b3.present": "true"}, {"rdma/rdma_shared_device_a": "63"}, ("roce",)),
        # ... but an InfiniBand controller wins (IB compute NICs, Ethernet front-end NIC)
        (
            {NFD + "pci-0207_15b3.present": "true", NFD + "pci-0200_15b3.present": "true"},
            {"rdma/rdma_shared_device_a": "63"},
            ("infiniband",),
        ),
        # NFD labels
        ({NFD + "pci-0207_15b3.present": "true"}, {}, ("infiniband",)),
        ({NFD + "pci-0200_15b3.present": "true", NFD + "custom-rdma.capable": "true"}, {}, ("roce",)),
        ({NFD + "pci-15b3.present": "true", NFD + "rdma.available": "true"}, {}, ("infiniband",)),
        (
            {"network.nvidia.com/operator.mofed.wait": "false", NFD + "custom-rdma.available": "true"},
            {},
            ("infiniband",),
        ),
        ({NFD + "pci-0200_15b3.present": "true"}, {}, ()),  # a ConnectX without RDMA is just Ethernet
        ({NFD + "pci-15b3.present": "true"}, {}, ()),
        ({NFD + "rdma.capable": "true"}, {}, ()),  # RDMA of unknown vendor/link: no hint
        ({NFD + "pci-0207_15b3.present": "false"}, {}, ()),
        # Plain Ethernet node
        ({"kubernetes.io/os": "linux"}, {"cpu": "64", "nvidia.com/gpu": "8"}, ()),
    ],
)
def test_fabric_hints(labels: dict[str, str], allocatable: dict[str, str], expected: tuple[str, ...]) -> None:
    assert fabric_hints(labels, allocatable) == expected


def test_fabric_hints_are_sorted_and_known() -> None:
    hints = fabric_hints(
        {PRODUCT: H100_SXM, NFD + "pci-0207_15b3.present": "true"},
        {EFA_RESOURCE: "4", "rdma/ib": "1"},
    )
    assert hints == tuple(sorted(hints)) == ("efa", "infiniband", "nvlink")
    assert set(hints) <= set(FABRICS)


# ------------------------------------------------------------------ detect_fabric


@pytest.mark.parametrize(
    ("nodes", "per_replica", "expected"),
    [
        ([node("a", H100_SXM)], 1, "nvlink"),
        ([node("a", H100_SXM), node("b", "NVIDIA-A100-SXM4-80GB")], 1, "nvlink"),
        ([node("a", "NVIDIA-L40S")], 1, "pcie"),
        ([node("a", "NVIDIA-H100-PCIe"), node("b", "NVIDIA-RTX-4090")], 1, "pcie"),
        ([node("a", H100_SXM), node("b", "NVIDIA-L40S")], 1, "pcie"),  # not every candidate has NVLink
        ([], 1, "pcie"),
        ([node("a", allocatable=IB), node("b", allocatable=IB)], 2, "infiniband"),
        ([node("a", allocatable=IB), node("b")], 2, "ethernet"),
        ([node("a", allocatable=EFA), node("b", allocatable=EFA)], 2, "efa"),
        ([node("a", allocatable=EFA), node("b", allocatable=IB)], 2, "ethernet"),
        (
            [node("a", allocatable={"rdma/roce": "1"}), node("b", allocatable={"rdma/roce": "4"})],
            2,
            "roce",
        ),
        ([node("a"), node("b")], 2, "ethernet"),
        ([], 2, "ethernet"),
    ],
)
def test_detect_fabric(nodes: list[NodeInfo], per_replica: int, expected: str) -> None:
    assert detect_fabric(nodes, per_replica) == expected


def test_detect_fabric_reads_the_product_when_hints_are_empty() -> None:
    bare = NodeInfo(
        name="a", gpu_product=H100_SXM, gpu_memory_mib=81559, gpus_allocatable=8, gpus_requested=0
    )
    assert detect_fabric([bare], 1) == "nvlink"


# ------------------------------------------------------------------ profiles


@pytest.mark.parametrize("fabric", FABRICS)
def test_every_profile_is_within_documented_ranges(fabric: str) -> None:
    profile = PROFILES[fabric]
    assert profile.fabric == fabric
    assert validate_nccl_env(dict(profile.env)) == []  # no error, no warning
    assert not set(dict(profile.env)) & set(DEBUG_KNOBS)
    assert "NCCL_PROTO" not in dict(profile.env)
    built = nccl_profile(fabric, ())
    assert built.env == tuple(sorted(profile.env))


def test_profile_contents() -> None:
    assert PROFILES["nvlink"].env == () and PROFILES["pcie"].env == ()
    assert "NCCL_P2P_DISABLE" in PROFILES["pcie"].notes  # a workaround named, not set
    ib = dict(PROFILES["infiniband"].env)
    assert ib["NCCL_IB_DISABLE"] == "0" and ib["NCCL_SOCKET_IFNAME"].startswith("^")
    assert dict(PROFILES["roce"].env)["NCCL_IB_GID_INDEX"] == "3"
    eth = dict(PROFILES["ethernet"].env)
    assert (eth["NCCL_IB_DISABLE"], eth["NCCL_SOCKET_NTHREADS"], eth["NCCL_NSOCKS_PERTHREAD"]) == (
        "1",
        "4",
        "4",
    )
    efa = PROFILES["efa"]
    assert dict(efa.env) == {"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1", "FI_EFA_FORK_SAFE": "1"}
    assert efa.extra_resources == ((EFA_RESOURCE, "1"),)


def test_overrides_win_and_are_sorted() -> None:
    p = nccl_profile(
        "ethernet", (("NCCL_SOCKET_NTHREADS", "8"), ("NCCL_DEBUG", "WARN"), ("NCCL_ALGO", "Ring"))
    )
    env = dict(p.env)
    assert env["NCCL_SOCKET_NTHREADS"] == "8" and env["NCCL_NSOCKS_PERTHREAD"] == "4"
    assert env["NCCL_DEBUG"] == "WARN"
    assert [k for k, _ in p.env] == sorted(env)
    assert "spec.nccl.env.NCCL_ALGO" in p.notes  # a debugging knob: allowed, but warned about


def test_empty_override_removes_a_profile_variable() -> None:
    env = dict(nccl_profile("roce", (("NCCL_IB_GID_INDEX", ""),)).env)
    assert "NCCL_IB_GID_INDEX" not in env and env["NCCL_IB_DISABLE"] == "0"


def test_overrides_are_validated_against_the_merged_profile() -> None:
    # the profile's NTHREADS=4 times the user's NSOCKS=32 is 128
    with pytest.raises(SpecError, match=r"spec\.nccl\.env\.NCCL_NSOCKS_PERTHREAD.*128"):
        nccl_profile("ethernet", (("NCCL_NSOCKS_PERTHREAD", "32"),))


def test_unknown_fabric_is_refused() -> None:
    with pytest.raises(SpecError, match=r"spec\.nccl\.fabric.*nvlink"):
        nccl_profile("auto", ())


def test_efa_device_rdma_only_where_the_efa_supports_rdma_read() -> None:
    p5 = nccl_profile("efa", (), [node("a", H100_SXM), node("b", "NVIDIA-H200")])
    assert dict(p5.env)["FI_EFA_USE_DEVICE_RDMA"] == "1"
    g5 = nccl_profile("efa", (), [node("a", "NVIDIA-A10G"), node("b", "NVIDIA-A10G")])
    assert "FI_EFA_USE_DEVICE_RDMA" not in dict(g5.env)
    assert dict(g5.env)["FI_PROVIDER"] == "efa"


def test_efa_requests_the_devices_every_node_has() -> None:
    p = nccl_profile(
        "efa", (), [node("a"), node("b")], allocatable=[{EFA_RESOURCE: "32"}, {EFA_RESOURCE: "16"}]
    )
    assert p.extra_resources == ((EFA_RESOURCE, "16"),)
    unknown = nccl_profile("efa", (), [node("a")])
    assert unknown.extra_resources == ((EFA_RESOURCE, "1"),)
    assert "count unknown" in unknown.notes


def test_rdma_resource_requested_for_infiniband_and_roce() -> None:
    alloc = [
        {"rdma/rdma_shared_device_ib": "63", "rdma/rdma_shared_device_eth": "63"},
        {"rdma/rdma_shared_device_ib": "63", "rdma/rdma_shared_device_eth": "63"},
    ]
    assert nccl_profile("infiniband", (), allocatable=alloc).extra_resources == (
        ("rdma/rdma_shared_device_ib", "1"),
    )
    assert nccl_profile("roce", (), allocatable=alloc).extra_resources == (
        ("rdma/rdma_shared_device_eth", "1"),
    )
    hostdev = [{"nvidia.com/hostdev": "8"}, {"nvidia.com/hostdev": "4"}]
    assert nccl_profile("infiniband", (), allocatable=hostdev).extra_resources == (
        ("nvidia.com/hostdev", "4"),
    )
    assert nccl_profile("infiniband", ()).extra_resources == ()


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("NCCL_SOCKET_NTHREADS", "0", "1 to 16"),
        ("NCCL_SOCKET_NTHREADS", "17", "1 to 16"),
        ("NCCL_SOCKET_NTHREADS", "four", "1 to 16"),
        ("NCCL_NSOCKS_PERTHREAD", "0", ">= 1"),
        ("NCCL_NSOCKS_PERTHREAD", "65", "<= 64"),
        ("NCCL_IB_GID_INDEX", "-2", ">= 0"),
        ("NCCL_IB_GID_INDEX", "3.5", ">= 0"),
        ("NCCL_NET_GDR_LEVEL", "NVL", "LOC, PIX, PXB, PHB, SYS"),
        ("NCCL_NET_GDR_LEVEL", "6", "0 to 5"),
        ("NCCL_NET_GDR_LEVEL", "phb", "LOC, PIX, PXB, PHB, SYS"),
        ("NCCL_P2P_LEVEL", "NODE", "LOC, NVL, PIX"),
        ("NCCL_IB_DISABLE", "true", "0 or 1"),
        ("NCCL_IB_DISABLE", "2", "0 or 1"),
        ("NCCL_P2P_DISABLE", "yes", "0 or 1"),
        ("NCCL_SHM_DISABLE", "-1", "0 or 1"),
        ("NCCL_CROSS_NIC", "3", "0 (same NIC)"),
        ("NCCL_DEBUG", "DEBUG", "VERSION, WARN, INFO, TRACE"),
        ("NCCL_IB_HCA", "=^mlx5_0", "[^][=]hca"),
        ("NCCL_IB_HCA", "mlx5_0:x", "[^][=]hca"),
        ("NCCL_IB_HCA", "mlx5_0,,mlx5_1", "[^][=]hca"),
        ("NCCL_IB_HCA", "", "[^][=]hca"),
        ("NCCL_SOCKET_IFNAME", "^lo docker", "[^][=]prefix"),
        ("NCCL_SOCKET_IFNAME", "eth0,", "[^][=]prefix"),
        ("NCCL_SOCKET_FAMILY", "inet", "AF_INET or AF_INET6"),
        ("NCCL_IB_TIMEOUT", "32", "0 to 31"),
        ("NCCL_IB_RETRY_CNT", "8", "0 to 7"),
        ("NCCL_IB_QPS_PER_CONNECTION", "0", "1 to 128"),
        ("NCCL_NTHREADS", "1024", "64, 128, 256 or 512"),
        ("NCCL_MAX_CTAS", "65", "1 to 64"),
        ("NCCL_BUFFSIZE", "0", "positive integer"),
        ("NCCL_PROTO", "LL256", "LL, LL128, Simple"),
        ("NCCL_ALGO", "ring,butterfly", "Ring, Tree"),
        ("NCCL_NVLS_ENABLE", "on", "0, 1 or 2"),
        ("FI_EFA_USE_DEVICE_RDMA", "2", "0/1"),
        ("FI_EFA_FORK_SAFE", "maybe", "0/1"),
        ("FI_PROVIDER", "", "libfabric provider"),
    ],
)
def test_out_of_range_values_are_refused_with_the_field(name: str, value: str, allowed: str) -> None:
    with pytest.raises(SpecError) as err:
        validate_nccl_env({name: value})
    message = str(err.value)
    assert f"spec.nccl.env.{name}" in message
    assert allowed in message


def test_every_bad_field_is_named_at_once() -> None:
    with pytest.raises(SpecError) as err:
        validate_nccl_env({"NCCL_SOCKET_NTHREADS": "99", "NCCL_CROSS_NIC": "7", "NCCL_SOCKET_IFNAME": "eth0"})
    assert "NCCL_SOCKET_NTHREADS" in str(err.value) and "NCCL_CROSS_NIC" in str(err.value)


def test_product_rule_refuses_8_by_16() -> None:
    with pytest.raises(SpecError, match=r"spec\.nccl\.env\.NCCL_NSOCKS_PERTHREAD.*8 x 16 = 128 exceeds 64"):
        validate_nccl_env({"NCCL_SOCKET_NTHREADS": "8", "NCCL_NSOCKS_PERTHREAD": "16"})


@given(threads=st.integers(1, 16), data=st.data())
def test_any_threads_and_sockets_within_64_pass(threads: int, data: st.DataObject) -> None:
    socks = data.draw(st.integers(1, 64 // threads))
    assert (
        validate_nccl_env({"NCCL_SOCKET_NTHREADS": str(threads), "NCCL_NSOCKS_PERTHREAD": str(socks)}) == []
    )


@given(threads=st.integers(1, 16), socks=st.integers(1, 64))
def test_threads_times_sockets_over_64_fail(threads: int, socks: int) -> None:
    env = {"NCCL_SOCKET_NTHREADS": str(threads), "NCCL_NSOCKS_PERTHREAD": str(socks)}
    if threads * socks <= 64:
        assert validate_nccl_env(env) == []
    else:
        with pytest.raises(SpecError, match="exceeds 64"):
            validate_nccl_env(env)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"NCCL_IB_HCA": "=mlx5_0:1,mlx5_1:1"}, None),
        ({"NCCL_IB_HCA": "^=mlx5_1,mlx5_4"}, None),
        ({"NCCL_IB_HCA": "=mlx5_0::0:0,mlx5_1::0:1"}, None),
        ({"NCCL_SOCKET_IFNAME": "=eth0,eth1"}, None),
        ({"NCCL_SOCKET_IFNAME": "^=docker0"}, None),
        ({"NCCL_NET_GDR_LEVEL": "PHB"}, "NCCL_NET_GDR_LEVEL: a debugging knob"),
        ({"NCCL_NET_GDR_LEVEL": "5"}, "NCCL_NET_GDR_LEVEL: a debugging knob"),
        ({"NCCL_IB_GID_INDEX": "-1"}, None),
        ({"NCCL_DEBUG": "WARN"}, None),
        ({"NCCL_DEBUG": "INFO"}, "logs heavily"),
        ({"NCCL_PROTO": "^LL128"}, "NCCL_PROTO: a debugging knob"),
        ({"NCCL_PROTO": "allreduce:^LL128;broadcast:simple"}, "NCCL_PROTO: a debugging knob"),
        ({"NCCL_ALGO": "ring,tree"}, "NCCL_ALGO: a debugging knob"),
        ({"NCCL_BUFFSIZE": "8388608"}, "NCCL_BUFFSIZE: a debugging knob"),
        ({"NCCL_P2P_LEVEL": "NVL"}, "NCCL_P2P_LEVEL: a debugging knob"),
        ({"NCCL_P2P_DISABLE": "1"}, "NCCL_P2P_DISABLE: a debugging knob"),
        ({"NCCL_IB_HCA": "mlx5_1"}, "write '=' first"),
        ({"FI_EFA_USE_DEVICE_RDMA": "true"}, None),
        ({"UCX_TLS": "anything"}, None),  # no rule: passes unchecked
    ],
)
def test_valid_values_pass_and_debugging_knobs_warn(env: dict[str, str], fragment: str | None) -> None:
    warnings = validate_nccl_env(env)
    if fragment is None:
        assert warnings == []
    else:
        assert any(fragment in w and w.startswith("spec.nccl.env.") for w in warnings)
