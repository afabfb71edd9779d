"""Measure the GPU memory that DeepSeek-family architectures need, on a real GPU.

Runs on the lent GPU machine with only torch + transformers (no hub access, no
project import). Every model is built from a hand-written config with the
published shapes, with random bf16 weights, directly on the GPU. For each one it
records:

* weights: ``torch.cuda.memory_allocated()`` after the build, the parameter
  count and the parameter bytes;
* KV cache per token: the bytes of the tensors held by the cache that a
  ``use_cache=True`` prefill returns, divided by batch x tokens, next to the
  closed-form figures (GQA: 2 x layers x kv_heads x head_dim x 2 bytes; MLA as
  Hugging Face caches it: decompressed K (nope+rope per head) and V per head;
  MLA as TensorRT-LLM / vLLM / SGLang cache it: the latent kv_lora_rank +
  qk_rope_head_dim per layer);
* prefill peak: ``max_memory_allocated()`` during a no-grad prefill at a few
  (batch, tokens) shapes, minus what was allocated before it (the weights),
  with the cache bytes split out. SDPA attention is used, with one eager run
  for comparison.

The DeepSeek-V3/R1 model is a slice (3 dense + 2 MoE layers, the real
per-layer shapes); the full 61-layer figures are extrapolated per layer.

Usage (on the device machine)::

    PYTHONUNBUFFERED=1 python3 bench/gpu_memory.py            # all models
    PYTHONUNBUFFERED=1 python3 bench/gpu_memory.py --only qwen-1.5b

Writes ``$OUT/gpu_memory.json`` when ``OUT`` is set, else ``gpu_memory.json``
in the working directory (``--json PATH`` overrides).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from typing import Any

import torch

GIB = 1024**3
BF16 = 2

# Prefill shapes (batch, tokens) measured for every model.
PREFILL_SHAPES: list[tuple[int, int]] = [(1, 2048), (8, 2048), (32, 1024)]

# V3/R1: 61 decoder layers, the first 3 dense, the other 58 MoE.
V3_FULL_LAYERS = 61
V3_DENSE_LAYERS = 3
V3_SLICE_LAYERS = 5


def model_specs() -> list[dict[str, Any]]:
    """Hand-written configs with the published shapes (see docs/sizing-measured.md)."""
    return [
        {
            "name": "qwen-1.5b",
            "model_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
            "family": "qwen2",
            "config": dict(
                vocab_size=151936,
                hidden_size=1536,
                intermediate_size=8960,
                num_hidden_layers=28,
                num_attention_heads=12,
                num_key_value_heads=2,
                tie_word_embeddings=False,
                use_sliding_window=False,
                max_position_embeddings=131072,
            ),
        },
        {
            "name": "qwen-7b",
            "model_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
            "family": "qwen2",
            "config": dict(
                vocab_size=152064,
                hidden_size=3584,
                intermediate_size=18944,
                num_hidden_layers=28,
                num_attention_heads=28,
                num_key_value_heads=4,
                tie_word_embeddings=False,
                use_sliding_window=False,
                max_position_embeddings=131072,
            ),
            "eager_check": (1, 2048),
        },
        {
            "name": "llama-8b",
            "model_id": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
            "family": "llama",
            "config": dict(
                vocab_size=128256,
                hidden_size=4096,
                intermediate_size=14336,
                num_hidden_layers=32,
                num_attention_heads=32,
                num_key_value_heads=8,
                tie_word_embeddings=False,
                max_position_embeddings=131072,
            ),
        },
        {
            "name": "v2-lite",
            "model_id": "deepseek-ai/DeepSeek-V2-Lite",
            "family": "deepseek_v2",
            "config": dict(
                vocab_size=102400,
                hidden_size=2048,
                intermediate_size=10944,
                moe_intermediate_size=1408,
                num_hidden_layers=27,
                num_attention_heads=16,
                num_key_value_heads=16,
                n_shared_experts=2,
                n_routed_experts=64,
                num_experts_per_tok=6,
                first_k_dense_replace=1,
                kv_lora_rank=512,
                q_lora_rank=None,
                qk_rope_head_dim=64,
                qk_nope_head_dim=128,
                v_head_dim=128,
                topk_method="greedy",
                n_group=1,
                topk_group=1,
                tie_word_embeddings=False,
                max_position_embeddings=32768,
            ),
        },
        {
            "name": "v3-slice",
            "model_id": "deepseek-ai/DeepSeek-V3 (5 of 61 layers)",
            "family": "deepseek_v3",
            "config": dict(
                vocab_size=129280,
                hidden_size=7168,
                intermediate_size=18432,
                moe_intermediate_size=2048,
                num_hidden_layers=V3_SLICE_LAYERS,
                num_attention_heads=128,
                num_key_value_heads=128,
                n_shared_experts=1,
                n_routed_experts=256,
                num_experts_per_tok=8,
                first_k_dense_replace=V3_DENSE_LAYERS,
                kv_lora_rank=512,
                q_lora_rank=1536,
                qk_rope_head_dim=64,
                qk_nope_head_dim=128,
                v_head_dim=128,
                n_group=8,
                topk_group=4,
                routed_scaling_factor=2.5,
                norm_topk_prob=True,
                tie_word_embeddings=False,
                max_position_embeddings=4096,
            ),
        },
    ]


def classes(family: str) -> tuple[Any, Any]:
    import transformers as tf

    table = {
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
        "llama": ("LlamaConfig", "LlamaForCausalLM"),
        "deepseek_v2": ("DeepseekV2Config", "DeepseekV2ForCausalLM"),
        "deepseek_v3": ("DeepseekV3Config", "DeepseekV3ForCausalLM"),
    }
    cfg_name, model_name = table[family]
    return getattr(tf, cfg_name), getattr(tf, model_name)


def make_config(cfg_cls: Any, kwargs: dict[str, Any]) -> Any:
    try:
        cfg = cfg_cls(attn_implementation="sdpa", **kwargs)
    except TypeError:
        cfg = cfg_cls(**kwargs)
        cfg._attn_implementation = "sdpa"
    return cfg


def expected_kv(family: str, c: dict[str, Any]) -> dict[str, int]:
    """Closed-form KV bytes per token (bf16) for the whole model as configured."""
    layers = c["num_hidden_layers"]
    if family in ("qwen2", "llama"):
        head_dim = c["hidden_size"] // c["num_attention_heads"]
        return {"gqa": 2 * layers * c["num_key_value_heads"] * head_dim * BF16}
    heads = c["num_attention_heads"]
    k_dim = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    return {
        "mla_decompressed": layers * heads * (k_dim + c["v_head_dim"]) * BF16,
        "mla_latent": layers * (c["kv_lora_rank"] + c["qk_rope_head_dim"]) * BF16,
    }


def cache_tensors(cache: Any) -> list[tuple[str, torch.Tensor]]:
    """The tensors a transformers cache object holds, across 4.x and 5.x layouts."""
    found: list[tuple[str, torch.Tensor]] = []
    layers = getattr(cache, "layers", None)
    if layers is not None:
        for i, layer in enumerate(layers):
            for attr in ("keys", "values", "key_cache", "value_cache"):
                t = getattr(layer, attr, None)
                if torch.is_tensor(t):
                    found.append((f"{i}.{attr}", t))
        if found:
            return found
    for attr in ("key_cache", "value_cache"):
        lst = getattr(cache, attr, None)
        if isinstance(lst, list):
            found.extend((f"{i}.{attr}", t) for i, t in enumerate(lst) if torch.is_tensor(t))
    if found:
        return found
    if isinstance(cache, (tuple, list)):
        for i, item in enumerate(cache):
            for j, t in enumerate(item if isinstance(item, (tuple, list)) else [item]):
                if torch.is_tensor(t):
                    found.append((f"{i}.{j}", t))
    return found


def cache_bytes(cache: Any) -> tuple[int, int, dict[str, list[int]]]:
    """(logical bytes, storage bytes, shapes of layer 0's tensors)."""
    tensors = cache_tensors(cache)
    logical = sum(t.numel() * t.element_size() for _, t in tensors)
    seen: set[int] = set()
    storage = 0
    for _, t in tensors:
        s = t.untyped_storage()
        if s.data_ptr() not in seen:
            seen.add(s.data_ptr())
            storage += s.nbytes()
    shapes = {name: list(t.shape) + [str(t.dtype)] for name, t in tensors[:2]}  # type: ignore[misc]
    return logical, storage, shapes


def layer_param_counts(model: Any) -> list[int]:
    layers = model.model.layers
    return [sum(p.numel() for p in layer.parameters()) for layer in layers]


def free_cuda() -> None:
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def prefill(model: Any, vocab: int, batch: int, tokens: int) -> dict[str, Any]:
    free_cuda()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    ids = torch.randint(0, vocab, (batch, tokens), device="cuda")
    t0 = time.perf_counter()
    with torch.no_grad():
        try:
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        except TypeError:
            out = model(input_ids=ids, use_cache=True)
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated()
    logical, storage, shapes = cache_bytes(out.past_key_values)
    n_tensors = len(cache_tensors(out.past_key_values))
    del out, ids
    free_cuda()
    return {
        "batch": batch,
        "tokens": tokens,
        "seconds": round(secs, 3),
        "peak_minus_weights_bytes": peak - before,
        "cache_bytes": logical,
        "cache_storage_bytes": storage,
        "cache_tensors": n_tensors,
        "cache_shapes_layer0": shapes,
        "kv_bytes_per_token": logical / (batch * tokens),
        "activation_bytes": peak - before - storage,
    }


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    cfg_cls, model_cls = classes(spec["family"])
    cfg = make_config(cfg_cls, spec["config"])
    free_cuda()
    base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    prev_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = model_cls(cfg)
    finally:
        torch.set_default_dtype(prev_dtype)
    model.eval()
    torch.cuda.synchronize()
    build_s = time.perf_counter() - t0
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    weights_alloc = torch.cuda.memory_allocated() - base
    n_params = sum(p.numel() for p in model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    per_layer = layer_param_counts(model)
    rec: dict[str, Any] = {
        "name": spec["name"],
        "model_id": spec["model_id"],
        "family": spec["family"],
        "config": {k: v for k, v in spec["config"].items()},
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "param_dtypes": dtypes,
        "build_seconds": round(build_s, 2),
        "weights_allocated_bytes": weights_alloc,
        "param_count": n_params,
        "param_bytes": param_bytes,
        "buffer_bytes": buffer_bytes,
        "layer_param_counts": per_layer,
        "non_layer_param_count": n_params - sum(per_layer),
        "kv_expected_bytes_per_token": expected_kv(spec["family"], spec["config"]),
        "prefill": [],
    }
    print(
        f"[{spec['name']}] built in {build_s:.1f}s: {n_params / 1e9:.3f}B params, "
        f"{weights_alloc / GIB:.2f} GiB allocated, dtypes {dtypes}",
        flush=True,
    )
    vocab = spec["config"]["vocab_size"]
    for batch, tokens in PREFILL_SHAPES:
        try:
            r = prefill(model, vocab, batch, tokens)
        except torch.cuda.OutOfMemoryError as e:
            free_cuda()
            r = {"batch": batch, "tokens": tokens, "error": f"OOM: {str(e)[:200]}"}
        rec["prefill"].append(r)
        print(f"[{spec['name']}] prefill {batch}x{tokens}: {short(r)}", flush=True)
    if "eager_check" in spec:
        batch, tokens = spec["eager_check"]
        try:
            model.set_attn_implementation("eager")
            r = prefill(model, vocab, batch, tokens)
            r["attn_implementation"] = "eager"
        except Exception as e:  # noqa: BLE001 - a comparison run, never fatal
            free_cuda()
            r = {"batch": batch, "tokens": tokens, "attn_implementation": "eager", "error": repr(e)[:300]}
        rec["eager_prefill"] = r
        print(f"[{spec['name']}] EAGER prefill {batch}x{tokens}: {short(r)}", flush=True)
    if spec["family"] == "deepseek_v3":
        rec["extrapolated_full"] = extrapolate_v3(rec)
    del model
    free_cuda()
    return rec


def extrapolate_v3(rec: dict[str, Any]) -> dict[str, Any]:
    per_layer = rec["layer_param_counts"]
    dense = per_layer[0]
    moe = per_layer[V3_DENSE_LAYERS]
    full_params = (
        rec["non_layer_param_count"] + V3_DENSE_LAYERS * dense + (V3_FULL_LAYERS - V3_DENSE_LAYERS) * moe
    )
    kv_ok = [p for p in rec["prefill"] if "kv_bytes_per_token" in p]
    kv_layer = kv_ok[0]["kv_bytes_per_token"] / V3_SLICE_LAYERS if kv_ok else None
    return {
        "layers": V3_FULL_LAYERS,
        "dense_layer_params": dense,
        "moe_layer_params": moe,
        "non_layer_params": rec["non_layer_param_count"],
        "param_count": full_params,
        "weights_bf16_bytes": full_params * BF16,
        "hf_kv_bytes_per_token_per_layer": kv_layer,
        "hf_kv_bytes_per_token": kv_layer * V3_FULL_LAYERS if kv_layer else None,
        "latent_kv_bytes_per_token": V3_FULL_LAYERS * (512 + 64) * BF16,
        "decompressed_kv_bytes_per_token": V3_FULL_LAYERS * 128 * (192 + 128) * BF16,
    }


def short(r: dict[str, Any]) -> str:
    if "error" in r:
        return r["error"][:120]
    return (
        f"peak-weights {r['peak_minus_weights_bytes'] / GIB:.2f} GiB, cache {r['cache_bytes'] / GIB:.3f} GiB "
        f"({r['kv_bytes_per_token']:.0f} B/token), activations {r['activation_bytes'] / GIB:.2f} GiB, "
        f"{r['seconds']}s"
    )


def environment() -> dict[str, Any]:
    import transformers

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(0),
        "device_total_bytes": torch.cuda.get_device_properties(0).total_memory,
    }
    try:
        env["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except Exception as e:  # noqa: BLE001
        env["nvidia_smi"] = repr(e)
    return env


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        f"{'model':<10} {'params(B)':>10} {'weights GiB':>11} {'KV B/tok':>9} {'KV expected':>24} "
        + " ".join(f"{f'pk-w {b}x{t}':>14}" for b, t in PREFILL_SHAPES)
    ]
    for r in results:
        if "error" in r:
            lines.append(f"{r['name']:<10} ERROR {r['error'][:150]}")
            continue
        kv = next((p["kv_bytes_per_token"] for p in r["prefill"] if "kv_bytes_per_token" in p), float("nan"))
        exp = ",".join(f"{k}={v}" for k, v in r["kv_expected_bytes_per_token"].items())
        cells = []
        for p in r["prefill"]:
            cells.append(f"{'OOM':>14}" if "error" in p else f"{p['peak_minus_weights_bytes'] / GIB:>14.2f}")
        lines.append(
            f"{r['name']:<10} {r['param_count'] / 1e9:>10.3f} {r['weights_allocated_bytes'] / GIB:>11.2f} "
            f"{kv:>9.0f} {exp:>24} " + " ".join(cells)
        )
        if "extrapolated_full" in r:
            x = r["extrapolated_full"]
            lines.append(
                f"{'  -> V3 61L':<10} {x['param_count'] / 1e9:>10.3f} {x['weights_bf16_bytes'] / GIB:>11.2f} "
                f"{(x['hf_kv_bytes_per_token'] or float('nan')):>9.0f} latent={x['latent_kv_bytes_per_token']}"
            )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", help="model names to run (default: all)")
    ap.add_argument("--json", help="output path (default $OUT/gpu_memory.json)")
    args = ap.parse_args()
    out_dir = os.environ.get("OUT")
    path = args.json or (os.path.join(out_dir, "gpu_memory.json") if out_dir else "gpu_memory.json")

    env = environment()
    print(json.dumps(env), flush=True)
    doc: dict[str, Any] = {"environment": env, "prefill_shapes": PREFILL_SHAPES, "models": []}
    for spec in model_specs():
        if args.only and spec["name"] not in args.only:
            continue
        try:
            rec = measure(spec)
        except Exception as e:  # noqa: BLE001 - record and go on to the next model
            traceback.print_exc()
            free_cuda()
            rec = {"name": spec["name"], "error": repr(e)[:500]}
        doc["models"].append(rec)
        with open(path, "w") as f:
            json.dump(doc, f, indent=1, default=str)
    print(table(doc["models"]), flush=True)
    print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
