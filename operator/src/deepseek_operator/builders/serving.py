"""Builders of the serving stack: the Deployment running Triton, its Service and PodDisruptionBudget,
the engine build Job, and the ConfigMap holding the generated Triton configs.

Every function here is pure: owner body + parsed spec + plan in, a manifest dict out.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from typing import Any

from deepseek_operator.api import names
from deepseek_operator.api.constants import (
    DECRYPT_CONTAINER,
    DECRYPT_ENGINE_CONTAINER,
    ENCRYPT_ENGINE_CONTAINER,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    GPU_TAINT_KEY,
    LWS_API_VERSION,
    LWS_WORKER_INDEX_LABEL,
)
from deepseek_operator.api.spec import DeploymentSpec
from deepseek_operator.builders import autoscaling, fetch
from deepseek_operator.errors import SpecError
from deepseek_operator.images import profile_for
from deepseek_operator.planning import catalog
from deepseek_operator.planning.sizing import BYTES_PER_PARAM
from deepseek_operator.planning.types import Plan

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
MODEL_MOUNT = "/models"  # the model source volume (read-only in serving pods)
CACHE_MOUNT = "/engine-cache"  # engine cache volume when the model comes from a uri
FETCH_MOUNT = "/model-cache"  # per-pod download folder (uri source without a cache volume)
REPO_MOUNT = "/triton-repo"  # the assembled Triton model repository (emptyDir)
CONFIG_MOUNT = "/etc/deepseek/triton-config"  # the generated configs (ConfigMap)
CREDENTIALS_MOUNT = "/var/run/secrets/deepseek/model"
PLAINTEXT_MOUNT = "/decrypted-model"  # the decrypted checkpoint (encrypted weights): a pod-local volume
KEY_MOUNT = "/var/run/secrets/deepseek/weights-key"  # the weights key: only where it decrypts or encrypts
ENGINE_CACHE_DIR = ".deepseek-operator/engines"
TRITON_USER = 1000  # triton-server, the non-root user of NVIDIA's Triton images
GPU_TOLERATION = {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}


@dataclass(frozen=True)
class Layout:
    """Where the checkpoint, the engine and the engine cache are, as the containers see them."""

    checkpoint_dir: str  # the HF checkpoint (tokenizer, weights)
    engine_dir: str  # the built engine (engine path)
    cache_volume: str | None  # the PVC holding the engine cache (None: no engine cache)
    cache_root: str  # the cache volume's mount point


def layout(spec: DeploymentSpec, plan: Plan) -> Layout:
    """Where things live for ``spec``; :class:`SpecError` when the engine path has nowhere to cache."""
    src = spec.model.source
    key = engine_cache_key(spec, plan)
    if spec.encryption is not None and src.pvc is not None:
        if plan.nodes_per_replica > 1:
            raise SpecError(
                "spec.model.encryption: encrypted weights are decrypted inside a single-node serving pod; "
                f"this plan needs {plan.nodes_per_replica} nodes per replica: give GPUs that hold the "
                "model on one node (spec.gpu.products), or serve it unencrypted"
            )
        engine = ENGINE_PLAIN_MOUNT if plan.runtime == "tensorrt-llm" else ""
        return Layout(PLAINTEXT_MOUNT, engine, src.pvc.claim_name, MODEL_MOUNT)
    if src.pvc is not None:
        checkpoint = f"{MODEL_MOUNT}/{src.pvc.path}".rstrip("/")
        return Layout(checkpoint, f"{MODEL_MOUNT}/{ENGINE_CACHE_DIR}/{key}", src.pvc.claim_name, MODEL_MOUNT)
    if spec.engine.cache_claim_name:
        return Layout(
            f"{CACHE_MOUNT}/checkpoints/{names.stable_hash([src.uri, spec.model.revision])}",
            f"{CACHE_MOUNT}/engines/{key}",
            spec.engine.cache_claim_name,
            CACHE_MOUNT,
        )
    if plan.runtime == "tensorrt-llm":
        raise SpecError(
            "spec.engine.cacheClaimName: required when the engine path (runtime tensorrt-llm) builds from "
            "model.source.uri; name a PersistentVolumeClaim for the engine cache (or use runtime "
            "pytorch where the image's PyTorch path supports the model)"
        )
    return Layout(f"{FETCH_MOUNT}/checkpoint", "", None, FETCH_MOUNT)


def engine_cache_key(spec: DeploymentSpec, plan: Plan) -> str:
    """The engine cache entry: everything a TensorRT engine is tied to."""
    return names.stable_hash(
        {
            "model": spec.model.id,
            "source": spec.model.source.uri or (spec.model.source.pvc.path if spec.model.source.pvc else ""),
            "revision": spec.model.revision,
            "precision": plan.precision,
            "tp": plan.tensor_parallel,
            "pp": plan.pipeline_parallel,
            "maxBatch": plan.max_batch_size,
            "maxInput": spec.engine.max_input_tokens,
            "maxOutput": spec.engine.max_output_tokens,
            "gpu": plan.gpu_product or "any",
            "image": spec.engine.image,
            # Added later: present only when set, so that existing cache keys stay as they were.
            **({"calibration": spec.calibration_dataset} if spec.calibration_dataset else {}),
            # An engine built from encrypted weights is kept encrypted, with their key.
            **(
                {"encryption": [spec.encryption.cipher, spec.encryption.key_secret, spec.encryption.key]}
                if spec.encryption
                else {}
            ),
        },
        length=16,
    )


# Bump only when the pods built for an unchanged spec and plan change on purpose: every
# deployment then rolls out once more.
REVISION_SCHEMA = 1


def plan_identity(plan: Plan) -> dict[str, Any]:
    """The plan's decisions that shape the serving pods, named one by one.

    A field added to :class:`Plan` later (a new estimate, a report-only figure) does not change
    existing revisions, so an operator upgrade does not roll every deployment.
    """
    return {
        "runtime": plan.runtime,
        "precision": plan.precision,
        "gpuProduct": plan.gpu_product,
        "gpuProducts": list(plan.gpu_products),
        "gpusPerReplica": plan.gpus_per_replica,
        "tensorParallel": plan.tensor_parallel,
        "pipelineParallel": plan.pipeline_parallel,
        "nodesPerReplica": plan.nodes_per_replica,
        "maxBatchSize": plan.max_batch_size,
        "fabric": plan.fabric,
        "ncclEnv": [list(kv) for kv in plan.nccl_env],
        "extraResources": [list(kv) for kv in plan.extra_resources],
        # Added later: present only when used, so that existing revisions stay as they were.
        **({"expertParallel": plan.expert_parallel} if plan.expert_parallel > 1 else {}),
    }


def revision_hash(spec: DeploymentSpec, plan: Plan) -> str:
    """The rollout revision: a hash of what changes the serving pods (model, engine, GPU, NCCL and the
    plan's pod-shaping decisions). Replicas, autoscaling, rollout thresholds and the Service type are
    not part of it."""
    return names.stable_hash(
        {
            "schema": REVISION_SCHEMA,
            "model": spec.model,
            "engine": spec.engine,
            "gpu": spec.gpu,
            "nccl": spec.nccl,
            "plan": plan_identity(plan),
            # Added later: present only when set, so that existing revisions stay as they were.
            **({"calibration": spec.calibration_dataset} if spec.calibration_dataset else {}),
            **({"encryption": spec.encryption} if spec.encryption else {}),
        }
    )


def startup_budget_seconds(plan: Plan) -> int:
    """How long a replica may take to start: 10 minutes plus 6 s per GiB of weights (R1 FP8: ~72 min)."""
    return int(600 + 6 * plan.weights_gib)


# Host memory per GPU rank beyond the weights: the CUDA context's host side, the Python runtime,
# the tokenizer, pinned staging buffers.
HOST_GIB_PER_RANK = 8
# The build Job holds the source checkpoint in host memory while converting or quantizing it
# (convert_checkpoint.py and quantize.py load the Hugging Face model whole), plus working room:
# TensorRT-LLM's examples/models/contrib/deepseek_v2/README.md reports ">= 770GB" of CPU memory to
# convert DeepSeek-V2's 472 GB of BF16 on the CPU, 1.6 x the checkpoint.
BUILD_MEMORY_FACTOR = 1.6
BUILD_MEMORY_MIN_GIB = 64


def host_memory_gib(plan: Plan) -> int:
    """Host memory of one serving pod: its node's share of the weights once (the ranks read the
    checkpoint through the page cache, which counts against the pod's memory limit), 8 GiB per
    rank, and /dev/shm (memory-backed). The old 16 GiB per GPU left 8 R1 ranks reading 642 GB
    with 128 GiB."""
    nodes = max(1, plan.nodes_per_replica)
    per_node = plan.gpus_per_replica // nodes
    return math.ceil(plan.weights_gib / nodes) + HOST_GIB_PER_RANK * per_node + shm_size_gib(plan)


def build_memory_gib(plan: Plan) -> int:
    """Host memory of the engine build Job: the source checkpoint (16-bit) held whole while it is
    converted, with room (1.6 x + 16 GiB); at least 64 GiB. 70B: 141 GB of BF16, so about 230 GiB."""
    checkpoint_gib = plan.weights_gib * 2.0 / BYTES_PER_PARAM.get(plan.precision, 2.0)
    return max(BUILD_MEMORY_MIN_GIB, math.ceil(BUILD_MEMORY_FACTOR * checkpoint_gib) + 16)


def shm_size_gib(plan: Plan) -> int:
    """Memory-backed /dev/shm: Triton's Python backend needs a little; NCCL a few GiB per peer."""
    return min(64, 2 + 4 * (plan.gpus_per_replica - 1)) if plan.gpus_per_replica > 1 else 2


def build_model_repository_configmap(
    owner: dict[str, Any], files: dict[str, str], revision: str
) -> dict[str, Any]:
    """The ConfigMap holding one revision's generated Triton config files (``a/b`` stored under key
    ``a__b``)."""
    name = names.model_repository_name(owner["metadata"]["name"], revision)
    meta = names.child_metadata(owner, name, names.COMPONENT_MODEL_REPOSITORY)
    meta["labels"][names.REVISION_LABEL] = revision
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {path.replace("/", "__"): text for path, text in sorted(files.items())},
    }


