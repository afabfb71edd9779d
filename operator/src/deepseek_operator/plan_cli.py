"""``deepseek-operator plan``: what a model needs and where it would go.

From the catalog alone (the GPUs of :data:`CATALOG_GPUS`, empty nodes of 8), or
against a live cluster's GPU inventory and free capacity (``--kubeconfig``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from deepseek_operator.api.spec import DeploymentSpec, parse_spec
from deepseek_operator.errors import SpecError
from deepseek_operator.planning import catalog, support
from deepseek_operator.planning import gpus as gpu_types
from deepseek_operator.planning.placement import (
    CATALOG_GPUS,
    Refusal,
    RuntimePath,
    expert_parallel_layout,
    plan_placement,
    runtime_path,
    sizing_request,
)
from deepseek_operator.planning.sizing import size_options
from deepseek_operator.planning.types import ModelArch, NodeInfo


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked the planner."""

    model: str
    precision: str = "auto"
    products: tuple[str, ...] = ()
    max_input_tokens: int = 4096
    max_output_tokens: int = 1024
    max_batch_size: int = 0
    parameters: str | None = None


def _spec(req: PlanRequest, products: tuple[str, ...]) -> dict[str, Any]:
    model: dict[str, Any] = {"id": req.model, "source": {"pvc": {"claimName": "model-store"}}}
    if req.parameters:
        model["parameters"] = req.parameters
    return {
        "model": model,
        "engine": {
            "precision": req.precision,
            "maxInputTokens": req.max_input_tokens,
            "maxOutputTokens": req.max_output_tokens,
            "maxBatchSize": req.max_batch_size,
        },
        "gpu": {"products": list(products)},
    }


def _row(
    spec: DeploymentSpec,
    arch: ModelArch,
    path: RuntimePath | None,
    refusal: str,
    product: str,
    nodes: list[NodeInfo] | None,
) -> dict[str, Any]:
    """One product's row: the best option the image's runtime path allows on it, or why none."""
    same = [n for n in nodes or [] if n.gpu_product == product]
    first = same[0] if same else None
    gpu = gpu_types.gpu_type(
        product,
        memory_mib=first.gpu_memory_mib if first else 0,
        compute_major=first.compute_major if first else 0,
        compute_minor=first.compute_minor if first else 0,
    )
    per_node = max((n.gpus_allocatable for n in same), default=8)
    if path is None:
        return {"gpu": product, "fits": False, "reason": refusal}
    if problem := support.gpu_problem(arch, path.support, gpu, path.runtime, path.profile):
        return {"gpu": product, "fits": False, "reason": problem}
    try:
        options = size_options(arch, gpu, sizing_request(spec, path.precisions), gpus_per_node=per_node)
    except SpecError as e:  # e.g. FP8 asked of a GPU without FP8: a row that says so, not a crash
        return {"gpu": product, "fits": False, "reason": str(e)}
    best = next((o for o in options if o.fits), options[0] if options else None)
    if best is None:
        return {"gpu": product, "fits": False, "reason": "no option"}
    if best.fits:
        best = expert_parallel_layout(spec, arch, best, path.runtime)
    m = best.memory
    row: dict[str, Any] = {
        "gpu": product,
        "gpuMemoryGiB": round(gpu.memory_gib, 1),
        "fits": best.fits,
        "precision": best.precision,
        "gpus": best.gpus_per_replica,
        "tensorParallel": best.tensor_parallel,
        "pipelineParallel": best.pipeline_parallel,
        "nodes": best.nodes_per_replica,
        "weightsGiB": round(m.weights_gib, 1),
        "kvCacheGiB": round(m.kv_cache_gib, 1),
        "activationsGiB": round(m.activations_gib, 1),
        "overheadGiB": round(m.overhead_gib, 1),
        "perGpuGiB": round(m.per_gpu_gib, 1),
        "maxBatchSize": best.max_batch_size,
        "reason": best.reason,
    }
    if nodes is not None:
        row["freeGpus"] = {n.name: n.gpus_free for n in same}
    return row


