"""Pure diagnosis: name the first thing that blocks a DeepSeekDeployment's progress.

The status conditions (``Ready``, ``EngineReady``, ``Progressing``) must say *why*
nothing moves: a missing PVC, Secret or ConfigMap, a pod the scheduler cannot
place, an image that cannot be pulled, a crash loop, a failed engine build.
This module turns the watched objects into one :class:`Blocker` that names the
object, the cause and the fix.

It is pure: no Kubernetes client, no kopf, no clock, no I/O. Inputs are plain
dicts shaped like the API's JSON (possibly trimmed by :func:`slim_pod`), and
every reader here tolerates missing, ``None`` or wrongly typed fields: a field
that is not what the API would write counts as absent, it never raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deepseek_operator.api.constants import DECRYPTION_CONTAINERS

__all__ = [
    "Blocker",
    "Reference",
    "first_blocker",
    "job_blocker",
    "missing_references",
    "pod_blocker",
    "slim_pod",
]

CRASH_LINE_LIMIT = 200
"""Longest termination-message line quoted for a crash loop."""

BUILD_LINE_LIMIT = 300
"""Longest log line quoted for a failed engine build."""

IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_ERROR_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})

_REFERENCE_REASONS = {
    "PersistentVolumeClaim": "PVCNotFound",
    "Secret": "SecretNotFound",
    "ConfigMap": "ConfigMapNotFound",
}

# What kube-scheduler's VolumeBinding plugin writes into the PodScheduled condition.
_PVC_NOT_FOUND = re.compile(r'persistentvolumeclaim "([^"]+)" not found')
_PVC_DELETING = re.compile(r'persistentvolumeclaim "([^"]+)" is being deleted')
_PVC_UNBOUND = "pod has unbound immediate PersistentVolumeClaims"

# Fields of a container state (waiting / running / terminated) worth keeping.
_STATE_FIELDS = ("reason", "message", "exitCode", "signal")


@dataclass(frozen=True)
class Blocker:
    """The first thing that keeps a deployment from progressing."""

    reason: str  # CamelCase machine reason for a condition, e.g. "PVCNotFound"
    message: str  # one sentence for a human: names the object(s), the cause and the fix
    where: str  # "engine" (the engine build Job), "serving" (the serving pods) or "spec" (referenced objects)


@dataclass(frozen=True)
class Reference:
    """An object the spec names and the deployment cannot do without."""

    kind: str  # "PersistentVolumeClaim" | "Secret" | "ConfigMap"
    name: str
    field: str  # the spec field that names it, e.g. "spec.model.source.pvc.claimName"
    namespace: str


# --------------------------------------------------------------------------- readers


def _map(value: object) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def _maps(value: object) -> list[Mapping[str, Any]]:
    """The mappings in ``value`` if it is a list or tuple, else none."""
    if not isinstance(value, list | tuple):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _text(value: object) -> str:
    """``value`` if it is a string, else ``""``."""
    return value if isinstance(value, str) else ""


def _int(value: object) -> int | None:
    """``value`` if it is an integer (not a bool), else ``None``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _name(obj: Mapping[str, Any]) -> str:
    """The object's ``metadata.name`` (``""`` when absent)."""
    return _text(_map(obj.get("metadata")).get("name"))


def _trim(line: str, limit: int) -> str:
    """``line`` cut to at most ``limit`` characters, marked with "..." when cut."""
    return line if len(line) <= limit else line[: max(limit - 3, 0)] + "..."


def _last_line(text: object, limit: int) -> str:
    """The last non-blank line of ``text``, stripped and trimmed to ``limit`` (``""`` if none)."""
    lines = [line.strip() for line in _text(text).splitlines() if line.strip()]
    return _trim(lines[-1], limit) if lines else ""


def _statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Init container statuses first (they run first), then the containers' statuses."""
    status = _map(pod.get("status"))
    return _maps(status.get("initContainerStatuses")) + _maps(status.get("containerStatuses"))