def gpu_affinity(plan: Plan) -> dict[str, Any] | None:
    """Required node affinity on the GPU products the plan allows; preferred affinity in their order."""
    products = list(plan.gpu_products or ((plan.gpu_product,) if plan.gpu_product else ()))
    if not products:
        return None
    affinity: dict[str, Any] = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": GPU_PRODUCT_LABEL, "operator": "In", "values": products}]}
            ]
        }
    }
    if len(products) > 1:
        affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {
                # 100, 10, 1: the scheduler normalises each plugin's scores, so only steep steps keep
                # the preference order from being outweighed by its resource-balancing scores.
                "weight": max(1, 100 // 10**i),
                "preference": {
                    "matchExpressions": [{"key": GPU_PRODUCT_LABEL, "operator": "In", "values": [p]}]
                },
            }
            for i, p in enumerate(products)
        ]
    return {"nodeAffinity": affinity}


def gpu_resources(plan: Plan, gpus: int, memory_gib: int, cpu: int) -> dict[str, Any]:
    """Requests and limits of a GPU container: GPUs, memory, CPU, and the fabric's extra resources."""
    extra = dict(plan.extra_resources)
    return {
        "requests": {"cpu": str(cpu), "memory": f"{memory_gib}Gi", GPU_RESOURCE: str(gpus), **extra},
        "limits": {"memory": f"{memory_gib}Gi", GPU_RESOURCE: str(gpus), **extra},
    }


