"""Pure diagnosis: the first thing that blocks a DeepSeekDeployment, from pods, Jobs and references."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepseek_operator.diagnosis import (
    BUILD_LINE_LIMIT,
    CRASH_LINE_LIMIT,
    Blocker,
    Reference,
    first_blocker,
    job_blocker,
    missing_references,
    pod_blocker,
    slim_pod,
)

NS = "llm"
TRITON = "nvcr.io/nvidia/tritonserver:24.08-trtllm-python-py3"
BAD_TRITON = "nvcr.io/nvidia/tritonserver:24.13-trtllm-python-py3"
BUILDER = "registry.example.com/deepseek/engine-builder:0.1.0"
PREEMPTION = "preemption: 0/5 nodes are available: 5 Preemption is not helpful for scheduling."
GPU_MESSAGE = (
    "0/4 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
    "3 Insufficient nvidia.com/gpu. preemption: 0/4 nodes are available: 1 Preemption is not helpful for "
    "scheduling, 3 No preemption victims found for incoming pod."
)
PULL_NOT_FOUND = (
    f'rpc error: code = NotFound desc = failed to pull and unpack image "{BAD_TRITON}": failed to resolve '
    f'reference "{BAD_TRITON}": {BAD_TRITON}: not found'
)
PULL_BACKOFF = f'Back-off pulling image "{BAD_TRITON}"'
INVALID_IMAGE = "nvcr.io/nvidia/Tritonserver:bad tag"
INVALID_MESSAGE = (
    f'Failed to apply default image tag "{INVALID_IMAGE}": couldn\'t parse image name "{INVALID_IMAGE}": '
    "invalid reference format"
)
NEVER_PULL_IMAGE = "local/engine-builder:dev"
NEVER_PULL_MESSAGE = f'Container image "{NEVER_PULL_IMAGE}" is not present with pull policy of Never'
MISSING_KEY = "couldn't find key token in Secret llm/hf-token"
MISSING_CONFIGMAP = 'configmap "triton-config" not found'
CREATE_ERROR = (
    'failed to generate container "4b1f" spec: failed to apply OCI options: failed to mkdir "/models": '
    "mkdir /models: read-only file system"
)
RUN_ERROR = (
    "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create "
    'failed: unable to start container process: exec: "tritonserver": executable file not found in $PATH'
)
OOM_LOG = (
    "I0501 10:02:11.123 model_lifecycle.cc:461] loading: deepseek-r1:1\n"
    "[TensorRT-LLM][ERROR] CUDA runtime error in cudaMalloc: out of memory\n\n"
)
BUILD_LOG = (
    "[TensorRT-LLM] TensorRT-LLM version: 0.12.0\n"
    "Loading checkpoint shards: 100%|##########| 163/163\n"
    "RuntimeError: [TensorRT-LLM][ERROR] Assertion failed: tp_size * pp_size must equal world size "
    "(8 != 16)\n"
)


# --------------------------------------------------------------------------- builders of realistic objects


def container_status(
    name: str,
    image: str | None = TRITON,
    *,
    state: dict[str, Any] | None = None,
    last_state: dict[str, Any] | None = None,
    ready: bool = False,
    restarts: int = 0,
) -> dict[str, Any]:
    """A container status as the kubelet writes it, ids and timestamps included."""
    cs: dict[str, Any] = {
        "name": name,
        "ready": ready,
        "restartCount": restarts,
        "started": ready,
        "imageID": "",
        "state": state or {"running": {"startedAt": "2025-05-01T10:01:00Z"}},
        "lastState": last_state or {},
    }
    if image is not None:
        cs["image"] = image
    if ready:
        cs["containerID"] = "containerd://9c1d4c1b3a7f"
        cs["imageID"] = f"{image}@sha256:{'a' * 64}"
    return cs


def waiting(reason: str, message: str | None = None) -> dict[str, Any]:
    """A ``state`` with ``waiting``."""
    detail = {"reason": reason}
    if message is not None:
        detail["message"] = message
    return {"waiting": detail}


def terminated(exit_code: int, reason: str, message: str | None = None) -> dict[str, Any]:
    """A ``state`` with ``terminated``, timestamps and container id included."""
    detail: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": "2025-05-01T10:01:00Z",
        "finishedAt": "2025-05-01T10:03:00Z",
        "containerID": "containerd://0f2e9a77",
    }
    if message is not None:
        detail["message"] = message
    return {"terminated": detail}


def make_pod(
    name: str,
    *,
    phase: str = "Running",
    image: str = TRITON,
    statuses: list[dict[str, Any]] | None = None,
    init_statuses: list[dict[str, Any]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    created: str = "2025-05-01T10:00:00Z",
    job: str | None = None,
    node: str | None = "gpu-node-0",
    extra_status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pod as the API server returns it: a serving pod, or a Job pod when ``job`` is given."""
    owner = {"kind": "Job", "name": job} if job else {"kind": "StatefulSet", "name": "ds-r1-serving"}
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": NS,
        "uid": f"uid-{name}",
        "resourceVersion": "48213",
        "creationTimestamp": created,
        "labels": {"app.kubernetes.io/name": "deepseek", "app.kubernetes.io/instance": "ds-r1"},
        "annotations": {"kubectl.kubernetes.io/default-container": "triton"},
        "ownerReferences": [
            {
                **owner,
                "apiVersion": "apps/v1",
                "uid": "uid-owner",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
        "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {}}],
    }
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "triton",
                "image": image,
                "args": ["tritonserver", "--model-repository=/models"],
                "ports": [{"containerPort": 8000, "name": "http", "protocol": "TCP"}],
                "env": [
                    {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
                ],
                "resources": {
                    "requests": {"cpu": "16", "memory": "256Gi", "nvidia.com/gpu": "8"},
                    "limits": {"memory": "256Gi", "nvidia.com/gpu": "8"},
                    "claims": [],
                },
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": [{"name": "models", "mountPath": "/models"}],
            }
        ],
        "initContainers": [
            {"name": "fetch-engine", "image": BUILDER, "resources": {"requests": {"cpu": "1"}}},
        ],
        "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "restartPolicy": "Never" if job else "Always",
        "schedulerName": "default-scheduler",
    }
    if node:
        spec["nodeName"] = node
    status: dict[str, Any] = {
        "phase": phase,
        "qosClass": "Burstable",
        "startTime": created,
        "conditions": conditions
        if conditions is not None
        else [
            {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": created},
            {"type": "Ready", "status": "True", "lastProbeTime": None, "lastTransitionTime": created},
        ],
    }
    if node:
        status["hostIP"] = "10.0.0.7"
        status["podIP"] = "10.244.1.17"
        status["podIPs"] = [{"ip": "10.244.1.17"}]
    if statuses is not None:
        status["containerStatuses"] = statuses
    if init_statuses is not None:
        status["initContainerStatuses"] = init_statuses
    status.update(extra_status or {})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}


