"""Names of the DeepSeekDeployment API and of what the operator writes. One place for all of them."""

from __future__ import annotations

GROUP = "serving.deepseek.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "DeepSeekDeployment"
PLURAL = "deepseekdeployments"
SINGULAR = "deepseekdeployment"
SHORT_NAME = "dsd"
CRD_NAME = f"{PLURAL}.{GROUP}"

# Server-side apply field manager for everything the operator writes.
FIELD_MANAGER = "deepseek-operator"

# Where kopf keeps its own bookkeeping (annotations, never spec).
KOPF_PREFIX = GROUP

# Labels on every child object.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
MANAGED_BY = "deepseek-operator"

# NVIDIA's device plugin and GPU Feature Discovery (GFD): the resource, the taint on GPU
# nodes, and the node labels placement reads (and the simulated cluster writes).
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
GPU_FAMILY_LABEL = "nvidia.com/gpu.family"
GPU_COMPUTE_MAJOR_LABEL = "nvidia.com/gpu.compute.major"
GPU_COMPUTE_MINOR_LABEL = "nvidia.com/gpu.compute.minor"
GPU_REPLICAS_LABEL = "nvidia.com/gpu.replicas"  # > 1: the GPU is shared (time-slicing, MPS)
GPU_SHARING_LABEL = "nvidia.com/gpu.sharing-strategy"

# LeaderWorkerSet (multi-node replicas), https://lws.sigs.k8s.io
LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
LWS_KIND = "LeaderWorkerSet"
LWS_PLURAL = "leaderworkersets"
LWS_WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"

# The init container of a serving pod that decrypts encrypted weights (builders/serving.py); the
# diagnosis names its failures WeightsDecryptionFailed.
DECRYPT_CONTAINER = "decrypt-weights"
DECRYPT_ENGINE_CONTAINER = "decrypt-engine"  # the engine path: the engine, from the cache
ENCRYPT_ENGINE_CONTAINER = "encrypt-engine"  # the engine build: the built engine, into the cache
DECRYPTION_CONTAINERS = (DECRYPT_CONTAINER, DECRYPT_ENGINE_CONTAINER)