def _tolerations(spec: DeploymentSpec) -> list[Any]:
    return [GPU_TOLERATION, *spec.gpu.tolerations]


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": TRITON_USER,
        "fsGroup": TRITON_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": TRITON_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def source_volumes(spec: DeploymentSpec, lay: Layout, read_only: bool) -> tuple[list[Any], list[Any]]:
    """Volumes and mounts for the model source / engine cache (and credentials)."""
    volumes: list[Any] = []
    mounts: list[Any] = []
    if lay.cache_volume is not None:
        volumes.append(
            {
                "name": "model-store",
                "persistentVolumeClaim": {"claimName": lay.cache_volume, "readOnly": read_only},
            }
        )
        mounts.append({"name": "model-store", "mountPath": lay.cache_root, "readOnly": read_only})
    else:
        volumes.append({"name": "model-store", "emptyDir": {}})
        mounts.append({"name": "model-store", "mountPath": lay.cache_root})
    if spec.model.source.credentials_secret:
        volumes.append(
            {
                "name": "model-credentials",
                "secret": {"secretName": spec.model.source.credentials_secret, "defaultMode": 0o440},
            }
        )
        mounts.append({"name": "model-credentials", "mountPath": CREDENTIALS_MOUNT, "readOnly": True})
    return volumes, mounts