def _waiting(container_status: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``state.waiting`` of a container status (empty when not waiting)."""
    return _map(_map(container_status.get("state")).get("waiting"))


def _image(pod: Mapping[str, Any], container_status: Mapping[str, Any]) -> str:
    """The image of a container: from its status, else from the pod spec container of the same name."""
    image = _text(container_status.get("image"))
    if image:
        return image
    spec = _map(pod.get("spec"))
    name = container_status.get("name")
    for container in _maps(spec.get("initContainers")) + _maps(spec.get("containers")):
        if container.get("name") == name:
            return _text(container.get("image"))
    return ""


def _exit_summary(terminated: Mapping[str, Any]) -> str:
    """``exit code 137 (OOMKilled)``, ``exit code 1``, ``OOMKilled`` or ``""``."""
    code = _int(terminated.get("exitCode"))
    reason = _text(terminated.get("reason"))
    if code is None:
        return reason
    return f"exit code {code} ({reason})" if reason else f"exit code {code}"


def _live_pods(pods: Iterable[object]) -> list[Mapping[str, Any]]:
    """The pods not being deleted, ordered by name (then namespace) for determinism."""
    live = [
        pod
        for pod in pods
        if isinstance(pod, Mapping) and not _map(pod.get("metadata")).get("deletionTimestamp")
    ]
    return sorted(live, key=lambda pod: (_name(pod), _text(_map(pod.get("metadata")).get("namespace"))))


# --------------------------------------------------------------------------- references


def missing_references(
    spec_refs: Sequence[Reference], existing: Mapping[tuple[str, str], bool]
) -> Blocker | None:
    """The first reference, in the given order, whose object is known not to exist.

    ``existing`` maps ``(kind, name)`` to whether the object exists; a reference
    whose key is missing is unknown and never a blocker. When several distinct
    objects are missing the message names the first and says how many more (and
    which) are missing too. The reason is ``PVCNotFound``, ``SecretNotFound`` or
    ``ConfigMapNotFound`` (``<Kind>NotFound`` for any other kind); ``where`` is
    ``"spec"``. Returns ``None`` when nothing is known to be missing.
    """
    missing: list[Reference] = []
    seen: set[tuple[str, str]] = set()
    for ref in spec_refs:
        key = (ref.kind, ref.name)
        if existing.get(key) is False and key not in seen:
            seen.add(key)
            missing.append(ref)
    if not missing:
        return None
    first, rest = missing[0], missing[1:]
    message = (
        f'{first.kind} "{first.name}" ({first.field}) does not exist in namespace {first.namespace}: '
        "create it or fix the field"
    )
    if rest:
        others = ", ".join(f'{ref.kind} "{ref.name}" ({ref.field})' for ref in rest)
        noun = "reference is" if len(rest) == 1 else "references are"
        message += f"; {len(rest)} more {noun} missing too: {others}"
    return Blocker(_REFERENCE_REASONS.get(first.kind, f"{first.kind}NotFound"), message, "spec")


# --------------------------------------------------------------------------- pod checks


def _image_pull(pod: Mapping[str, Any], where: str) -> Blocker | None:
    """An init or app container that cannot pull its image."""
    for cs in _statuses(pod):
        waiting = _waiting(cs)
        reason = _text(waiting.get("reason"))
        if reason not in IMAGE_PULL_REASONS:
            continue
        detail = _text(waiting.get("message")).strip()
        cause = f"{reason}: {detail}" if detail else reason
        message = (
            f'pod {_name(pod)} container {_text(cs.get("name"))} cannot pull image "{_image(pod, cs)}" '
            f"({cause}): fix the image reference or the registry credentials (imagePullSecrets)"
        )
        return Blocker("ImagePullFailed", message, where)
    return None


def _crash_loop(pod: Mapping[str, Any], where: str) -> Blocker | None:
    """A container the kubelet keeps restarting (``CrashLoopBackOff``)."""
    for cs in _statuses(pod):
        if _waiting(cs).get("reason") != "CrashLoopBackOff":
            continue
        terminated = _map(_map(cs.get("lastState")).get("terminated"))
        restarts = _int(cs.get("restartCount"))
        facts = [
            f"restarted {restarts} time{'' if restarts == 1 else 's'}"
            if restarts is not None
            else "restarting"
        ]
        exit_summary = _exit_summary(terminated)
        if exit_summary:
            facts.append(f"last {exit_summary}")
        line = _last_line(terminated.get("message"), CRASH_LINE_LIMIT)
        if line:
            facts.append(f"last message: {line}")
        fix = (
            "raise its memory limit"
            if terminated.get("reason") == "OOMKilled"
            else "check its logs (kubectl logs --previous)"
        )
        message = (
            f"pod {_name(pod)} container {_text(cs.get('name'))} keeps crashing ({', '.join(facts)}): {fix}"
        )
        return Blocker("CrashLoopBackOff", message, where)
    return None


def _config_error(pod: Mapping[str, Any], where: str) -> Blocker | None:
    """A container the kubelet cannot create or start, e.g. an env var naming a missing Secret key."""
    for cs in _statuses(pod):
        waiting = _waiting(cs)
        reason = _text(waiting.get("reason"))
        if reason not in CONFIG_ERROR_REASONS:
            continue
        detail = _text(waiting.get("message")).strip()
        cause = f"{reason}: {detail}" if detail else reason
        message = (
            f"pod {_name(pod)} container {_text(cs.get('name'))} cannot start ({cause}): "
            "create the missing object or key, or fix the container's configuration"
        )
        return Blocker("ContainerConfigError", message, where)
    return None


def _unschedulable_message(pod: Mapping[str, Any], scheduler_message: str) -> tuple[str, str]:
    """The reason and message for a pod the scheduler cannot place, given what the scheduler said."""
    name = _name(pod)
    namespace = _text(_map(pod.get("metadata")).get("namespace"))
    in_namespace = f" in namespace {namespace}" if namespace else ""
    not_found = _PVC_NOT_FOUND.search(scheduler_message)
    if not_found:
        return "PVCNotFound", (
            f'pod {name} cannot be scheduled because PersistentVolumeClaim "{not_found.group(1)}" '
            f"does not exist{in_namespace}: create it or fix the claim name"
        )
    deleting = _PVC_DELETING.search(scheduler_message)
    if deleting:
        return "PVCNotBound", (
            f'pod {name} cannot be scheduled because PersistentVolumeClaim "{deleting.group(1)}"'
            f"{in_namespace} is being deleted: recreate it once the deletion has finished"
        )
    if _PVC_UNBOUND in scheduler_message:
        return "PVCNotBound", (
            f"pod {name} cannot be scheduled because its PersistentVolumeClaims{in_namespace} are not bound: "
            "check that their StorageClass can provision or bind a volume"
        )
    return "Unschedulable", f"pod {name} cannot be scheduled: {scheduler_message}"


def _unschedulable(pod: Mapping[str, Any], where: str) -> Blocker | None:
    """A pending pod whose ``PodScheduled`` condition says ``Unschedulable``."""
    status = _map(pod.get("status"))
    if status.get("phase") != "Pending":
        return None
    for cond in _maps(status.get("conditions")):
        if (cond.get("type"), cond.get("status"), cond.get("reason")) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        ):
            reason, message = _unschedulable_message(pod, _text(cond.get("message")).strip())
            return Blocker(reason, message, where)
    return None


def _failed_container(pod: Mapping[str, Any], where: str) -> Blocker | None:
    """A container that terminated with a non-zero exit code in a pod in phase ``Failed``.

    A failed pod without such a container (e.g. evicted) is reported with the pod's own
    ``status.reason`` / ``status.message``.
    """
    status = _map(pod.get("status"))
    if status.get("phase") != "Failed":
        return None
    for cs in _statuses(pod):
        terminated = _map(_map(cs.get("state")).get("terminated"))
        if _int(terminated.get("exitCode")) in (None, 0):
            continue
        message = (
            f"pod {_name(pod)} container {_text(cs.get('name'))} failed with {_exit_summary(terminated)}"
        )
        line = _last_line(terminated.get("message"), BUILD_LINE_LIMIT)
        if line:
            message += f"; last log line: {line}"
        return Blocker("PodFailed", message, where)
    reason = _text(status.get("reason")) or "Failed"
    detail = _text(status.get("message")).strip()
    cause = f"{reason}: {detail}" if detail else reason
    return Blocker("PodFailed", f"pod {_name(pod)} failed ({cause})", where)


def _decryption_failed(pod: Mapping[str, Any], where: str) -> Blocker | None:
    """The decrypt init container exited with an error (wrong key, a tampered or truncated chunk,
    a missing manifest, an unknown format version): its last line names the file and chunk."""
    for cs in _maps(_map(pod.get("status")).get("initContainerStatuses")):
        if cs.get("name") not in DECRYPTION_CONTAINERS:
            continue
        for state in (_map(cs.get("state")), _map(cs.get("lastState"))):
            terminated = _map(state.get("terminated"))
            if _int(terminated.get("exitCode")) in (None, 0):
                continue
            line = _last_line(terminated.get("message"), BUILD_LINE_LIMIT)
            message = f"pod {_name(pod)} could not decrypt the model weights ({_exit_summary(terminated)})"
            message += f": {line}" if line else f": see kubectl logs -c {cs.get('name')}"
            message += (
                "; check that spec.model.encryption.keySecret holds the key the checkpoint was encrypted "
                "with and that the encrypted checkpoint on the volume is complete (docs/encryption.md)"
            )
            return Blocker("WeightsDecryptionFailed", message, where)
    return None


_POD_CHECKS: tuple[Callable[[Mapping[str, Any], str], Blocker | None], ...] = (
    _decryption_failed,
    _image_pull,
    _crash_loop,
    _config_error,
    _unschedulable,
    _failed_container,
)


def pod_blocker(pods: Sequence[Mapping[str, Any]], where: str) -> Blocker | None:
    """The first blocker among ``pods``, by priority of the cause, then by pod name.

    Priority over the whole pod set: image pull failures (``ImagePullFailed``), then
    crash loops (``CrashLoopBackOff``), then container creation errors
    (``ContainerConfigError``), then pods the scheduler cannot place
    (``Unschedulable``, or ``PVCNotFound`` / ``PVCNotBound`` when a claim is the
    cause), then failed containers of pods in phase ``Failed`` (``PodFailed``).
    Within one cause the pod first by name wins; within a pod, init containers
    come first. Pods being deleted are ignored. Returns ``None`` when nothing
    blocks (pods running, ready, succeeded, or pending with no verdict yet), and
    never raises on partial or malformed pod dicts. ``where`` is copied into the
    returned blocker.
    """
    live = _live_pods(pods)
    for check in _POD_CHECKS:
        for pod in live:
            blocker = check(pod, where)
            if blocker is not None:
                return blocker
    return None


# --------------------------------------------------------------------------- the engine build Job


def _condition_true(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The object's status condition of type ``kind`` if its status is ``"True"``."""
    for cond in _maps(_map(obj.get("status")).get("conditions")):
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def _failure_line(pod: Mapping[str, Any], limit: int) -> str:
    """The last log line of a failed pod: its failed (non-zero exit) containers first, then any."""
    terminated = [_map(_map(cs.get("state")).get("terminated")) for cs in _statuses(pod)]
    failed = [t for t in terminated if _int(t.get("exitCode")) not in (None, 0)]
    for state in failed + terminated:
        line = _last_line(state.get("message"), limit)
        if line:
            return line
    return ""


def _newest_failure_line(pods: Iterable[object]) -> str:
    """The last log line of the newest failed pod that has one (``""`` when none has)."""
    failed = [
        pod for pod in pods if isinstance(pod, Mapping) and _map(pod.get("status")).get("phase") == "Failed"
    ]
    failed.sort(
        key=lambda pod: (_text(_map(pod.get("metadata")).get("creationTimestamp")), _name(pod)),
        reverse=True,
    )
    for pod in failed:
        line = _failure_line(pod, BUILD_LINE_LIMIT)
        if line:
            return line
    return ""


def job_blocker(job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> Blocker | None:
    """What blocks the engine build Job (``where="engine"``), given the Job and its pods.

    A Job with condition ``Failed`` (or ``FailureTarget``, its precursor) ``True``
    gives ``BuildFailed``: the message names the Job, the condition's reason and
    message, and the last log line of the newest failed pod that has one (trimmed
    to 300 characters). A ``Complete`` Job gives ``None``. Any other Job, or no Job
    yet, gives ``pod_blocker(pods, "engine")``.
    """
    job = _map(job)
    failed = _condition_true(job, "Failed") or _condition_true(job, "FailureTarget")
    if failed is not None:
        for pod in _live_pods(pods):
            if (decryption := _decryption_failed(pod, "engine")) is not None:
                return decryption
        reason = _text(failed.get("reason")) or "Failed"
        detail = _text(failed.get("message")).strip()
        cause = f"{reason}: {detail}" if detail else reason
        message = f"engine build Job {_name(job)} failed ({cause})"
        line = _newest_failure_line(pods)
        if line:
            message += f"; last log line: {line}"
        return Blocker("BuildFailed", message, "engine")
    if _condition_true(job, "Complete") is not None:
        return None
    return pod_blocker(pods, "engine")


def first_blocker(*candidates: Blocker | None) -> Blocker | None:
    """The first candidate that is not ``None`` (``None`` when all are)."""
    return next((candidate for candidate in candidates if candidate is not None), None)


# --------------------------------------------------------------------------- slimming


def _pick(source: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The ``keys`` present in ``source``; mapping values are copied one level deep."""
    return {
        key: dict(source[key]) if isinstance(source[key], Mapping) else source[key]
        for key in keys
        if key in source
    }


def _slim_state(state: object) -> dict[str, Any]:
    """A container state without timestamps and ids; a termination message shrinks to its last line.

    The last non-blank line is all the diagnosis ever reads of a termination
    message, and messages can be 4 KiB each.
    """
    slim: dict[str, Any] = {}
    for phase, detail in _map(state).items():
        if not isinstance(detail, Mapping):
            continue
        kept = _pick(detail, _STATE_FIELDS)
        if phase == "terminated" and "message" in kept:
            kept["message"] = _last_line(kept["message"], len(_text(kept["message"])))
        slim[phase] = kept
    return slim


def _slim_container_status(cs: Mapping[str, Any]) -> dict[str, Any]:
    """A container status with only what the diagnosis reads."""
    slim = _pick(cs, ("name", "image", "ready", "restartCount"))
    for key in ("state", "lastState"):
        if key in cs:
            slim[key] = _slim_state(cs[key])
    return slim


def _slim_container(container: Mapping[str, Any]) -> dict[str, Any]:
    """A pod spec container with only name, image and resource requests/limits."""
    slim = _pick(container, ("name", "image"))
    resources = container.get("resources")
    if isinstance(resources, Mapping):
        slim["resources"] = _pick(resources, ("requests", "limits"))
    return slim


def _slim_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Pod metadata with identity, labels, deletion and ownership only."""
    slim = _pick(metadata, ("name", "namespace", "labels", "deletionTimestamp", "creationTimestamp"))
    if "ownerReferences" in metadata:
        slim["ownerReferences"] = [_pick(ref, ("kind", "name")) for ref in _maps(metadata["ownerReferences"])]
    return slim


def _slim_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """Pod status with phase, IP, conditions and container statuses only."""
    slim = _pick(status, ("phase", "podIP", "reason", "message"))
    if "conditions" in status:
        slim["conditions"] = [
            _pick(cond, ("type", "status", "reason", "message")) for cond in _maps(status["conditions"])
        ]
    for key in ("initContainerStatuses", "containerStatuses"):
        if key in status:
            slim[key] = [_slim_container_status(cs) for cs in _maps(status[key])]
    return slim


def slim_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A small copy of ``pod`` that keeps everything this module and the loop read.

    Kept: metadata name, namespace, labels, deletionTimestamp, creationTimestamp and
    ownerReferences (kind and name); spec nodeName and the (init) containers' name,
    image and resources requests/limits; status phase, podIP, reason, message,
    conditions (type, status, reason, message) and the (init) container statuses'
    name, image, ready, restartCount, state and lastState, the states without
    timestamps or ids and termination messages cut to their last non-blank line.
    ``pod_blocker``, ``job_blocker`` give the same answer for ``slim_pod(p)`` as for
    ``p``. Fields that are absent stay absent; malformed ones are dropped.
    """
    slim: dict[str, Any] = {}
    metadata, spec, status = pod.get("metadata"), pod.get("spec"), pod.get("status")
    if isinstance(metadata, Mapping):
        slim["metadata"] = _slim_metadata(metadata)
    if isinstance(spec, Mapping):
        slim["spec"] = _pick(spec, ("nodeName",))
        for key in ("initContainers", "containers"):
            if key in spec:
                slim["spec"][key] = [_slim_container(c) for c in _maps(spec[key])]
    if isinstance(status, Mapping):
        slim["status"] = _slim_status(status)
    return slim
