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

# Condition types of the contract.
COND_READY = "Ready"
COND_PLACED = "Placed"
COND_ENGINE_READY = "EngineReady"
COND_PROGRESSING = "Progressing"
COND_ANALYSIS_PASSING = "AnalysisPassing"
COND_ROLLED_BACK = "RolledBack"

# Phases of the contract.
PHASES = (
    "Pending",
    "Placing",
    "Building",
    "Deploying",
    "Canary",
    "Ready",
    "Degraded",
    "RolledBack",
    "Failed",
)