def _credentials_env(spec: DeploymentSpec) -> list[dict[str, str]]:
    # Point the clients at files of the mounted Secret; no secret value ever sits in the pod spec.
    if not spec.model.source.credentials_secret:
        return []
    return [
        {"name": "AWS_SHARED_CREDENTIALS_FILE", "value": f"{CREDENTIALS_MOUNT}/credentials"},
        {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{CREDENTIALS_MOUNT}/key.json"},
        {"name": "HF_TOKEN_PATH", "value": f"{CREDENTIALS_MOUNT}/token"},
    ]


def checkpoint_gib(spec: DeploymentSpec, plan: Plan) -> int:
    """The checkpoint's size on disk: the plan's weights at the checkpoint's own precision (the
    catalog's, else spec.model.architecture's, else BF16), plus 5 % and 1 GiB for the tokenizer,
    configs and file system overhead."""
    arch = catalog.lookup(spec.model.id)
    native = arch.native_precision if arch else "bf16"
    if spec.model.architecture is not None:
        native = spec.model.architecture.native_precision
    ratio = BYTES_PER_PARAM.get(native, 2.0) / BYTES_PER_PARAM.get(plan.precision, 2.0)
    return math.ceil(plan.weights_gib * ratio * 1.05) + 1


def engine_gib(plan: Plan) -> int:
    """The built engine's size: the plan's weights (all ranks), plus 5 % and 1 GiB."""
    return math.ceil(plan.weights_gib * 1.05) + 1


DECRYPT_WORK_GIB = 2  # the decrypt command's own memory: Python, two chunks per worker in flight
# On the engine path the serving pod reads only the tokenizer and configs of the checkpoint; its
# weight files are left encrypted (decrypt --exclude), and the folder is sized for the rest.
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.h5", "*.msgpack")
TOKENIZER_GIB = 4
ENGINE_PLAIN_MOUNT = "/decrypted-engine"  # the decrypted engine in a serving pod (engine path)
ENGINE_WORK_MOUNT = "/engine-work"  # the build Job's plaintext work folder (engine path)


def encrypted_engine(spec: DeploymentSpec, plan: Plan) -> bool:
    """Whether the engine is built from encrypted weights and kept encrypted in the cache."""
    return spec.encryption is not None and plan.runtime == "tensorrt-llm"


def engine_cache_dir(spec: DeploymentSpec, plan: Plan) -> str:
    """The engine's folder in the cache on the model volume (encrypted when the weights are)."""
    return f"{MODEL_MOUNT}/{ENGINE_CACHE_DIR}/{engine_cache_key(spec, plan)}"


def _in_memory(spec: DeploymentSpec, gib: int) -> int:
    enc = spec.encryption
    return gib if enc is not None and enc.plaintext_volume == "Memory" else 0


def plaintext_in_memory_gib(spec: DeploymentSpec, plan: Plan) -> int:
    """Memory the decrypted files take in a serving pod (0 unless they live in Memory volumes)."""
    if spec.encryption is None:
        return 0
    if encrypted_engine(spec, plan):
        return _in_memory(spec, TOKENIZER_GIB + engine_gib(plan))
    return _in_memory(spec, checkpoint_gib(spec, plan))


def serving_memory_gib(spec: DeploymentSpec, plan: Plan) -> int:
    """The serving container's memory: :func:`host_memory_gib`, except that files decrypted into
    memory replace the page cache of the weights (the ranks read the files from the volume's
    pages, which count against the pod once)."""
    in_memory = plaintext_in_memory_gib(spec, plan)
    if not in_memory:
        return host_memory_gib(plan)
    return host_memory_gib(plan) - math.ceil(plan.weights_gib / max(1, plan.nodes_per_replica)) + in_memory


def _plain_volume(spec: DeploymentSpec, name: str, gib: int) -> dict[str, Any]:
    assert spec.encryption is not None
    size = f"{gib}Gi"
    memory = spec.encryption.plaintext_volume == "Memory"
    return {
        "name": name,
        "emptyDir": {"medium": "Memory", "sizeLimit": size} if memory else {"sizeLimit": size},
    }


def _key_volume(spec: DeploymentSpec) -> dict[str, Any]:
    enc = spec.encryption
    assert enc is not None
    return {
        "name": "weights-key",
        "secret": {
            "secretName": enc.key_secret,
            "items": [{"key": enc.key, "path": "key"}],
            "defaultMode": 0o440,
        },
    }


def decrypt_volumes(spec: DeploymentSpec, plan: Plan) -> list[dict[str, Any]]:
    """A serving pod's plaintext volumes (in memory, or on the node's own disk) and the key
    Secret's volume."""
    if spec.encryption is None:
        return []
    if encrypted_engine(spec, plan):
        return [
            _plain_volume(spec, "plaintext-model", TOKENIZER_GIB),
            _plain_volume(spec, "plaintext-engine", engine_gib(plan)),
            _key_volume(spec),
        ]
    return [_plain_volume(spec, "plaintext-model", checkpoint_gib(spec, plan)), _key_volume(spec)]


def _source_dir(spec: DeploymentSpec) -> str:
    assert spec.model.source.pvc is not None
    return f"{MODEL_MOUNT}/{spec.model.source.pvc.path}".rstrip("/")


def _decrypt(
    spec: DeploymentSpec,
    plan: Plan,
    name: str,
    source: str,
    target: tuple[str, str],
    gib: int,
    exclude: tuple[str, ...] = (),
) -> dict[str, Any]:
    """An init container that decrypts ``source`` into the volume ``target`` (name, mount path) with
    the operator's own ``decrypt`` command (docs/encryption.md); with the encrypting container of
    the engine build, the only containers that mount the key Secret."""
    enc = spec.encryption
    assert enc is not None
    memory = f"{_in_memory(spec, gib) + DECRYPT_WORK_GIB}Gi"
    cpu = str(4 * plan.gpus_per_replica)  # the serving container's CPUs: the pod has them anyway
    command = [
        "deepseek-operator",
        "decrypt",
        source,
        target[1],
        "--key-file",
        f"{KEY_MOUNT}/key",
        "--cipher",
        enc.cipher,
    ]
    for pattern in exclude:
        command += ["--exclude", pattern]
    return {
        "name": name,
        "image": enc.image,
        "command": command,
        # The decrypted files are written by this container, so their pages count against its
        # memory limit while it runs, and the pod's afterwards (the serving container's request
        # has them too).
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
        "volumeMounts": [
            {"name": "model-store", "mountPath": MODEL_MOUNT, "readOnly": True},
            {"name": target[0], "mountPath": target[1]},
            {"name": "weights-key", "mountPath": KEY_MOUNT, "readOnly": True},
        ],
        "securityContext": _container_security(),
        # The command's last line names the file and chunk that failed; status quotes it.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def decrypt_container(spec: DeploymentSpec, plan: Plan) -> dict[str, Any]:
    """The serving pod's init container that decrypts the checkpoint (on the engine path: all but
    its weight files, which the engine replaces)."""
    if encrypted_engine(spec, plan):
        target, gib = ("plaintext-model", PLAINTEXT_MOUNT), TOKENIZER_GIB
        return _decrypt(spec, plan, DECRYPT_CONTAINER, _source_dir(spec), target, gib, WEIGHT_PATTERNS)
    target = ("plaintext-model", PLAINTEXT_MOUNT)
    return _decrypt(spec, plan, DECRYPT_CONTAINER, _source_dir(spec), target, checkpoint_gib(spec, plan))


def decrypt_engine_container(spec: DeploymentSpec, plan: Plan) -> dict[str, Any]:
    """The serving pod's init container that decrypts the engine from the cache."""
    target = ("plaintext-engine", ENGINE_PLAIN_MOUNT)
    return _decrypt(
        spec, plan, DECRYPT_ENGINE_CONTAINER, engine_cache_dir(spec, plan), target, engine_gib(plan)
    )


def fetch_command(spec: DeploymentSpec, lay: Layout) -> str:
    """Shell that downloads a uri source into the checkpoint folder once (:mod:`.fetch`)."""
    return fetch.fetch_command(spec, lay.checkpoint_dir)


def fetch_container(spec: DeploymentSpec, lay: Layout, mounts: list[Any]) -> dict[str, Any]:
    """The init container that downloads a uri source (with a writable model store in ``mounts``)."""
    return {
        "name": "fetch-model",
        "image": spec.engine.image,
        "command": ["sh", "-c", fetch_command(spec, lay)],
        "env": _credentials_env(spec) + fetch.fetch_env(spec),
        "volumeMounts": mounts,
        "securityContext": _container_security(),
    }


def assemble_script(source: str, models: tuple[str, ...], config_dir: str, repo_dir: str, image: str) -> str:
    """Shell of the init container that assembles the model repository: copies only ``models`` out of
    the image's ``source`` folder (never the rest: its ``tensorrt_llm_bls`` holds an unfilled
    ``${...}`` config that stops tritonserver), then writes the generated files of ``config_dir``
    (``a__b`` is ``a/b``) over them. Fails with a clear message when the image lacks a folder."""
    src = shlex.quote(source)
    repo = shlex.quote(repo_dir)
    names_ = " ".join(shlex.quote(m) for m in models)
    missing = (
        f"echo 'deepseek-operator: '\"$m\"' is not in '{src}' of image '{shlex.quote(image)}'; use a "
        "tritonserver <yy.mm>-trtllm-python-py3 image of 25.01 or later, or an image that has the "
        "TensorRT-LLM backend model folders there' >&2; exit 1"
    )
    return (
        f'set -eu; for m in {names_}; do if [ ! -d {src}/"$m" ]; then {missing}; fi; '
        f'cp -r {src}/"$m" {repo}/; done; '
        f"for f in {shlex.quote(config_dir)}/*; do p=$(basename \"$f\" | sed 's#__#/#g'); "
        f'mkdir -p {repo}/"$(dirname "$p")"; cp "$f" {repo}/"$p"; done'
    )


def _triton_command(spec: DeploymentSpec, plan: Plan) -> list[str]:
    common = [
        f"--model-repository={REPO_MOUNT}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=true",
        "--metrics-config=summary_latencies=true",  # p99 for canary analysis
        "--disable-auto-complete-config",
    ]
    if plan.runtime == "pytorch" or plan.world_size == 1:
        # The LLM-API model starts its own workers for TP/PP inside the node.
        return ["tritonserver", *common, "--backend-config=python,shm-region-prefix-name=prefix0_"]
    # Engine path with several GPUs: one MPI rank per GPU; ranks above 0 load only the engine.
    argv = ["mpirun", "--allow-run-as-root"]
    for rank in range(plan.world_size):
        argv += [
            "-n",
            "1",
            "tritonserver",
            *common,
            f"--backend-config=python,shm-region-prefix-name=prefix{rank}_",
        ]
        if rank:
            argv += ["--model-control-mode=explicit", "--load-model=tensorrt_llm"]
        if rank < plan.world_size - 1:
            argv.append(":")
    return argv


def build_deployment(
    owner: dict[str, Any], spec: DeploymentSpec, plan: Plan, repository_source: str, replicas: int | None
) -> dict[str, Any]:
    """The serving Deployment: Triton for the plan's path and world size, probes, GPUs, NCCL settings.

    One Deployment per revision (named after it), so that a canary runs beside the stable revision.
    ``repository_source`` is the folder in the image with the stock model folders; ``replicas``
    None leaves the field out (the operator sets counts through its scale field manager, and an
    HPA may own them).
    """
    name = owner["metadata"]["name"]
    lay = layout(spec, plan)
    revision = revision_hash(spec, plan)
    pod_labels = names.serving_pod_labels(name, revision)
    volumes, mounts = source_volumes(spec, lay, read_only=True)
    config_name = names.model_repository_name(name, revision)
    volumes += [
        {"name": "triton-config", "configMap": {"name": config_name}},
        {"name": "triton-repo", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm_size_gib(plan)}Gi"}},
        *decrypt_volumes(spec, plan),
    ]
    security = _container_security()
    init: list[dict[str, Any]] = [decrypt_container(spec, plan)] if spec.encryption else []
    if spec.model.source.uri:
        # Downloading needs a writable model store: the cache PVC or the per-pod folder.
        fetch_mounts = [{**m, "readOnly": False} if m["name"] == "model-store" else m for m in mounts]
        init.append(fetch_container(spec, lay, fetch_mounts))
    if plan.runtime == "tensorrt-llm":
        # An encrypted engine is complete once its manifest is there (written last).
        marker = (
            f"{engine_cache_dir(spec, plan)}/dso-manifest.json"
            if spec.encryption
            else f"{lay.engine_dir}/READY"
        )
        ready = shlex.quote(marker)
        init.append(
            {
                "name": "wait-for-engine",
                "image": spec.engine.image,
                "command": [
                    "sh",
                    "-c",
                    f"until [ -f {ready} ]; do echo waiting for engine {ready}; sleep 10; done",
                ],
                "volumeMounts": mounts,
                "securityContext": security,
            }
        )
        if spec.encryption:
            init.append(decrypt_engine_container(spec, plan))
    models = profile_for(spec.engine.image).profile.repository_models[plan.runtime]
    assemble = assemble_script(repository_source, models, CONFIG_MOUNT, REPO_MOUNT, spec.engine.image)
    init.append(
        {
            "name": "assemble-model-repository",
            "image": spec.engine.image,
            "command": ["sh", "-c", assemble],
            "volumeMounts": [
                {"name": "triton-config", "mountPath": CONFIG_MOUNT, "readOnly": True},
                {"name": "triton-repo", "mountPath": REPO_MOUNT},
            ],
            "securityContext": security,
        }
    )
    env = [{"name": k, "value": v} for k, v in plan.nccl_env]
    env += (
        [{"name": "NCCL_DEBUG", "value": "WARN"}]
        if not any(k == "NCCL_DEBUG" for k, _ in plan.nccl_env)
        else []
    )
    env += _credentials_env(spec)
    mem_gib = serving_memory_gib(spec, plan)
    period = 10
    probe = {"httpGet": {"port": "http"}, "periodSeconds": period, "timeoutSeconds": 5}
    container = {
        "name": "triton",
        "image": spec.engine.image,
        "command": _triton_command(spec, plan),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": env,
        "resources": gpu_resources(plan, plan.gpus_per_replica, mem_gib, 4 * plan.gpus_per_replica),
        "startupProbe": {
            **probe,
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "failureThreshold": math.ceil(startup_budget_seconds(plan) / period),
        },
        "readinessProbe": {
            **probe,
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "failureThreshold": 3,
        },
        "livenessProbe": {
            **probe,
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 15,
            "failureThreshold": 4,
        },
        "volumeMounts": [
            *mounts,
            {"name": "triton-repo", "mountPath": REPO_MOUNT, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            *(
                [{"name": "plaintext-model", "mountPath": PLAINTEXT_MOUNT, "readOnly": True}]
                if spec.encryption
                else []
            ),
            *(
                [{"name": "plaintext-engine", "mountPath": ENGINE_PLAIN_MOUNT, "readOnly": True}]
                if encrypted_engine(spec, plan)
                else []
            ),
        ],
        "securityContext": security,
    }
    pod_spec: dict[str, Any] = {
        "securityContext": _pod_security(),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "tolerations": _tolerations(spec),
        "initContainers": init,
        "containers": [container],
        "volumes": volumes,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": names.selector(name, names.COMPONENT_SERVING)},
            }
        ],
    }
    if affinity := gpu_affinity(plan):
        pod_spec["affinity"] = affinity
    if spec.gpu.node_selector:
        pod_spec["nodeSelector"] = dict(spec.gpu.node_selector)
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": names.revision_selector(name, revision)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "progressDeadlineSeconds": startup_budget_seconds(plan) + 600,
        "revisionHistoryLimit": 5,
        "template": {
            "metadata": {"labels": pod_labels, "annotations": {names.REVISION_LABEL: revision}},
            "spec": pod_spec,
        },
    }
    if replicas is not None:
        deployment_spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": revision_metadata(owner, names.workload_name(name, revision), revision),
        "spec": deployment_spec,
    }


