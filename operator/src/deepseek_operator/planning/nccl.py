"""NCCL: what a node says about its interconnects, the fabric a replica talks over, and its environment.

Pure functions, no I/O. :func:`fabric_hints` reads a node's labels and allocatable resources
(the inventory stores the result in ``NodeInfo.fabric_hints``); :func:`detect_fabric` picks the
fabric for ``spec.nccl.fabric: auto``; :func:`nccl_profile` returns the environment for a fabric
with the user's ``spec.nccl.env`` merged over it and checked by :func:`validate_nccl_env`.

Sources (each rule and variable below names the one it rests on):

[NCCL-ENV]  NCCL environment variables, https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/env.html
            ("System configuration" vs "Debugging": the latter "should generally not be set for
            production code"; ranges quoted per variable below).
[OFI-EFA]   aws-ofi-nccl EFA cheatsheet, https://github.com/aws/aws-ofi-nccl/blob/master/doc/efa-env-var.md
[EFA-ABORT] libfabric prov/efa: ``FI_EFA_USE_DEVICE_RDMA=1`` on an EFA device without RDMA read
            prints "EFA device has no rdma-read capability. Application will abort()" and aborts.
[EKS-EFA]   https://docs.aws.amazon.com/eks/latest/userguide/device-management-efa.html
            (the EFA device plugin advertises ``vpc.amazonaws.com/efa``; a device serves one pod).
[NFD]       Node Feature Discovery feature labels,
            https://kubernetes-sigs.github.io/node-feature-discovery/stable/usage/features.html
            (``pci-<class>_<vendor>.present``; built-in ``custom-rdma.capable`` / ``custom-rdma.enabled``).
[PCI-IDS]   PCI class 02 subclass 07 is "Infiniband controller" (pci.ids); vendor 15b3 is Mellanox/NVIDIA.
[RDMA-DP]   https://github.com/Mellanox/k8s-rdma-shared-dev-plugin (resource prefix ``rdma/``, names
            chosen by the operator, e.g. ``hca_shared_devices_a``; suggests the NFD label
            ``feature.node.kubernetes.io/custom-rdma.available``).
[NETOP]     NVIDIA Network Operator, https://docs.nvidia.com/networking/display/kubernetes2570/
            (``rdma/rdma_shared_device_a``, ``nvidia.com/hostdev`` with ``isRdma``; the label
            ``network.nvidia.com/operator.mofed.wait`` on nodes with NVIDIA NICs).
[GFD]       GPU Feature Discovery, https://github.com/NVIDIA/k8s-device-plugin (internal/lm): labels
            ``nvidia.com/gpu.product`` (NVML name, spaces to dashes) and, for fabric-attached
            (multi-node NVLink) GPUs only, ``nvidia.com/gpu.clique``. GFD has no NVLink label for
            HGX/SXM boards, so NVLink is read from the product name.
[GID]       NVIDIA forum, "Configure CX-7 400GE not to change GID index",
            https://forums.developer.nvidia.com/t/configure-cx-7-400ge-not-to-change-gid-index/297832
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from deepseek_operator.api.constants import GPU_PRODUCT_LABEL
from deepseek_operator.errors import SpecError
from deepseek_operator.planning.types import NCCLProfile, NodeInfo

FABRICS: Final = ("nvlink", "pcie", "infiniband", "roce", "ethernet", "efa")
# Inter-node fabrics, best first: a multi-node replica uses the best one every candidate node has.
INTER_NODE_ORDER: Final = ("efa", "infiniband", "roce", "ethernet")

EFA_RESOURCE: Final = "vpc.amazonaws.com/efa"
_NFD: Final = "feature.node.kubernetes.io/"


# --------------------------------------------------------------------------------------------
# Hints: one table of rules over labels and allocatable resources
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HintRule:
    """One piece of evidence: a label (key and value) or an allocatable resource (count > 0)."""

    kind: str  # "label" | "resource"
    key: str  # regular expression, matched in full against the label key / resource name
    value: str  # labels: regular expression matched in full against the value ("" = any value)
    evidence: str  # see _resolve: efa|ib|roce|rdma-device|rdma-capable|nvidia-nic|mlx-eth|nvlink|pcie
    source: str


# Evidence words, resolved into hints by _resolve:
#   efa          -> "efa"
#   ib           -> "infiniband" (an InfiniBand controller or an IB-named RDMA resource)
#   roce         -> "roce" when RDMA is also usable (an Ethernet-named RDMA resource, or a
#                   Mellanox/NVIDIA NIC in Ethernet mode together with RDMA evidence)
#   rdma-device  -> an RDMA device plugin resource: "infiniband" unless RoCE evidence says Ethernet
#   rdma-capable -> NFD says the RDMA stack is there; counts only with an NVIDIA/Mellanox NIC
#   nvidia-nic   -> an NVIDIA/Mellanox NIC of unknown link type (ConnectX may be plain Ethernet)
#   mlx-eth      -> a Mellanox/NVIDIA NIC in Ethernet mode (PCI class 0200)
#   nvlink/pcie  -> how the GPUs inside the node talk to each other
HINT_RULES: Final[tuple[HintRule, ...]] = (
    # --- AWS Elastic Fabric Adapter
    HintRule("resource", re.escape(EFA_RESOURCE), "", "efa", "[EKS-EFA] EFA device plugin resource"),
    # --- RDMA device plugin resources (a pod gets /dev/infiniband only by requesting one)
    HintRule(
        "resource",
        r"rdma/(.*[_-])?(ib|infiniband)([_-].*)?",
        "",
        "ib",
        "[RDMA-DP]/[NETOP] shared RDMA resource named for IB (e.g. rdma/rdma_shared_device_ib)",
    ),
    HintRule(
        "resource",
        r"rdma/(.*[_-])?(roce|eth|ethernet)([_-].*)?",
        "",
        "roce",
        "[RDMA-DP]/[NETOP] shared RDMA resource named for Ethernet (e.g. rdma/rdma_shared_device_eth)",
    ),
    HintRule(
        "resource",
        r"rdma/.+",
        "",
        "rdma-device",
        "[RDMA-DP] any rdma/* resource (e.g. rdma/hca_shared_devices_a, rdma/rdma_shared_device_a)",
    ),
    HintRule(
        "resource",
        r"nvidia\.com/hostdev(_.*)?",
        "",
        "rdma-device",
        "[NETOP] SR-IOV device plugin host-device resource (selector isRdma: true)",
    ),
    # --- NFD labels
    HintRule(
        "label",
        re.escape(_NFD) + r"pci-0207_[0-9a-f]{4}\.present",
        "true",
        "ib",
        "[NFD]+[PCI-IDS] PCI class 0207 (Infiniband controller), with class in deviceLabelFields",
    ),
    HintRule(
        "label",
        re.escape(_NFD) + r"pci-0200_15b3\.present",
        "true",
        "mlx-eth",
        "[NFD]+[PCI-IDS] Mellanox/NVIDIA NIC in Ethernet mode (class 0200, vendor 15b3)",
    ),
    HintRule(
        "label",
        re.escape(_NFD) + r"pci-15b3\.present",
        "true",
        "nvidia-nic",
        "[NFD]/[NETOP] vendor-only PCI label (the Network Operator's NFD config: deviceLabelFields [vendor])",
    ),
    HintRule(
        "label",
        re.escape(_NFD) + r"(custom-)?rdma\.(capable|enabled|available)",
        "true",
        "rdma-capable",
        "[NFD] built-in custom-rdma.capable/enabled; [RDMA-DP] custom-rdma.available; rdma.* variants",
    ),
    HintRule(
        "label",
        r"network\.nvidia\.com/operator\.mofed\.wait",
        "",
        "nvidia-nic",
        "[NETOP] set by the Network Operator on nodes with NVIDIA NICs",
    ),
    # --- GPUs inside the node (GFD). Product names are NVML names with spaces as dashes.
    HintRule(
        "label",
        r"nvidia\.com/gpu\.clique",
        ".+",
        "nvlink",
        "[GFD] set only for fabric-attached (multi-node NVLink) GPUs",
    ),
    HintRule(
        "label",
        re.escape(GPU_PRODUCT_LABEL),
        r"(NVIDIA|Tesla)-.*SXM\d.*",
        "nvlink",
        "[GFD] SXM boards (A100-SXM4-*, A800-SXM4-*, V100-SXM2-*) sit on NVLink/NVSwitch",
    ),
    HintRule(
        "label",
        re.escape(GPU_PRODUCT_LABEL),
        r"NVIDIA-H100-80GB-HBM3|NVIDIA-H200(-\d+GB-HBM3e?)?|NVIDIA-H800|NVIDIA-H20",
        "nvlink",
        "[GFD] H100 SXM5 reports 'H100 80GB HBM3'; H200/H800/H20 without PCIe/NVL are HGX (SXM)",
    ),
    HintRule(
        "label",
        re.escape(GPU_PRODUCT_LABEL),
        r"NVIDIA-G?B(100|200|300)(-.*)?",
        "nvlink",
        "[GFD] Blackwell B100/B200/B300 (HGX) and GB200/GB300 superchips",
    ),
    HintRule(
        "label",
        re.escape(GPU_PRODUCT_LABEL),
        r"(NVIDIA|Tesla)-.*-PCI[Ee].*",
        "pcie",
        "[GFD] PCIe cards (H100-PCIe, A100-PCIE-40GB, A100-80GB-PCIe, H800-PCIe)",
    ),
    HintRule(
        "label",
        re.escape(GPU_PRODUCT_LABEL),
        r"NVIDIA-H(100|200)-NVL",
        "pcie",
        "[GFD] H100/H200 NVL: PCIe cards, NVLink bridges pair 2-4 cards only (not all-to-all)",
    ),
    HintRule(
        "label",
        re.escape(GPU_PRODUCT_LABEL),
        r"NVIDIA-(L40S|L40|L20|L4|L2|A40|A30|A16|A10G|A10|A2)|Tesla-T4|NVIDIA-.*RTX.*",
        "pcie",
        "[GFD] PCIe-only data-center and workstation/consumer cards (L40S, L4, A10G, RTX 4090, ...)",
    ),
)

_COMPILED: Final = tuple((r, re.compile(r.key), re.compile(r.value) if r.value else None) for r in HINT_RULES)


def _count(quantity: str) -> int:
    """A device-plugin quantity as an integer (device plugins advertise whole numbers); else 0."""
    try:
        return int(str(quantity).strip())
    except ValueError:
        return 0


def _normalise_product(product: str) -> str | None:
    """The product GFD would name without sharing or MIG decorations; None for MIG devices
    (MIG instances cannot use NVLink peer-to-peer, so they say nothing about the fabric)."""
    if "-MIG-" in product:
        return None
    return product.removesuffix("-SHARED")


def _evidence(labels: Mapping[str, str], allocatable: Mapping[str, str]) -> set[str]:
    found: set[str] = set()
    resources = {name for name, qty in allocatable.items() if _count(qty) > 0}
    for rule, key, value in _COMPILED:
        if rule.kind == "resource":
            if any(key.fullmatch(name) for name in resources):
                found.add(rule.evidence)
            continue
        for name, raw in labels.items():
            if not key.fullmatch(name):
                continue
            text = _normalise_product(raw) if name == GPU_PRODUCT_LABEL else raw
            if text is not None and (value is None or value.fullmatch(text)):
                found.add(rule.evidence)
    return found


def _resolve(evidence: set[str]) -> set[str]:
    hints: set[str] = set()
    if "efa" in evidence:
        hints.add("efa")
    roce = "roce" in evidence or ("mlx-eth" in evidence and bool(evidence & {"rdma-device", "rdma-capable"}))
    if "ib" in evidence:
        hints.add("infiniband")
    elif roce:
        hints.add("roce")
    elif "rdma-device" in evidence or ("rdma-capable" in evidence and "nvidia-nic" in evidence):
        # RDMA of unknown link type. NCCL's IB verbs transport serves InfiniBand and RoCE alike;
        # calling an unknown link "infiniband" keeps NCCL_IB_GID_INDEX (a RoCE-only setting) unset.
        hints.add("infiniband")
    for gpu_link in ("nvlink", "pcie"):
        if gpu_link in evidence:
            hints.add(gpu_link)
    if {"nvlink", "pcie"} <= hints:  # contradictory product labels: trust the weaker link
        hints.discard("nvlink")
    return hints


def fabric_hints(labels: Mapping[str, str], allocatable: Mapping[str, str]) -> tuple[str, ...]:
    """What a node's labels and allocatable resources say about its interconnects, sorted.

    Hints are ``efa``, ``infiniband``, ``roce`` (between nodes) and ``nvlink`` or ``pcie``
    (between the node's GPUs), following :data:`HINT_RULES`. Resources count only with an
    allocatable quantity above zero. An Ethernet node without RDMA has no inter-node hint:
    plain TCP is what every node has.
    """
    return tuple(sorted(_resolve(_evidence(labels, allocatable))))


def _node_hints(node: NodeInfo) -> set[str]:
    labels = dict(node.labels)
    if node.gpu_product and GPU_PRODUCT_LABEL not in labels:
        labels[GPU_PRODUCT_LABEL] = node.gpu_product
    return set(node.fabric_hints) | set(fabric_hints(labels, {}))


def detect_fabric(nodes: Sequence[NodeInfo], nodes_per_replica: int) -> str:
    """The fabric one replica communicates over, for ``spec.nccl.fabric: auto``.

    ``nodes`` are the candidate nodes of the replica. A single-node replica talks over NVLink
    when every candidate node's GPUs are on NVLink, else over PCIe. A multi-node replica uses
    the best inter-node fabric every candidate node has: efa > infiniband > roce > ethernet.
    """
    hints = [_node_hints(n) for n in nodes]
    if nodes_per_replica <= 1:
        return "nvlink" if hints and all("nvlink" in h for h in hints) else "pcie"
    for fabric in INTER_NODE_ORDER[:-1]:
        if hints and all(fabric in h for h in hints):
            return fabric
    return "ethernet"


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------

# Bootstrap and socket traffic: any interface but loopback and docker bridges. [NCCL-ENV]
# NCCL_SOCKET_IFNAME: "^" excludes interfaces starting with any listed prefix ("^docker" is the
# docs' own example). NCCL avoids lo/docker* by default only "unless there are no other
# interfaces"; naming the exclusion keeps a pod that has only those from bootstrapping over them.
_SOCKET_IFNAME: Final = ("NCCL_SOCKET_IFNAME", "^lo,docker")

PROFILES: Final[Mapping[str, NCCLProfile]] = {
    # NVLink/NVSwitch inside a node: NCCL's defaults pick NVLink (and NVLS on NVSwitch systems)
    # by themselves; nothing to set. What matters is outside NCCL: a large /dev/shm and memlock.
    "nvlink": NCCLProfile(
        fabric="nvlink",
        env=(),
        notes=(
            "NVLink/NVSwitch: NCCL defaults are right. Give the pod a memory-backed /dev/shm "
            "(emptyDir medium Memory) and unlimited memlock."
        ),
    ),
    # PCIe only: defaults as well. NCCL_P2P_DISABLE=1 is in NCCL's "Debugging" section [NCCL-ENV]:
    # a workaround for platforms where PCIe peer-to-peer is broken (e.g. IOMMU/ACS redirecting
    # P2P through the root complex), not a setting to keep; hence not set here.
    "pcie": NCCLProfile(
        fabric="pcie",
        env=(),
        notes=(
            "PCIe only: NCCL defaults. If collectives hang or corrupt data because PCIe P2P is broken "
            "on the host (IOMMU/ACS), set NCCL_P2P_DISABLE=1 in spec.nccl.env as a workaround only."
        ),
    ),
    "infiniband": NCCLProfile(
        fabric="infiniband",
        env=(
            # [NCCL-ENV] NCCL_CROSS_NIC: 0 same NIC per ring (rail-optimised fabrics), 1 any NIC,
            # 2 (NCCL's default) prefer the same NIC but cross rails when faster. Stated so the
            # choice is visible; set 0 for rail-optimised fabrics with slow inter-rail links.
            ("NCCL_CROSS_NIC", "2"),
            # [NCCL-ENV] NCCL_IB_DISABLE=0 is NCCL's default (IB verbs allowed); stated so that an
            # image or /etc/nccl.conf that disables IB cannot silently push traffic onto TCP.
            ("NCCL_IB_DISABLE", "0"),
            _SOCKET_IFNAME,
            # Not set: NCCL_IB_HCA (HCA names are not known from the node; NCCL picks HCAs by
            # topology), NCCL_NET_GDR_LEVEL (in NCCL's "Debugging" section: "If this isn't
            # specified, NCCL will attempt to optimally select a value"; GPUDirect RDMA needs
            # nvidia-peermem or dma-buf on the host, not an environment variable).
        ),
        notes=(
            "InfiniBand: the pod must request the node's RDMA device resource (e.g."
            " rdma/rdma_shared_device_a) and IPC_LOCK, else NCCL sees no HCA and falls back to TCP."
            " Pin HCAs with NCCL_IB_HCA using exact names (=mlx5_0,mlx5_1) when needed."
        ),
    ),
    "roce": NCCLProfile(
        fabric="roce",
        env=(
            ("NCCL_CROSS_NIC", "2"),
            ("NCCL_IB_DISABLE", "0"),
            # RoCE v2 GID: on ConnectX the GID table of a port with one IPv4 address is
            # 0 RoCEv1 link-local, 1 RoCEv2 link-local, 2 RoCEv1 IPv4, 3 RoCEv2 IPv4 [GID]; RoCE v2
            # (routable UDP) over the IPv4 address is index 3. NCCL before 2.21 defaulted to index 0
            # (RoCE v1, not routable). NCCL >= 2.21 selects the GID itself when the variable is -1
            # (NCCL_IB_ROCE_VERSION_NUM=2, NCCL_IB_ADDR_FAMILY=AF_INET) [NCCL-ENV]; set
            # NCCL_IB_GID_INDEX=-1 in spec.nccl.env for that on IPv6 or multi-address ports.
            ("NCCL_IB_GID_INDEX", "3"),
            _SOCKET_IFNAME,
        ),
        notes=(
            "RoCE: NCCL_IB_GID_INDEX=3 is RoCE v2 over the port's IPv4 address on a one-address port;"
            " with IPv6 or several addresses set it to -1 (NCCL >= 2.21 chooses). Request the node's"
            " RDMA device resource and IPC_LOCK; the switches need lossless (PFC/ECN) configuration."
        ),
    ),
    "ethernet": NCCLProfile(
        fabric="ethernet",
        env=(
            # Force NCCL's socket transport: with a mix of RDMA and non-RDMA nodes every rank
            # must use the same transport. [NCCL-ENV] NCCL_IB_DISABLE: "1 to disable the use of
            # InfiniBand Verbs ... and force another method, e.g. IP sockets".
            ("NCCL_IB_DISABLE", "1"),
            # [NCCL-ENV] NCCL_NSOCKS_PERTHREAD / NCCL_SOCKET_NTHREADS: "For generic 100G networks,
            # this value can be manually set to 4. However, the product ... cannot exceed 64."
            # 4 x 4 = 16 sockets per connection; also the seed articles' tip (NTHREADS=4).
            ("NCCL_NSOCKS_PERTHREAD", "4"),
            ("NCCL_SOCKET_NTHREADS", "4"),
            _SOCKET_IFNAME,
        ),
        notes=(
            "Plain TCP: 4 helper threads x 4 sockets per connection (NCCL's suggestion for 100G);"
            " raise NCCL_SOCKET_NTHREADS (1-16, product <= 64) on faster links if CPUs allow."
        ),
    ),
    "efa": NCCLProfile(
        fabric="efa",
        env=(
            # [OFI-EFA] FI_EFA_FORK_SAFE=1: needed for kernels < 5.15; recent aws-ofi-nccl sets it
            # itself. Harmless, and right for older plugins and hosts.
            ("FI_EFA_FORK_SAFE", "1"),
            # [OFI-EFA] FI_EFA_USE_DEVICE_RDMA=1: GPUDirect RDMA on p4/p5 (automatic with
            # libfabric >= 1.18 and aws-ofi-nccl >= 1.7). On EFA devices without RDMA read
            # (g5, g6, p3dn, ...) libfabric aborts [EFA-ABORT]: nccl_profile drops it unless every
            # node's GPU is one of the RDMA-capable p4/p5/p6 GPUs.
            ("FI_EFA_USE_DEVICE_RDMA", "1"),
            # [OFI-EFA] FI_PROVIDER=efa: selects libfabric's EFA provider (required for
            # aws-ofi-nccl <= 1.5; harmless after).
            ("FI_PROVIDER", "efa"),
            # NCCL_PROTO is NOT set: NCCL_PROTO=simple is needed only for aws-ofi-nccl <= 1.5
            # [OFI-EFA]; newer plugins set it themselves where the platform needs it, and NCCL
            # lists NCCL_PROTO among its debugging knobs [NCCL-ENV].
        ),
        # The EFA device plugin makes each device exclusive to one pod [EKS-EFA]; nccl_profile
        # requests as many as every candidate node has (1 when unknown).
        extra_resources=((EFA_RESOURCE, "1"),),
        notes=(
            "EFA: the image needs libfabric and the aws-ofi-nccl plugin; the pod requests"
            f" {EFA_RESOURCE} devices and IPC_LOCK."
        ),
    ),
}

# GPUs of the EFA instance types whose EFA devices support RDMA read (p4d/p4de A100-SXM4,
# p5/p5e/p5en H100/H200, p6 B200) [OFI-EFA: "only p4 and p5 instances support both EFA and
# NVIDIA GPUDirect RDMA"]. Elsewhere FI_EFA_USE_DEVICE_RDMA=1 aborts the process [EFA-ABORT].
_EFA_RDMA_GPUS: Final = re.compile(r"NVIDIA-(A100-SXM4-\d+GB|H100-80GB-HBM3|H200|B200)")


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

MAX_SOCKETS: Final = 64  # NCCL_SOCKET_NTHREADS x NCCL_NSOCKS_PERTHREAD [NCCL-ENV]
_PATH_TYPES: Final = ("LOC", "PIX", "PXB", "PHB", "SYS")
_LIBFABRIC_BOOL: Final = ("0", "1", "true", "false", "yes", "no", "on", "off")
_PROTOS: Final = ("ll", "ll128", "simple")
_ALGOS: Final = ("ring", "tree", "collnet", "collnetchain", "collnetdirect", "nvls", "nvlstree", "pat")


def _int_between(lo: int, hi: int | None = None) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        if not re.fullmatch(r"-?\d+", value.strip()):
            return False
        n = int(value)
        return n >= lo and (hi is None or n <= hi)

    return check


def _one_of(*choices: str, case: bool = True) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        return value in choices if case else value.lower() in {c.lower() for c in choices}

    return check


def _path_level(*extra: str) -> Callable[[str], bool]:
    return lambda v: v in (*_PATH_TYPES, *extra) or _int_between(0, 5)(v)


def _filter_list(item: str) -> Callable[[str], bool]:
    """NCCL's interface filters: optional ``^`` (exclude), then optional ``=`` (exact names),
    then a comma-separated list of ``item``s [NCCL-ENV NCCL_SOCKET_IFNAME, NCCL_IB_HCA]."""
    pattern = re.compile(rf"\^?=?{item}(,{item})*")
    return lambda v: bool(pattern.fullmatch(v))


def _tuning_list(names: tuple[str, ...]) -> Callable[[str], bool]:
    """NCCL_ALGO / NCCL_PROTO: ``[^]a,b`` or, since 2.24, ``[func:][^]a,b;func:[^]a,b`` [NCCL-ENV]."""

    def check(value: str) -> bool:
        for i, part in enumerate(value.split(";")):
            func, sep, items = part.rpartition(":")
            if (sep and not re.fullmatch(r"[A-Za-z]+", func)) or (i > 0 and not sep):
                return False
            tokens = items.removeprefix("^").split(",")
            if not all(t.strip().lower() in names for t in tokens):
                return False
        return True

    return check


# name -> (check, what is allowed). Ranges are NCCL's documented ones [NCCL-ENV] unless noted.
ENV_RULES: Final[Mapping[str, tuple[Callable[[str], bool], str]]] = {
    "NCCL_SOCKET_NTHREADS": (_int_between(1, 16), "an integer 1 to 16"),
    "NCCL_NSOCKS_PERTHREAD": (
        _int_between(1, MAX_SOCKETS),
        f"an integer >= 1 with NCCL_SOCKET_NTHREADS x NCCL_NSOCKS_PERTHREAD <= {MAX_SOCKETS}",
    ),
    "NCCL_IB_GID_INDEX": (
        _int_between(-1),
        "an integer >= 0 (a GID table index), or -1 to let NCCL >= 2.21 choose",
    ),
    "NCCL_NET_GDR_LEVEL": (_path_level(), "one of LOC, PIX, PXB, PHB, SYS (or the legacy integers 0 to 5)"),
    "NCCL_P2P_LEVEL": (
        _path_level("NVL"),
        "one of LOC, NVL, PIX, PXB, PHB, SYS (or the legacy integers 0 to 5)",
    ),
    "NCCL_IB_DISABLE": (_one_of("0", "1"), "0 or 1"),
    "NCCL_P2P_DISABLE": (_one_of("0", "1"), "0 or 1"),
    "NCCL_SHM_DISABLE": (_one_of("0", "1"), "0 or 1"),
    "NCCL_CROSS_NIC": (
        _one_of("0", "1", "2"),
        "0 (same NIC), 1 (any NIC) or 2 (NCCL's default: prefer same)",
    ),
    "NCCL_DEBUG": (
        _one_of("VERSION", "WARN", "INFO", "TRACE", case=False),
        "one of VERSION, WARN, INFO, TRACE",
    ),
    "NCCL_IB_HCA": (
        _filter_list(r"[A-Za-z0-9_.-]+(:\d*(:\d+){0,2})?"),
        "[^][=]hca[:port[:rail[:plane]]],... e.g. =mlx5_0:1,mlx5_1:1 ('=' for exact names, '^' to exclude)",
    ),
    "NCCL_SOCKET_IFNAME": (
        _filter_list(r"[A-Za-z0-9_.:@-]+"),
        "[^][=]prefix,... e.g. eth0, =eth0, ^lo,docker ('=' for exact names, '^' to exclude)",
    ),
    "NCCL_SOCKET_FAMILY": (_one_of("AF_INET", "AF_INET6"), "AF_INET or AF_INET6"),
    "NCCL_IB_TIMEOUT": (_int_between(0, 31), "an integer 0 to 31 (timeout 4.096 us x 2^value; 0 = infinite)"),
    "NCCL_IB_RETRY_CNT": (_int_between(0, 7), "an integer 0 to 7"),
    "NCCL_IB_QPS_PER_CONNECTION": (_int_between(1, 128), "an integer 1 to 128"),
    "NCCL_IB_PCI_RELAXED_ORDERING": (_one_of("0", "1", "2"), "0, 1 or 2 (auto)"),
    "NCCL_NVLS_ENABLE": (_one_of("0", "1", "2"), "0, 1 or 2 (auto)"),
    "NCCL_NTHREADS": (_one_of("64", "128", "256", "512"), "64, 128, 256 or 512"),
    "NCCL_MIN_CTAS": (_int_between(1, 64), "an integer 1 to 64"),
    "NCCL_MAX_CTAS": (_int_between(1, 64), "an integer 1 to 64"),
    "NCCL_MIN_NCHANNELS": (_int_between(1, 32), "an integer 1 to 32"),
    "NCCL_MAX_NCHANNELS": (_int_between(1), "an integer >= 1"),
    "NCCL_BUFFSIZE": (_int_between(1), "a positive integer (bytes; NCCL recommends powers of 2)"),
    "NCCL_PROTO": (_tuning_list(_PROTOS), "a list of LL, LL128, Simple (optionally ^ to exclude)"),
    "NCCL_ALGO": (
        _tuning_list(_ALGOS),
        "a list of Ring, Tree, CollnetChain, CollnetDirect, NVLS, NVLSTree, PAT (optionally ^ to exclude)",
    ),
    # libfabric booleans (fi_param_get_bool) [EFA-ABORT shows the accepted spellings]
    "FI_EFA_USE_DEVICE_RDMA": (_one_of(*_LIBFABRIC_BOOL, case=False), "0/1 (or true/false, yes/no, on/off)"),
    "FI_EFA_FORK_SAFE": (_one_of(*_LIBFABRIC_BOOL, case=False), "0/1 (or true/false, yes/no, on/off)"),
    "FI_PROVIDER": (
        lambda v: bool(re.fullmatch(r"\^?[a-z0-9_;,-]+", v)),
        "a libfabric provider name such as efa",
    ),
}

# NCCL's "Debugging" section: "should generally not be set for production code" [NCCL-ENV].
# NCCL_IB_DISABLE is there too but is the documented switch between IB verbs and sockets; the
# profiles set it deliberately, so it is not warned about.
DEBUG_KNOBS: Final = (
    "NCCL_ALGO",
    "NCCL_BUFFSIZE",
    "NCCL_MAX_CTAS",
    "NCCL_MAX_NCHANNELS",
    "NCCL_MIN_CTAS",
    "NCCL_MIN_NCHANNELS",
    "NCCL_NET_GDR_LEVEL",
    "NCCL_NTHREADS",
    "NCCL_P2P_DISABLE",
    "NCCL_P2P_LEVEL",
    "NCCL_PROTO",
    "NCCL_SHM_DISABLE",
)


def validate_nccl_env(env: Mapping[str, str]) -> list[str]:
    """Check NCCL/libfabric variables against their documented ranges.

    Raises :class:`SpecError` naming every bad ``spec.nccl.env.<NAME>`` with what is allowed.
    Returns warnings (sorted) for values that are valid but that NCCL's documentation says not
    to keep in production, and for ``NCCL_IB_HCA`` names without the exact-match ``=``.
    Variables without a rule pass unchecked.
    """
    errors: list[str] = []
    warnings: list[str] = []
    bad: set[str] = set()
    for name in sorted(env):
        value = env[name]
        rule = ENV_RULES.get(name)
        if rule is not None and not rule[0](value):
            bad.add(name)
            errors.append(f"spec.nccl.env.{name}: {value!r} is not allowed; use {rule[1]}")
            continue
        if name in DEBUG_KNOBS:
            warnings.append(
                f"spec.nccl.env.{name}: a debugging knob; NCCL's documentation says not to keep it set in"
                " production (it stops NCCL choosing for itself and may slow, crash or hang later versions)"
            )
        elif name == "NCCL_DEBUG" and value.upper() in ("INFO", "TRACE"):
            warnings.append(
                f"spec.nccl.env.{name}: {value} logs heavily; use it for diagnosis, then unset it"
            )
        elif name == "NCCL_IB_HCA" and "=" not in value:
            warnings.append(
                f"spec.nccl.env.{name}: {value!r} matches names by prefix (mlx5_1 also selects mlx5_10 to"
                " mlx5_19); write '=' first (=mlx5_0,mlx5_1) when exact names are meant"
            )
    threads, socks = env.get("NCCL_SOCKET_NTHREADS"), env.get("NCCL_NSOCKS_PERTHREAD")
    if (threads is not None or socks is not None) and not bad & {
        "NCCL_SOCKET_NTHREADS",
        "NCCL_NSOCKS_PERTHREAD",
    }:
        t = int(threads) if threads is not None else 1  # NCCL's default outside AWS and GCP is 1
        s = int(socks) if socks is not None else 1
        if t * s > MAX_SOCKETS:
            which = "NCCL_NSOCKS_PERTHREAD" if socks is not None else "NCCL_SOCKET_NTHREADS"
            errors.append(
                f"spec.nccl.env.{which}: NCCL_SOCKET_NTHREADS x NCCL_NSOCKS_PERTHREAD = {t} x {s} = {t * s}"
                f" exceeds {MAX_SOCKETS}; lower one so that the product is at most {MAX_SOCKETS}"
            )
    if errors:
        raise SpecError("; ".join(errors))
    return warnings


# --------------------------------------------------------------------------------------------
# The profile for a deployment
# --------------------------------------------------------------------------------------------


def _common_min(allocatable: Iterable[Mapping[str, str]], name: str) -> int:
    counts = [_count(a.get(name, "0")) for a in allocatable]
    return min(counts) if counts and all(c > 0 for c in counts) else 0


def _rdma_resource(fabric: str, allocatable: Sequence[Mapping[str, str]]) -> tuple[str, str] | None:
    """The RDMA device resource every node offers, with the count one pod should request:
    1 of a shared rdma/* resource [RDMA-DP], all of the exclusive nvidia.com/hostdev devices."""
    if not allocatable:
        return None
    names = set.intersection(*({n for n, q in a.items() if _count(q) > 0} for a in allocatable))
    shared = sorted(n for n in names if n.startswith("rdma/"))
    preferred = r"(ib|infiniband)" if fabric == "infiniband" else r"(roce|eth|ethernet)"
    shared.sort(key=lambda n: not re.search(rf"(^|[/_-]){preferred}([_-]|$)", n))
    if shared:
        return (shared[0], "1")
    hostdev = sorted(n for n in names if re.fullmatch(r"nvidia\.com/hostdev(_.*)?", n))
    if hostdev:
        return (hostdev[0], str(_common_min(allocatable, hostdev[0])))
    return None


def nccl_profile(
    fabric: str,
    overrides: tuple[tuple[str, str], ...] = (),
    nodes: Sequence[NodeInfo] = (),
    *,
    allocatable: Sequence[Mapping[str, str]] = (),
) -> NCCLProfile:
    """The NCCL profile for ``fabric`` with ``spec.nccl.env`` ``overrides`` merged over it.

    Overrides win; an override with an empty value removes the profile's variable (for example
    ``NCCL_SOCKET_IFNAME: ""`` to leave interface selection to NCCL). The merged environment is
    sorted and checked with :func:`validate_nccl_env` (a :class:`SpecError` for values out of
    range); its warnings are appended to ``notes``.

    ``nodes`` are the candidate nodes: for EFA, ``FI_EFA_USE_DEVICE_RDMA`` is kept only when every
    node's GPU sits on an RDMA-read-capable EFA instance (p4/p5/p6). ``allocatable`` (the candidate
    nodes' ``status.allocatable`` maps; ``NodeInfo`` does not carry them) sizes the device
    requests: for EFA as many ``vpc.amazonaws.com/efa`` devices as every node has (else 1); for
    InfiniBand/RoCE the RDMA device-plugin resource every node offers (else none, and the notes
    say what to request).
    """
    if fabric not in PROFILES:
        raise SpecError(f"spec.nccl.fabric: {fabric!r} is not a fabric; use one of {', '.join(FABRICS)}")
    base = PROFILES[fabric]
    env = dict(base.env)
    notes = [base.notes]
    extra = dict(base.extra_resources)

    if fabric == "efa":
        products = [_normalise_product(n.gpu_product or "") or "" for n in nodes]
        if products and not all(_EFA_RDMA_GPUS.fullmatch(p) for p in products):
            env.pop("FI_EFA_USE_DEVICE_RDMA", None)
            notes.append("FI_EFA_USE_DEVICE_RDMA left unset: not every node's EFA supports RDMA read.")
        devices = _common_min(allocatable, EFA_RESOURCE)
        if devices:
            extra[EFA_RESOURCE] = str(devices)
        else:
            notes.append(
                f"{EFA_RESOURCE} count unknown: requesting 1 device; more devices give more bandwidth."
            )
    elif fabric in ("infiniband", "roce"):
        resource = _rdma_resource(fabric, allocatable)
        if resource is not None:
            extra[resource[0]] = resource[1]

    for name, value in overrides:
        if value == "":
            env.pop(name, None)
        else:
            env[name] = value
    warnings = validate_nccl_env(env)
    return NCCLProfile(
        fabric=fabric,
        env=tuple(sorted(env.items())),
        extra_resources=tuple(sorted(extra.items())),
        notes=" ".join([*notes, *warnings]),
    )