def scheduled_false(message: str, reason: str = "Unschedulable") -> list[dict[str, Any]]:
    """The conditions of a pod the scheduler has given up on (for now)."""
    return [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": reason,
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": "2025-05-01T10:00:01Z",
        }
    ]


def healthy(name: str) -> dict[str, Any]:
    """A running, ready serving pod."""
    return make_pod(
        name,
        statuses=[container_status("triton", ready=True)],
        init_statuses=[
            container_status("fetch-engine", BUILDER, state=terminated(0, "Completed")),
        ],
    )


def pending(name: str, message: str) -> dict[str, Any]:
    """A pod the scheduler reports as unschedulable with ``message``."""
    return make_pod(name, phase="Pending", conditions=scheduled_false(message), node=None)


def crash_looping(name: str, last: dict[str, Any] | None, restarts: int = 5) -> dict[str, Any]:
    """A pod whose triton container is in CrashLoopBackOff after ``last``."""
    backoff = f"back-off 5m0s restarting failed container=triton pod={name}_llm(uid-{name})"
    return make_pod(
        name,
        statuses=[
            container_status(
                "triton", state=waiting("CrashLoopBackOff", backoff), last_state=last, restarts=restarts
            )
        ],
    )


def stuck(name: str, reason: str, message: str | None, image: str | None = BAD_TRITON) -> dict[str, Any]:
    """A pending pod whose triton container waits with ``reason``."""
    return make_pod(
        name,
        phase="Pending",
        image=image or TRITON,
        statuses=[container_status("triton", image, state=waiting(reason, message))],
    )


def job_pod(name: str, created: str, log: str | None, exit_code: int = 1) -> dict[str, Any]:
    """A failed pod of the engine build Job whose builder container left ``log`` as termination message."""
    return make_pod(
        name,
        phase="Failed",
        image=BUILDER,
        job="ds-r1-engine-build",
        created=created,
        statuses=[container_status("triton", BUILDER, state=terminated(exit_code, "Error", log))],
    )


def deleted(pod: dict[str, Any]) -> dict[str, Any]:
    """``pod`` with a deletion under way."""
    pod["metadata"]["deletionTimestamp"] = "2025-05-01T10:05:00Z"
    pod["metadata"]["deletionGracePeriodSeconds"] = 30
    return pod