def revision_metadata(owner: dict[str, Any], name: str, revision: str) -> dict[str, Any]:
    meta = names.child_metadata(owner, name, names.COMPONENT_SERVING)
    meta["labels"][names.REVISION_LABEL] = revision
    return meta


def build_service(owner: dict[str, Any], spec: DeploymentSpec, leader_only: bool = False) -> dict[str, Any]:
    """The Service in front of the serving pods that take traffic (those with the traffic label: the
    stable and canary revisions, never a warm standby): http 8000, grpc 8001, metrics 8002
    (multi-node replicas: only their leaders serve, on http 8000 only)."""
    name = owner["metadata"]["name"]
    selector = {**names.selector(name, names.COMPONENT_SERVING), names.TRAFFIC_LABEL: names.TRAFFIC_ON}
    http = {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}
    ports: list[dict[str, Any]] = [http]
    if leader_only:
        # A multi-node leader runs trtllm-serve, which declares and serves http only: a Service port
        # for grpc or metrics would point at a port name the pod does not have.
        selector[LWS_WORKER_INDEX_LABEL] = "0"
    else:
        ports += [
            {
                "name": "grpc",
                "port": GRPC_PORT,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "grpc",
            },
            {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
        ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": names.child_metadata(owner, names.serving_name(name), names.COMPONENT_SERVING),
        "spec": {"type": spec.service_type, "selector": selector, "ports": ports},
    }


def build_pdb(owner: dict[str, Any], stable: str) -> dict[str, Any]:
    """A PodDisruptionBudget letting voluntary disruptions take one pod of the stable revision
    ``stable`` at a time.

    It selects the stable revision only: with ``maxUnavailable`` the disruption controller looks
    up the controller of every selected pod, and a canary's or standby's pods whose ReplicaSet is
    being removed would make it warn ``CalculateExpectedPodCountFailed`` at every rollout.
    """
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": names.child_metadata(owner, names.serving_name(name), names.COMPONENT_SERVING),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": names.revision_selector(name, stable)},
        },
    }


