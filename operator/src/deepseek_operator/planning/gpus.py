"""GPU types as NVIDIA GPU Feature Discovery names them, with the figures sizing needs.

Keys are the ``nvidia.com/gpu.product`` label; memory is the ``nvidia.com/gpu.memory``
label (MiB, what ``nvidia-smi`` reports as total), kept equal to the simulated
cluster's :data:`deepseek_operator.sim.gpus.GPU_PRODUCTS`. A product not in the
table is built from the node's labels (:func:`gpu_type`).
"""

from __future__ import annotations

import re

from deepseek_operator.planning.types import GPUType

SHARED_SUFFIX = "-SHARED"  # GFD appends it when the GPU is time-sliced or shared through MPS


def _t(product: str, memory_mib: int, major: int, minor: int, family: str) -> GPUType:
    return GPUType(product, memory_mib / 1024, major, minor, family)


GPU_TYPES: dict[str, GPUType] = {
    t.product: t
    for t in (
        _t("NVIDIA-B200", 183359, 10, 0, "blackwell"),
        _t("NVIDIA-H200", 143771, 9, 0, "hopper"),
        _t("NVIDIA-H100-80GB-HBM3", 81559, 9, 0, "hopper"),
        _t("NVIDIA-H100-PCIe", 81559, 9, 0, "hopper"),
        _t("NVIDIA-H100-NVL", 95830, 9, 0, "hopper"),
        _t("NVIDIA-A100-SXM4-80GB", 81920, 8, 0, "ampere"),
        _t("NVIDIA-A100-SXM4-40GB", 40960, 8, 0, "ampere"),
        _t("NVIDIA-A100-PCIE-80GB", 81920, 8, 0, "ampere"),
        _t("NVIDIA-A100-PCIE-40GB", 40960, 8, 0, "ampere"),
        _t("NVIDIA-A10G", 23028, 8, 6, "ampere"),
        _t("NVIDIA-L40S", 46068, 8, 9, "ada-lovelace"),
        _t("NVIDIA-L4", 23034, 8, 9, "ada-lovelace"),
        _t("NVIDIA-GeForce-RTX-4090", 24564, 8, 9, "ada-lovelace"),
    )
}

# For products outside the table whose nodes lack compute-capability labels:
# the architecture from the name (first match wins).
_NAME_HINTS: tuple[tuple[str, int, int, str], ...] = (
    (r"B[123]00|GB[23]00|RTX-PRO-6000-Blackwell", 10, 0, "blackwell"),
    (r"RTX-50\d0", 12, 0, "blackwell"),
    (r"H[12]00|H800|H20\b|GH200", 9, 0, "hopper"),
    (r"L40|L4\b|L20|RTX-40\d0|RTX-6000-Ada|Ada-Generation", 8, 9, "ada-lovelace"),
    (r"A100|A800|A30\b", 8, 0, "ampere"),
    (r"A10|A40|A16|A2\b|RTX-30\d0|RTX-A\d000", 8, 6, "ampere"),
    (r"V100", 7, 0, "volta"),
    (r"T4\b|RTX-20\d0", 7, 5, "turing"),
)
_FAMILY_BY_MAJOR = {7: "volta", 8: "ampere", 9: "hopper", 10: "blackwell", 12: "blackwell"}
_GB_IN_NAME = re.compile(r"(\d+)GB", re.IGNORECASE)


def base_product(product: str) -> str:
    """The product name without GFD's ``-SHARED`` suffix."""
    return product[: -len(SHARED_SUFFIX)] if product.upper().endswith(SHARED_SUFFIX) else product


def gpu_type(
    product: str, memory_mib: int = 0, compute_major: int = 0, compute_minor: int = 0, family: str = ""
) -> GPUType:
    """The table entry for ``product`` (``-SHARED`` maps to its base), else one built from node labels.

    For an unknown product the labels win; what they leave out is guessed from the
    product name (architecture from the model number, memory from an ``NNGB`` in the
    name). An unknown product with no memory label and none in its name gets 0 GiB, so
    nothing fits on it and the refusal says so.
    """
    base = base_product(product)
    known = GPU_TYPES.get(base)
    if known is not None:
        return known
    for key, entry in GPU_TYPES.items():
        if key.lower() == base.lower():
            return entry
    major, minor, fam = compute_major, compute_minor, family
    if not major:
        for pattern, h_major, h_minor, h_family in _NAME_HINTS:
            if re.search(pattern, base, re.IGNORECASE):
                major, minor, fam = h_major, h_minor, fam or h_family
                break
    if not fam:
        fam = "ada-lovelace" if (major, minor) == (8, 9) else _FAMILY_BY_MAJOR.get(major, "unknown")
    mib = memory_mib
    if not mib:
        m = _GB_IN_NAME.search(base)
        mib = int(m[1]) * 1024 if m else 0
    return GPUType(base, mib / 1024, major, minor, fam)


def supports_bf16(gpu: GPUType) -> bool:
    """BF16 tensor cores need compute capability 8.0 or newer (Ampere and later)."""
    return gpu.compute_major >= 8