def make_job(*conditions: tuple[str, str, str, str]) -> dict[str, Any]:
    """The engine build Job with (type, status, reason, message) conditions."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "ds-r1-engine-build", "namespace": NS, "uid": "uid-job"},
        "spec": {"backoffLimit": 2, "template": {}},
        "status": {
            "conditions": [
                {
                    "type": kind,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastProbeTime": "2025-05-01T10:10:00Z",
                    "lastTransitionTime": "2025-05-01T10:10:00Z",
                }
                for kind, status, reason, message in conditions
            ],
            "failed": 3,
            "startTime": "2025-05-01T10:00:00Z",
        },
    }


# --------------------------------------------------------------------------- pod_blocker: one cause each

# (id, pods, reason, fragments the message must contain)
POD_CASES: list[tuple[str, list[dict[str, Any]], str, list[str]]] = [
    (
        "err-image-pull",
        [stuck("ds-r1-serving-0", "ErrImagePull", PULL_NOT_FOUND)],
        "ImagePullFailed",
        ["ds-r1-serving-0", "triton", f'"{BAD_TRITON}"', PULL_NOT_FOUND, "ErrImagePull"],
    ),
    (
        "image-pull-backoff",
        [stuck("ds-r1-serving-0", "ImagePullBackOff", PULL_BACKOFF)],
        "ImagePullFailed",
        ["ds-r1-serving-0", "triton", PULL_BACKOFF, "imagePullSecrets"],
    ),
    (
        "invalid-image-name",
        [stuck("ds-r1-serving-0", "InvalidImageName", INVALID_MESSAGE, INVALID_IMAGE)],
        "ImagePullFailed",
        [f'"{INVALID_IMAGE}"', INVALID_MESSAGE],
    ),
    (
        "never-pull-image-from-spec",
        # The kubelet has not filled in the status's image: it is taken from the spec container.
        [stuck("ds-r1-serving-0", "ErrImageNeverPull", NEVER_PULL_MESSAGE, image=None)],
        "ImagePullFailed",
        [f'"{TRITON}"', NEVER_PULL_MESSAGE],
    ),
    (
        "init-container-image-pull",
        [
            make_pod(
                "ds-r1-serving-0",
                phase="Pending",
                init_statuses=[container_status("fetch-engine", None, state=waiting("ImagePullBackOff"))],
                statuses=[container_status("triton", state=waiting("PodInitializing"))],
            )
        ],
        "ImagePullFailed",
        ["fetch-engine", f'"{BUILDER}"', "ImagePullBackOff"],
    ),
    (
        "crash-loop-oom",
        [crash_looping("ds-r1-serving-0", terminated(137, "OOMKilled", OOM_LOG), restarts=7)],
        "CrashLoopBackOff",
        [
            "ds-r1-serving-0",
            "triton",
            "restarted 7 times",
            "exit code 137 (OOMKilled)",
            "CUDA runtime error in cudaMalloc: out of memory",
            "memory limit",
        ],
    ),
    (
        "crash-loop-error-no-message",
        [crash_looping("ds-r1-serving-0", terminated(1, "Error"), restarts=2)],
        "CrashLoopBackOff",
        ["ds-r1-serving-0", "restarted 2 times", "exit code 1 (Error)", "logs"],
    ),
    (
        "crash-loop-without-last-state",
        [crash_looping("ds-r1-serving-0", None, restarts=1)],
        "CrashLoopBackOff",
        ["ds-r1-serving-0", "triton", "restarted 1 time)"],
    ),
    (
        "create-container-config-error-secret-key",
        [stuck("ds-r1-serving-0", "CreateContainerConfigError", MISSING_KEY, TRITON)],
        "ContainerConfigError",
        ["ds-r1-serving-0", "triton", MISSING_KEY, "CreateContainerConfigError"],
    ),
    (
        "create-container-config-error-configmap",
        [stuck("ds-r1-serving-0", "CreateContainerConfigError", MISSING_CONFIGMAP, TRITON)],
        "ContainerConfigError",
        [MISSING_CONFIGMAP],
    ),
    (
        "create-container-error",
        [stuck("ds-r1-serving-0", "CreateContainerError", CREATE_ERROR, TRITON)],
        "ContainerConfigError",
        [CREATE_ERROR, "CreateContainerError"],
    ),
    (
        "run-container-error",
        [stuck("ds-r1-serving-0", "RunContainerError", RUN_ERROR, TRITON)],
        "ContainerConfigError",
        [RUN_ERROR, "RunContainerError"],
    ),
    (
        "unschedulable-gpus",
        [pending("ds-r1-serving-0", GPU_MESSAGE)],
        "Unschedulable",
        [f"pod ds-r1-serving-0 cannot be scheduled: {GPU_MESSAGE}"],
    ),
    (
        "pvc-not-found",
        [
            pending(
                "ds-r1-serving-0",
                f'0/5 nodes are available: persistentvolumeclaim "models" not found. {PREEMPTION}',
            )
        ],
        "PVCNotFound",
        ["ds-r1-serving-0", 'PersistentVolumeClaim "models"', "does not exist", NS],
    ),
    (
        "pvc-being-deleted",
        [
            pending(
                "ds-r1-serving-0",
                f'0/5 nodes are available: persistentvolumeclaim "models" is being deleted. {PREEMPTION}',
            )
        ],
        "PVCNotBound",
        ["ds-r1-serving-0", 'PersistentVolumeClaim "models"', "being deleted"],
    ),
    (
        "pvc-unbound",
        [
            pending(
                "ds-r1-serving-0",
                f"0/5 nodes are available: pod has unbound immediate PersistentVolumeClaims. {PREEMPTION}",
            )
        ],
        "PVCNotBound",
        ["ds-r1-serving-0", "not bound", "StorageClass"],
    ),
    (
        "failed-job-pod",
        [job_pod("ds-r1-engine-build-x7k2p", "2025-05-01T10:00:00Z", BUILD_LOG)],
        "PodFailed",
        [
            "ds-r1-engine-build-x7k2p",
            "exit code 1 (Error)",
            "tp_size * pp_size must equal world size (8 != 16)",
        ],
    ),
    (
        "evicted-pod",
        [
            make_pod(
                "ds-r1-serving-0",
                phase="Failed",
                statuses=[container_status("triton", state=terminated(0, "Completed"))],
                extra_status={
                    "reason": "Evicted",
                    "message": "The node was low on resource: ephemeral-storage. Threshold quantity: 10Gi.",
                },
            )
        ],
        "PodFailed",
        ["ds-r1-serving-0", "Evicted", "low on resource: ephemeral-storage"],
    ),
    # Priority: the cause ranks before the pod name.
    (
        "image-pull-beats-unschedulable",
        [pending("ds-r1-serving-0", GPU_MESSAGE), stuck("ds-r1-serving-1", "ErrImagePull", PULL_NOT_FOUND)],
        "ImagePullFailed",
        ["ds-r1-serving-1"],
    ),
    (
        "image-pull-beats-crash-loop",
        [
            crash_looping("ds-r1-serving-0", terminated(137, "OOMKilled")),
            stuck("ds-r1-serving-1", "ImagePullBackOff", PULL_BACKOFF),
        ],
        "ImagePullFailed",
        ["ds-r1-serving-1"],
    ),
    (
        "crash-loop-beats-config-error",
        [
            stuck("ds-r1-serving-0", "CreateContainerConfigError", MISSING_KEY, TRITON),
            crash_looping("ds-r1-serving-1", terminated(1, "Error")),
        ],
        "CrashLoopBackOff",
        ["ds-r1-serving-1"],
    ),
    (
        "config-error-beats-unschedulable",
        [
            pending("ds-r1-serving-0", GPU_MESSAGE),
            stuck("ds-r1-serving-1", "CreateContainerConfigError", MISSING_KEY, TRITON),
        ],
        "ContainerConfigError",
        ["ds-r1-serving-1"],
    ),
    (
        "unschedulable-beats-failed-pod",
        [
            job_pod("ds-r1-engine-build-a", "2025-05-01T10:00:00Z", BUILD_LOG),
            pending("ds-r1-engine-build-b", GPU_MESSAGE),
        ],
        "Unschedulable",
        ["ds-r1-engine-build-b"],
    ),
    (
        "same-cause-first-by-name",
        [pending("ds-r1-serving-1", GPU_MESSAGE), pending("ds-r1-serving-0", GPU_MESSAGE)],
        "Unschedulable",
        ["pod ds-r1-serving-0 "],
    ),
    (
        "healthy-pods-do-not-hide-a-blocker",
        [healthy("ds-r1-serving-0"), crash_looping("ds-r1-serving-1", terminated(139, "Error"))],
        "CrashLoopBackOff",
        ["ds-r1-serving-1", "exit code 139"],
    ),
    (
        "deleted-pod-is-ignored-but-live-one-counts",
        [
            deleted(stuck("ds-r1-serving-0", "ErrImagePull", PULL_NOT_FOUND)),
            pending("ds-r1-serving-1", GPU_MESSAGE),
        ],
        "Unschedulable",
        ["pod ds-r1-serving-1 "],
    ),
]

NO_BLOCKER_CASES: list[tuple[str, list[dict[str, Any]]]] = [
    ("no-pods", []),
    ("running-and-ready", [healthy("ds-r1-serving-0"), healthy("ds-r1-serving-1")]),
    ("pending-without-conditions", [make_pod("ds-r1-serving-0", phase="Pending", conditions=[], node=None)]),
    (
        "pending-with-scheduling-gate",
        [
            make_pod(
                "ds-r1-serving-0",
                phase="Pending",
                conditions=scheduled_false(
                    "Scheduling is blocked due to non-empty scheduling gates", "SchedulingGated"
                ),
                node=None,
            )
        ],
    ),
    (
        "container-creating",
        [
            make_pod(
                "ds-r1-serving-0",
                phase="Pending",
                statuses=[container_status("triton", state=waiting("ContainerCreating"))],
            )
        ],
    ),
    (
        "succeeded-job-pod",
        [
            make_pod(
                "ds-r1-engine-build-ok",
                phase="Succeeded",
                job="ds-r1-engine-build",
                statuses=[container_status("triton", BUILDER, state=terminated(0, "Completed", "done"))],
            )
        ],
    ),
    (
        "running-after-restarts",
        [
            make_pod(
                "ds-r1-serving-0",
                statuses=[
                    container_status(
                        "triton", ready=True, restarts=3, last_state=terminated(137, "OOMKilled")
                    )
                ],
            )
        ],
    ),
    ("deleted-image-pull", [deleted(stuck("ds-r1-serving-0", "ErrImagePull", PULL_NOT_FOUND))]),
    ("deleted-unschedulable", [deleted(pending("ds-r1-serving-0", GPU_MESSAGE))]),
    ("deleted-crash-loop", [deleted(crash_looping("ds-r1-serving-0", terminated(1, "Error")))]),
    ("deleted-failed-pod", [deleted(job_pod("ds-r1-engine-build-a", "2025-05-01T10:00:00Z", BUILD_LOG))]),
]


@pytest.mark.parametrize(
    ("pods", "reason", "fragments"), [case[1:] for case in POD_CASES], ids=[case[0] for case in POD_CASES]
)
def test_pod_blocker_names_the_cause(pods: list[dict[str, Any]], reason: str, fragments: list[str]) -> None:
    blocker = pod_blocker(pods, "serving")
    assert blocker is not None
    assert (blocker.reason, blocker.where) == (reason, "serving")
    missing = [fragment for fragment in fragments if fragment not in blocker.message]
    assert not missing, blocker.message
    assert "\n" not in blocker.message


@pytest.mark.parametrize(
    "pods", [case[1] for case in NO_BLOCKER_CASES], ids=[case[0] for case in NO_BLOCKER_CASES]
)
def test_pod_blocker_none_when_nothing_blocks(pods: list[dict[str, Any]]) -> None:
    assert pod_blocker(pods, "serving") is None


def test_pod_blocker_order_of_the_input_does_not_matter() -> None:
    pods = [pending(f"ds-r1-serving-{i}", GPU_MESSAGE) for i in range(3)]
    answers = {pod_blocker(order, "serving") for order in (pods, pods[::-1], [pods[1], pods[2], pods[0]])}
    assert len(answers) == 1


def test_pod_blocker_copies_where() -> None:
    blocker = pod_blocker([pending("ds-r1-engine-build-a", GPU_MESSAGE)], "engine")
    assert blocker is not None
    assert blocker.where == "engine"


def test_pod_blocker_does_not_mutate_its_input() -> None:
    pods = [case[1] for case in POD_CASES]
    before = copy.deepcopy(pods)
    for case_pods in pods:
        pod_blocker(case_pods, "serving")
        slim = [slim_pod(pod) for pod in case_pods]
        pod_blocker(slim, "serving")
    assert pods == before


def test_pvc_not_found_names_the_claim_from_the_scheduler_message() -> None:
    message = f'0/5 nodes are available: persistentvolumeclaim "deepseek-weights-7b" not found. {PREEMPTION}'
    blocker = pod_blocker([pending("ds-r1-serving-0", message)], "serving")
    assert blocker is not None
    assert blocker.reason == "PVCNotFound"
    assert '"deepseek-weights-7b"' in blocker.message


def test_crash_loop_termination_message_is_cut_to_the_limit() -> None:
    long_line = "x" * (CRASH_LINE_LIMIT * 3)
    pod = crash_looping("ds-r1-serving-0", terminated(1, "Error", f"first line\n{long_line}\n"))
    blocker = pod_blocker([pod], "serving")
    assert blocker is not None
    assert "x" * (CRASH_LINE_LIMIT - 3) + "..." in blocker.message
    assert "x" * (CRASH_LINE_LIMIT - 2) not in blocker.message
    assert "first line" not in blocker.message


# --------------------------------------------------------------------------- job_blocker

JOB_FAILED = ("Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
JOB_COMPLETE = ("Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods")


def test_failed_job_quotes_the_newest_failed_pods_last_log_line() -> None:
    older = job_pod("ds-r1-engine-build-aaaaa", "2025-05-01T10:00:00Z", "old attempt\nKilled: out of disk\n")
    newer = job_pod("ds-r1-engine-build-zzzzz", "2025-05-01T10:05:00Z", BUILD_LOG)
    blocker = job_blocker(make_job(JOB_FAILED), [newer, older])
    assert blocker is not None
    assert (blocker.reason, blocker.where) == ("BuildFailed", "engine")
    expected_line = BUILD_LOG.strip().splitlines()[-1]
    assert blocker.message == (
        f"engine build Job ds-r1-engine-build failed ({JOB_FAILED[2]}: {JOB_FAILED[3]}); "
        f"last log line: {expected_line}"
    )
    assert blocker == job_blocker(make_job(JOB_FAILED), [older, newer])


@pytest.mark.parametrize(
    "pods",
    [
        [],
        [job_pod("ds-r1-engine-build-aaaaa", "2025-05-01T10:00:00Z", None)],
        [job_pod("ds-r1-engine-build-aaaaa", "2025-05-01T10:00:00Z", "\n  \n")],
        [make_pod("ds-r1-engine-build-aaaaa", phase="Pending", conditions=[], node=None)],
    ],
    ids=["no-pods", "no-termination-message", "blank-termination-message", "only-a-pending-pod"],
)
def test_failed_job_without_a_log_line(pods: list[dict[str, Any]]) -> None:
    blocker = job_blocker(make_job(JOB_FAILED), pods)
    assert blocker is not None
    assert blocker.reason == "BuildFailed"
    assert "ds-r1-engine-build" in blocker.message
    assert JOB_FAILED[2] in blocker.message
    assert JOB_FAILED[3] in blocker.message
    assert "last log line" not in blocker.message


def test_failed_job_falls_back_to_an_older_pod_with_a_log_line() -> None:
    older = job_pod("ds-r1-engine-build-aaaaa", "2025-05-01T10:00:00Z", BUILD_LOG)
    newer = job_pod("ds-r1-engine-build-zzzzz", "2025-05-01T10:05:00Z", None)
    blocker = job_blocker(make_job(JOB_FAILED), [newer, older])
    assert blocker is not None
    assert blocker.message.endswith(BUILD_LOG.strip().splitlines()[-1])


def test_failed_job_log_line_is_cut_to_the_limit() -> None:
    log = "y" * (BUILD_LINE_LIMIT * 2)
    blocker = job_blocker(
        make_job(JOB_FAILED), [job_pod("ds-r1-engine-build-a", "2025-05-01T10:00:00Z", log)]
    )
    assert blocker is not None
    tail = blocker.message.split("; last log line: ", 1)[1]
    assert len(tail) == BUILD_LINE_LIMIT
    assert tail.endswith("...")


def test_failure_target_counts_as_failed() -> None:
    condition = ("FailureTarget", "True", "PodFailurePolicy", "Container builder exited with code 2")
    blocker = job_blocker(make_job(condition), [])
    assert blocker is not None
    assert blocker.reason == "BuildFailed"
    assert condition[3] in blocker.message


@pytest.mark.parametrize(
    "pods",
    [
        [],
        [job_pod("ds-r1-engine-build-aaaaa", "2025-05-01T10:00:00Z", BUILD_LOG)],
        [pending("ds-r1-engine-build-bbbbb", GPU_MESSAGE)],
    ],
    ids=["no-pods", "an-earlier-failed-attempt", "a-stale-pending-pod"],
)
def test_complete_job_has_no_blocker(pods: list[dict[str, Any]]) -> None:
    assert job_blocker(make_job(JOB_COMPLETE), pods) is None


@pytest.mark.parametrize(
    "job",
    [
        None,
        make_job(),
        make_job(("Failed", "False", "", ""), ("Complete", "False", "", "")),
        make_job(("Suspended", "True", "JobSuspended", "Job suspended")),
    ],
    ids=["no-job-yet", "running", "conditions-false", "suspended"],
)
@pytest.mark.parametrize(
    "pods",
    [
        [pending("ds-r1-engine-build-bbbbb", GPU_MESSAGE)],
        [stuck("ds-r1-engine-build-bbbbb", "ImagePullBackOff", PULL_BACKOFF)],
        [job_pod("ds-r1-engine-build-aaaaa", "2025-05-01T10:00:00Z", BUILD_LOG)],
        [healthy("ds-r1-engine-build-ccccc")],
    ],
    ids=["unschedulable", "image-pull", "failed-attempt", "running"],
)
def test_unfinished_job_defers_to_its_pods(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> None:
    blocker = job_blocker(job, pods)
    assert blocker == pod_blocker(pods, "engine")
    assert blocker is None or blocker.where == "engine"


def test_unschedulable_build_pod_is_reported_for_the_engine() -> None:
    blocker = job_blocker(make_job(), [pending("ds-r1-engine-build-bbbbb", GPU_MESSAGE)])
    assert blocker is not None
    assert (blocker.reason, blocker.where) == ("Unschedulable", "engine")
    assert GPU_MESSAGE in blocker.message


# --------------------------------------------------------------------------- missing_references

PVC = Reference("PersistentVolumeClaim", "models", "spec.model.source.pvc.claimName", NS)
SECRET = Reference("Secret", "hf-token", "spec.model.source.huggingFace.tokenSecret.name", NS)
CONFIGMAP = Reference("ConfigMap", "triton-config", "spec.serving.configMapName", NS)


@pytest.mark.parametrize(
    ("ref", "reason"),
    [(PVC, "PVCNotFound"), (SECRET, "SecretNotFound"), (CONFIGMAP, "ConfigMapNotFound")],
    ids=["pvc", "secret", "configmap"],
)
def test_missing_reference_names_kind_name_field_and_namespace(ref: Reference, reason: str) -> None:
    blocker = missing_references([ref], {(ref.kind, ref.name): False})
    assert blocker == Blocker(
        reason,
        f'{ref.kind} "{ref.name}" ({ref.field}) does not exist in namespace {ref.namespace}: '
        "create it or fix the field",
        "spec",
    )


@pytest.mark.parametrize(
    "existing",
    [
        {},
        {("PersistentVolumeClaim", "models"): True, ("Secret", "hf-token"): True},
        {("PersistentVolumeClaim", "models"): True},
        {("Secret", "models"): False, ("PersistentVolumeClaim", "hf-token"): False},
    ],
    ids=["all-unknown", "all-exist", "one-exists-one-unknown", "same-names-other-kinds"],
)
def test_existing_or_unknown_references_do_not_block(existing: dict[tuple[str, str], bool]) -> None:
    assert missing_references([PVC, SECRET], existing) is None


def test_several_missing_references_report_the_first_and_count_the_rest() -> None:
    existing = {(r.kind, r.name): False for r in (PVC, SECRET, CONFIGMAP)}
    blocker = missing_references([SECRET, PVC, CONFIGMAP], existing)
    assert blocker is not None
    assert blocker.reason == "SecretNotFound"
    assert blocker.message.startswith(f'Secret "{SECRET.name}" ({SECRET.field})')
    assert "2 more" in blocker.message
    assert f'PersistentVolumeClaim "{PVC.name}"' in blocker.message
    assert f'ConfigMap "{CONFIGMAP.name}"' in blocker.message


def test_missing_reference_order_follows_the_input_and_skips_present_ones() -> None:
    existing = {
        (PVC.kind, PVC.name): True,
        (SECRET.kind, SECRET.name): False,
        (CONFIGMAP.kind, CONFIGMAP.name): False,
    }
    blocker = missing_references([PVC, CONFIGMAP, SECRET], existing)
    assert blocker is not None
    assert blocker.reason == "ConfigMapNotFound"
    assert "1 more" in blocker.message
    assert PVC.field not in blocker.message


def test_one_object_referenced_twice_counts_once() -> None:
    again = Reference("PersistentVolumeClaim", "models", "spec.engine.cache.pvc.claimName", NS)
    blocker = missing_references([PVC, again], {(PVC.kind, PVC.name): False})
    assert blocker is not None
    assert "more" not in blocker.message


# --------------------------------------------------------------------------- first_blocker

_A = Blocker("PVCNotFound", "a", "spec")
_B = Blocker("BuildFailed", "b", "engine")


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [((), None), ((None, None), None), ((None, _A, _B), _A), ((_B, _A), _B), ((_B,), _B)],
    ids=["nothing", "all-none", "skips-none", "first-wins", "single"],
)
def test_first_blocker(candidates: Sequence[Blocker | None], expected: Blocker | None) -> None:
    assert first_blocker(*candidates) is expected


# --------------------------------------------------------------------------- slim_pod

ALL_POD_SETS = [case[1] for case in POD_CASES] + [case[1] for case in NO_BLOCKER_CASES]
ALL_POD_IDS = [case[0] for case in POD_CASES] + [case[0] for case in NO_BLOCKER_CASES]


@pytest.mark.parametrize("pods", ALL_POD_SETS, ids=ALL_POD_IDS)
def test_slim_pods_diagnose_the_same(pods: list[dict[str, Any]]) -> None:
    slim = [slim_pod(pod) for pod in pods]
    assert pod_blocker(slim, "serving") == pod_blocker(pods, "serving")
    for job in (make_job(JOB_FAILED), make_job(), None):
        assert job_blocker(job, slim) == job_blocker(job, pods)


def _keys(value: object) -> set[str]:
    """Every mapping key anywhere inside ``value``."""
    if isinstance(value, Mapping):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _keys(item)}
    return set()


def test_slim_pod_keeps_what_the_loop_reads() -> None:
    pod = deleted(
        make_pod(
            "ds-r1-serving-0",
            statuses=[
                container_status(
                    "triton", ready=True, restarts=2, last_state=terminated(137, "OOMKilled", OOM_LOG)
                )
            ],
            init_statuses=[container_status("fetch-engine", BUILDER, state=terminated(0, "Completed"))],
        )
    )
    slim = slim_pod(pod)
    meta, spec, status = slim["metadata"], slim["spec"], slim["status"]
    assert {
        k: meta[k] for k in ("name", "namespace", "labels", "deletionTimestamp", "creationTimestamp")
    } == {
        k: pod["metadata"][k]
        for k in ("name", "namespace", "labels", "deletionTimestamp", "creationTimestamp")
    }
    assert meta["ownerReferences"] == [{"kind": "StatefulSet", "name": "ds-r1-serving"}]
    assert spec["nodeName"] == pod["spec"]["nodeName"]
    container = pod["spec"]["containers"][0]
    assert spec["containers"] == [
        {
            "name": container["name"],
            "image": container["image"],
            "resources": {
                "requests": container["resources"]["requests"],
                "limits": container["resources"]["limits"],
            },
        }
    ]
    assert spec["initContainers"][0]["name"] == "fetch-engine"
    assert status["phase"] == pod["status"]["phase"]
    assert status["podIP"] == pod["status"]["podIP"]
    assert [c["type"] for c in status["conditions"]] == [c["type"] for c in pod["status"]["conditions"]]
    triton = status["containerStatuses"][0]
    assert (triton["name"], triton["image"], triton["ready"], triton["restartCount"]) == (
        "triton",
        TRITON,
        True,
        2,
    )
    assert set(triton["state"]) == {"running"}
    assert triton["lastState"]["terminated"]["exitCode"] == 137
    assert triton["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert triton["lastState"]["terminated"]["message"] == OOM_LOG.strip().splitlines()[-1]
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_slim_pod_drops_the_rest() -> None:
    pod = make_pod(
        "ds-r1-serving-0",
        statuses=[container_status("triton", ready=True, last_state=terminated(1, "Error", BUILD_LOG))],
    )
    slim = slim_pod(pod)
    dropped = {
        "uid",
        "resourceVersion",
        "annotations",
        "managedFields",
        "apiVersion",
        "controller",
        "volumes",
        "tolerations",
        "env",
        "args",
        "claims",
        "startedAt",
        "finishedAt",
        "containerID",
        "imageID",
        "lastTransitionTime",
        "qosClass",
        "hostIP",
        "podIPs",
    }
    assert _keys(pod) & dropped == dropped  # the fixture really carries them
    assert not _keys(slim) & dropped
    assert len(json.dumps(slim)) < len(json.dumps(pod)) / 2


def test_slim_pod_keeps_absent_fields_absent() -> None:
    assert slim_pod({}) == {}
    assert slim_pod({"metadata": {"name": "p"}}) == {"metadata": {"name": "p"}}


def test_slim_pod_shares_no_mutable_mapping_with_the_input() -> None:
    pod = healthy("ds-r1-serving-0")
    slim = slim_pod(pod)
    slim["metadata"]["labels"]["extra"] = "x"
    slim["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "1"
    assert "extra" not in pod["metadata"]["labels"]
    assert pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "16"


# --------------------------------------------------------------------------- never raises

_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
_any_text = st.one_of(
    st.none(), st.text(max_size=30), st.sampled_from([GPU_MESSAGE, BUILD_LOG, PULL_BACKOFF])
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Either the well-shaped value or anything at all."""
    return st.one_of(strategy, _junk)