_DTYPE = {"bf16": "bfloat16", "fp16": "float16"}
_QFORMAT = {"fp8": "fp8", "int8": "int8_sq", "int4-awq": "int4_awq"}


def _hf_architecture(model_id: str) -> str:
    """The Hugging Face architecture of a model: the catalog's, else guessed from the id."""
    arch = catalog.lookup(model_id)
    if arch is not None and arch.hf_architecture:
        return arch.hf_architecture
    low = model_id.lower()
    if "qwen" in low:
        return "Qwen2ForCausalLM"
    if "v2" in low:
        return "DeepseekV2ForCausalLM"
    return "LlamaForCausalLM"


def converter_path(spec: DeploymentSpec) -> str:
    """The image's checkpoint converter for the model (under the examples folder), from its profile;
    :class:`SpecError` when the engine path of the image has none for it."""
    profile = profile_for(spec.engine.image).profile
    hf = _hf_architecture(spec.model.id)
    support = profile.support("tensorrt-llm", hf)
    if support is None or not support.converter:
        raise SpecError(
            f"spec.engine.runtime: the engine path of {profile.label} has no checkpoint converter for "
            f"{spec.model.id} ({hf}); use runtime pytorch or auto"
        )
    return support.converter


def _convert_and_build(
    spec: DeploymentSpec, plan: Plan, ckpt: str, work: str, calib_root: str
) -> tuple[str, str]:
    """The checkpoint conversion (or quantization) into ``work``/ckpt and the trtllm-build of
    ``work``/engine, as shell lines (``ckpt`` quoted already)."""
    tp, pp = plan.tensor_parallel, plan.pipeline_parallel
    if plan.precision in _QFORMAT:
        quantize = profile_for(spec.engine.image).profile.quantize_script
        extra = " --kv_cache_dtype fp8" if plan.precision == "fp8" else ""
        if spec.calibration_dataset:
            # A folder on the model volume: quantize.py reads --calib_dataset as "the huggingface
            # dataset name or the local directory of the dataset", so nothing is downloaded.
            extra += f" --calib_dataset {shlex.quote(f'{calib_root}/{spec.calibration_dataset}')}"
        convert = (
            f'python3 "$TRTLLM_EXAMPLES/{quantize}" --model_dir {ckpt} --dtype bfloat16 '
            f"--qformat {_QFORMAT[plan.precision]}{extra} --tp_size {tp} --pp_size {pp} "
            f"--output_dir {work}/ckpt"
        )
    else:
        convert = (
            f'python3 "$TRTLLM_EXAMPLES/{converter_path(spec)}" --model_dir {ckpt} '
            f"--dtype {_DTYPE[plan.precision]} --tp_size {tp} --pp_size {pp} --output_dir {work}/ckpt"
        )
        if tp > 1:
            # The memory estimate splits the embedding over the TP ranks, as this option does.
            convert += " --use_parallel_embedding"
    max_in, max_out = spec.engine.max_input_tokens, spec.engine.max_output_tokens
    build = (
        f"trtllm-build --checkpoint_dir {work}/ckpt --output_dir {work}/engine --gemm_plugin auto "
        f"--max_batch_size {plan.max_batch_size} --max_input_len {max_in} --max_seq_len {max_in + max_out} "
        f"--max_num_tokens {max(max_in, 8192)} --workers {plan.world_size}"
    )
    return convert, build