def plan_report(req: PlanRequest, nodes: list[NodeInfo] | None = None) -> dict[str, Any]:
    """The options per GPU product and, against a cluster, the placement decision (a JSON-able dict)."""
    spec = parse_spec(_spec(req, req.products))
    arch = catalog.arch_from_spec(spec.model)
    if nodes is not None:
        products = req.products or tuple(sorted({n.gpu_product for n in nodes if n.gpu_product}))
    else:
        products = req.products or CATALOG_GPUS
    try:
        path: RuntimePath | None = runtime_path(spec, arch)
        refusal = ""
    except SpecError as e:  # the image cannot load the model at all: every row says why
        path, refusal = None, str(e)
    rows = [_row(spec, arch, path, refusal, product, nodes) for product in products]
    report: dict[str, Any] = {
        "model": arch.id,
        "parametersB": round(catalog.parameter_count_b(arch), 1),
        "nativePrecision": arch.native_precision,
        "runtime": path.runtime if path else "",
        "options": rows,
    }
    if nodes is not None:
        decision = plan_placement(spec, arch, nodes)
        if isinstance(decision, Refusal):
            report["placement"] = {"placed": False, "reason": decision.reason, "message": decision.message}
        else:
            report["placement"] = {
                "placed": True,
                "gpuProduct": decision.gpu_product,
                "gpusPerReplica": decision.gpus_per_replica,
                "tensorParallel": decision.tensor_parallel,
                "pipelineParallel": decision.pipeline_parallel,
                "nodesPerReplica": decision.nodes_per_replica,
                "fabric": decision.fabric,
                "precision": decision.precision,
                "maxBatchSize": decision.max_batch_size,
            }
    return report


COLUMNS = [
    ("GPU", "gpu"),
    ("FITS", "fits"),
    ("PRECISION", "precision"),
    ("GPUS", "gpus"),
    ("TPxPP", "tp_pp"),
    ("NODES", "nodes"),
    ("WEIGHTS", "weightsGiB"),
    ("KV", "kvCacheGiB"),
    ("ACT", "activationsGiB"),
    ("OVERHEAD", "overheadGiB"),
    ("GiB/GPU", "perGpuGiB"),
    ("MAXBATCH", "maxBatchSize"),
]


def render_table(report: dict[str, Any]) -> str:
    """The report as an aligned text table, with the reasons and the placement decision under it."""
    rows = []
    for r in report["options"]:
        cells = {
            **r,
            "tp_pp": f"{r.get('tensorParallel', '-')}x{r.get('pipelineParallel', '-')}",
            "fits": "yes" if r.get("fits") else "no",
        }
        rows.append([str(cells.get(key, "-")) for _, key in COLUMNS])
    header = [h for h, _ in COLUMNS]
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=False)]
    lines = [
        f"{report['model']}: {report['parametersB']}B parameters, native {report['nativePrecision']}"
        + (f", {report['runtime']} runtime" if report.get("runtime") else ""),
        "",
    ]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]
    ]
    lines.append("")
    lines += [f"{r['gpu']}: {r['reason']}" for r in report["options"] if r.get("reason")]
    if "placement" in report:
        p = report["placement"]
        lines.append("")
        if p["placed"]:
            lines.append(
                f"placement on this cluster: {p['gpusPerReplica']} x {p['gpuProduct']} per replica "
                f"(TP {p['tensorParallel']} x PP {p['pipelineParallel']}, {p['nodesPerReplica']} node(s), "
                f"{p['precision']}, NCCL profile {p['fabric']}, max batch {p['maxBatchSize']})"
            )
        else:
            lines.append(f"placement on this cluster: not possible ({p['reason']}): {p['message']}")
    return "\n".join(lines)


def to_json(report: dict[str, Any]) -> str:
    """The report as JSON for scripts."""
    return json.dumps(report, indent=2, sort_keys=True)