def _partial(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A dict holding any subset of ``fields``, each well shaped or junk."""
    return st.fixed_dictionaries({}, optional={key: _maybe(value) for key, value in fields.items()})


_WAITING_REASONS = st.sampled_from(
    [
        "ErrImagePull",
        "ImagePullBackOff",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "ContainerCreating",
    ]
)
_state = _partial(
    waiting=_partial(reason=_WAITING_REASONS, message=_any_text),
    terminated=_partial(
        exitCode=st.integers(-1, 255), reason=st.sampled_from(["Error", "OOMKilled"]), message=_any_text
    ),
    running=_partial(startedAt=_any_text),
)
_container_status = _partial(
    name=st.sampled_from(["triton", "fetch-engine"]),
    image=_any_text,
    ready=st.booleans(),
    restartCount=st.integers(),
    state=_state,
    lastState=_state,
)
_condition = _partial(
    type=st.sampled_from(["PodScheduled", "Ready"]),
    status=st.sampled_from(["True", "False"]),
    reason=st.sampled_from(["Unschedulable", "SchedulingGated"]),
    message=_any_text,
)
_container = _partial(name=st.sampled_from(["triton", "fetch-engine"]), image=_any_text, resources=_junk)
_pod = _partial(
    metadata=_partial(
        name=st.sampled_from(["a", "b"]),
        namespace=_any_text,
        deletionTimestamp=_any_text,
        creationTimestamp=_any_text,
        ownerReferences=st.lists(_partial(kind=_any_text, name=_any_text), max_size=2),
    ),
    spec=_partial(
        containers=st.lists(_container, max_size=2), initContainers=st.lists(_container, max_size=2)
    ),
    status=_partial(
        phase=st.sampled_from(["Pending", "Running", "Failed", "Succeeded"]),
        reason=_any_text,
        message=_any_text,
        conditions=st.lists(_condition, max_size=2),
        containerStatuses=st.lists(_container_status, max_size=2),
        initContainerStatuses=st.lists(_container_status, max_size=2),
    ),
)
_job = st.one_of(
    st.none(),
    _partial(
        metadata=_partial(name=_any_text),
        status=_partial(
            conditions=st.lists(
                _partial(
                    type=st.sampled_from(["Failed", "Complete", "FailureTarget"]),
                    status=st.sampled_from(["True", "False"]),
                    reason=_any_text,
                    message=_any_text,
                ),
                max_size=2,
            )
        ),
    ),
)


@settings(max_examples=300, deadline=None)
@given(pods=st.lists(_pod, max_size=4), where=st.sampled_from(["serving", "engine"]))
def test_pod_blocker_never_raises_and_slimming_changes_nothing(
    pods: list[dict[str, Any]], where: str
) -> None:
    blocker = pod_blocker(pods, where)
    assert blocker is None or (isinstance(blocker, Blocker) and blocker.where == where and blocker.reason)
    assert pod_blocker([slim_pod(pod) for pod in pods], where) == blocker


@settings(max_examples=200, deadline=None)
@given(job=_job, pods=st.lists(_pod, max_size=3))
def test_job_blocker_never_raises_and_slimming_changes_nothing(
    job: dict[str, Any] | None, pods: list[dict[str, Any]]
) -> None:
    blocker = job_blocker(job, pods)
    assert blocker is None or blocker.where == "engine"
    assert job_blocker(job, [slim_pod(pod) for pod in pods]) == blocker