def engine_build_script(spec: DeploymentSpec, plan: Plan, lay: Layout) -> str:
    """Shell of the engine build: exit on a cache hit, else convert or quantize, trtllm-build, mark READY."""
    if spec.encryption is not None:
        return encrypted_build_script(spec, plan)
    out = shlex.quote(lay.engine_dir)
    work = f"{out}.partial-$HOSTNAME"
    convert, build = _convert_and_build(spec, plan, shlex.quote(lay.checkpoint_dir), work, lay.cache_root)
    return "\n".join(
        [
            "set -eu",
            f"if [ -f {out}/READY ]; then echo 'engine cache hit: {lay.engine_dir}'; exit 0; fi",
            f'rm -rf {work}; mkdir -p {work} "$(dirname {out})"',
            convert,
            build,
            f"rm -rf {out}; mv {work}/engine {out}; rm -rf {work}",
            f"touch {out}/READY",
        ]
    )


def encrypted_build_script(spec: DeploymentSpec, plan: Plan) -> str:
    """Shell of the engine build from encrypted weights (an init container of the build Job): exit
    on a cache hit (the encrypted engine's manifest), else build from the decrypted checkpoint into
    the pod's plaintext work folder; the Job's encrypt-engine container then encrypts it into the
    cache. A half-encrypted engine of an earlier pod is removed, not resumed: builds differ."""
    cache = shlex.quote(engine_cache_dir(spec, plan))
    work = ENGINE_WORK_MOUNT
    convert, build = _convert_and_build(spec, plan, PLAINTEXT_MOUNT, work, MODEL_MOUNT)
    return "\n".join(
        [
            "set -eu",
            f"if [ -f {cache}/dso-manifest.json ]; then echo 'engine cache hit: {cache}'; exit 0; fi",
            f"rm -rf {cache} {work}/ckpt {work}/engine",
            convert,
            build,
            f"rm -rf {work}/ckpt",
        ]
    )


def build_engine_job(owner: dict[str, Any], spec: DeploymentSpec, plan: Plan) -> dict[str, Any]:
    """The Job that builds the TensorRT engine into the cache (a cache hit ends it at once)."""
    name = owner["metadata"]["name"]
    lay = layout(spec, plan)
    key = engine_cache_key(spec, plan)
    volumes, mounts = source_volumes(spec, lay, read_only=False)
    init: list[dict[str, Any]] = []
    if spec.model.source.uri:
        init.append(fetch_container(spec, lay, mounts))
    gpus = str(plan.world_size)
    memory = f"{build_memory_gib(plan) + encrypted_build_extra_gib(spec, plan)}Gi"
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": _pod_security(),
        "automountServiceAccountToken": False,
        "tolerations": _tolerations(spec),
        "initContainers": init,
        "containers": [
            {
                "name": "build",
                "image": spec.engine.image,
                "command": ["bash", "-c", engine_build_script(spec, plan, lay)],
                "env": [
                    {"name": "TRTLLM_EXAMPLES", "value": profile_for(spec.engine.image).profile.examples_dir},
                    *_credentials_env(spec),
                ],
                "resources": {
                    "requests": {GPU_RESOURCE: gpus, "cpu": "8", "memory": memory},
                    "limits": {GPU_RESOURCE: gpus, "memory": memory},
                },
                "volumeMounts": mounts,
                "securityContext": _container_security(),
                # A failed build leaves the tail of its log in the pod's status, so status can
                # quote it. Kubernetes core/v1 Container.terminationMessagePolicy:
                # FallbackToLogsOnError "will use the last chunk of container log output if the
                # termination message file is empty and the container exited with an error"
                # (at most 2048 bytes or 80 lines; kubernetes.io/docs/tasks/debug/
                # debug-application/determine-reason-pod-failure/).
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": volumes,
    }
    if spec.encryption is not None:
        _encrypted_build(spec, plan, pod_spec)
    if affinity := gpu_affinity(plan):
        pod_spec["affinity"] = affinity  # an engine is tied to the GPU it is built on
    if spec.gpu.node_selector:
        pod_spec["nodeSelector"] = dict(spec.gpu.node_selector)
    job_labels = names.labels(name, names.COMPONENT_ENGINE_BUILD)
    meta = names.child_metadata(owner, names.engine_job_name(name, key), names.COMPONENT_ENGINE_BUILD)
    # The revision label lets the status check find the build of the revision being served.
    meta["labels"][names.REVISION_LABEL] = revision_hash(spec, plan)
    meta["annotations"] = {names.ENGINE_CACHE_KEY_ANNOTATION: key}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 2,
            "template": {"metadata": {"labels": job_labels}, "spec": pod_spec},
        },
    }


def encrypted_build_extra_gib(spec: DeploymentSpec, plan: Plan) -> int:
    """Memory the build pod's plaintext takes when it lives in memory: the decrypted checkpoint and
    the work folder (the converted checkpoint and the engine)."""
    if spec.encryption is None:
        return 0
    return _in_memory(spec, checkpoint_gib(spec, plan) + 2 * engine_gib(plan))


def _encrypted_build(spec: DeploymentSpec, plan: Plan, pod: dict[str, Any]) -> None:
    """The build pod from encrypted weights: decrypt-weights (the checkpoint into the pod), build
    (an init container now, into the pod's plaintext work folder), then encrypt-engine, the one
    container left, which encrypts the engine into the cache with the same key and cipher (a cache
    hit: nothing to do). The key Secret is mounted into decrypt-weights and encrypt-engine only."""
    enc = spec.encryption
    assert enc is not None
    (build,) = pod["containers"]
    ckpt = checkpoint_gib(spec, plan)
    decrypt = _decrypt(
        spec, plan, DECRYPT_CONTAINER, _source_dir(spec), ("plaintext-model", PLAINTEXT_MOUNT), ckpt
    )
    decrypt["resources"]["requests"]["cpu"] = "8"  # the build's CPUs
    build["volumeMounts"] = [
        *build["volumeMounts"],
        {"name": "plaintext-model", "mountPath": PLAINTEXT_MOUNT, "readOnly": True},
        {"name": "engine-work", "mountPath": ENGINE_WORK_MOUNT},
    ]
    memory = f"{_in_memory(spec, ckpt + 2 * engine_gib(plan)) + DECRYPT_WORK_GIB}Gi"
    encrypt = {
        "name": ENCRYPT_ENGINE_CONTAINER,
        "image": enc.image,
        "command": [
            "deepseek-operator",
            "encrypt",
            f"{ENGINE_WORK_MOUNT}/engine",
            engine_cache_dir(spec, plan),
            "--key-file",
            f"{KEY_MOUNT}/key",
            "--cipher",
            enc.cipher,
            "--if-missing",
        ],
        # The plaintext volumes' pages stay charged to the pod while this runs.
        "resources": {"requests": {"cpu": "8", "memory": memory}, "limits": {"memory": memory}},
        "volumeMounts": [
            {"name": "model-store", "mountPath": MODEL_MOUNT},
            {"name": "engine-work", "mountPath": ENGINE_WORK_MOUNT, "readOnly": True},
            {"name": "weights-key", "mountPath": KEY_MOUNT, "readOnly": True},
        ],
        "securityContext": _container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod["initContainers"] = [*pod["initContainers"], decrypt, build]
    pod["containers"] = [encrypt]
    pod["volumes"] = [
        *pod["volumes"],
        _plain_volume(spec, "plaintext-model", ckpt),
        _plain_volume(spec, "engine-work", 2 * engine_gib(plan)),
        _key_volume(spec),
    ]


GPU_UTIL_METRIC = (
    autoscaling.DCGM_GPU_UTIL
)  # dcgm-exporter's GPU utilization (percent), via prometheus-adapter


def build_hpa(
    owner: dict[str, Any],
    spec: DeploymentSpec,
    target: str,
    workload_kind: str = "Deployment",
    lent_replicas: int = 0,
    metric_names: autoscaling.MetricNames | None = None,
) -> dict[str, Any] | None:
    """An HPA on average GPU utilization (and, when asked, Triton's queue) of the stable revision's
    workload ``target``, when ``spec.autoscaling`` is set. A LeaderWorkerSet scales by whole
    groups through its scale subresource. ``lent_replicas`` (a canary that took a stable
    replica's GPUs) lowers the ceiling for as long as the canary runs, so that the HPA does not
    take them back. ``metric_names``: what the adapter serves (default: the operator's setting)."""
    auto = spec.autoscaling
    if auto is None:
        return None
    name = owner["metadata"]["name"]
    ceiling = max(auto.min_replicas, auto.max_replicas - lent_replicas)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": names.child_metadata(owner, names.serving_name(name), names.COMPONENT_SERVING),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1" if workload_kind == "Deployment" else LWS_API_VERSION,
                "kind": workload_kind,
                "name": target,
            },
            "minReplicas": auto.min_replicas,
            "maxReplicas": ceiling,
            "metrics": autoscaling.hpa_metrics(auto, metric_names or autoscaling.metric_names()),
            "behavior": autoscaling.hpa_behavior(auto),
        },
    }
