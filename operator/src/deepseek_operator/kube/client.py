"""Server-side apply and reads of the objects the operator owns.

Every write goes through :func:`apply` under one field manager; API errors are
mapped onto the operator's exception tree here and nowhere else.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import threading
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from deepseek_operator import metrics
from deepseek_operator.api.clock import format_time
from deepseek_operator.api.constants import (
    API_VERSION,
    FIELD_MANAGER,
    KIND,
    LWS_API_VERSION,
    LWS_KIND,
    LWS_PLURAL,
    PLURAL,
)
from deepseek_operator.errors import (
    GoneError,
    NamespaceTerminatingError,
    OperatorError,
    SpecError,
    TransientError,
)

# (apiVersion, kind) -> plural resource name, for the kinds the operator writes or reads.
_PLURALS: dict[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("v1", "Secret"): "secrets",
    (API_VERSION, KIND): PLURAL,
    ("apps/v1", "Deployment"): "deployments",
    ("apps/v1", "ReplicaSet"): "replicasets",
    ("apps/v1", "ControllerRevision"): "controllerrevisions",
    ("batch/v1", "Job"): "jobs",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    (LWS_API_VERSION, LWS_KIND): LWS_PLURAL,
}


class _Shared:
    """The process-wide API client, made on first use."""

    lock = threading.Lock()
    api: Any = None


def api_client() -> Any:
    """A shared ``kubernetes.client.ApiClient``: in-cluster, else ``$KUBECONFIG`` read now (not at import)."""
    with _Shared.lock:
        if _Shared.api is None:
            cfg = client.Configuration()
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=cfg)
            # Room for every informer's open watch plus the reconcile workers' requests.
            cfg.connection_pool_maxsize = 64  # the watches hold about a dozen; writes run in parallel
            _Shared.api = client.ApiClient(configuration=cfg)
        return _Shared.api


def reset_api_client() -> None:
    """Forget the shared client (a test that points ``$KUBECONFIG`` elsewhere calls this)."""
    with _Shared.lock:
        _Shared.api = None


def resource_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    """The REST path of a namespaced object (or of its collection when ``name`` is None)."""
    plural = _PLURALS.get((api_version, kind))
    if plural is None:
        raise OperatorError(f"the operator does not know how to address {api_version} {kind}")
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


# The NamespaceLifecycle admission plugin refuses new objects in a namespace being deleted with a
# 403 whose cause is "NamespaceTerminating" (k8s.io/api/core/v1 NamespaceTerminatingCause; the
# plugin's message: "unable to create new content in namespace X because it is being terminated").
_NAMESPACE_TERMINATING = "NamespaceTerminating"


def _terminating(e: ApiException) -> bool:
    if e.status != 403 or not e.body:
        return False
    try:
        causes = ((json.loads(e.body) or {}).get("details") or {}).get("causes") or []
    except (ValueError, AttributeError):
        return False
    return any(isinstance(c, dict) and c.get("reason") == _NAMESPACE_TERMINATING for c in causes)


def _map_error(e: ApiException, what: str) -> OperatorError:
    if _terminating(e):
        return NamespaceTerminatingError(f"{what}: the namespace is being deleted")
    if e.status in (409, 429) or (e.status or 0) >= 500:
        return TransientError(f"{what}: HTTP {e.status} {e.reason}; will retry")
    if e.status in {400, 422}:
        return SpecError(f"{what}: the API server refused it: {e.body}")
    return OperatorError(f"{what}: HTTP {e.status} {e.reason}: {e.body}")


def request(
    api: Any,
    method: str,
    path: str,
    query: list[tuple[str, str]] | None = None,
    body: Any = None,
    content_type: str = "application/json",
) -> Any:
    """One REST call with ``api`` (an ApiClient): the decoded JSON answer; ApiException on failure."""
    # The REST layer serializes JSON bodies itself; other content types (apply-patch+yaml) go as text.
    data = json.dumps(body) if body is not None and "json" not in content_type else body
    method_, url, headers, body_, post = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=query or [],
        body=data,
        header_params={"Content-Type": content_type, "Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    resp = api.call_api(method_, url, header_params=headers, body=body_, post_params=post)
    raw = resp.read()
    if not 200 <= resp.status < 300:
        metrics.api_error(resp.status, method)
        raise ApiException(http_resp=resp, body=raw.decode(errors="replace") if raw else None)
    return json.loads(raw) if raw else None


def _call(
    method: str,
    path: str,
    what: str,
    body: Any = None,
    query: list[tuple[str, str]] | None = None,
    content_type: str = "application/json",
    missing_is_gone: bool = False,
) -> Any:
    """``request`` with the operator's errors; ``missing_is_gone``: a 404 is :class:`GoneError`
    (the object was deleted since it was read; its deletion's watch event follows)."""
    try:
        return request(api_client(), method, path, query, body, content_type)
    except ApiException as e:
        if missing_is_gone and e.status == 404:
            raise GoneError(f"{what}: the resource is gone") from e
        raise _map_error(e, what) from e


def apply(obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply ``obj`` under the operator's field manager; returns the object as stored.

    Applying what is already there changes nothing on the server (no new resourceVersion).
    """
    meta = obj["metadata"]
    what = f"apply {obj['kind']} {meta['namespace']}/{meta['name']}"
    path = resource_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
    result = _call(
        "PATCH",
        path,
        what,
        body=obj,
        query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        content_type="application/apply-patch+yaml",
    )
    assert isinstance(result, dict)
    return result


def server_side_apply(api: Any, doc: dict[str, Any], field_manager: str, namespace: str | None = None) -> Any:
    """Server-side apply ``doc`` with ``api`` under ``field_manager`` (as ``kubectl apply --server-side``
    does), into ``namespace`` when it is namespaced; CustomResourceDefinitions are cluster-scoped."""
    doc = copy.deepcopy(doc)
    name = doc["metadata"]["name"]
    if doc["kind"] == "CustomResourceDefinition":
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
    else:
        ns = namespace or doc["metadata"].get("namespace")
        if not ns:
            raise OperatorError(f"{doc['kind']} {name}: give a namespace")
        doc["metadata"]["namespace"] = ns
        path = resource_path(doc["apiVersion"], doc["kind"], ns, name)
    return request(
        api,
        "PATCH",
        path,
        query=[("fieldManager", field_manager), ("force", "true")],
        body=doc,
        content_type="application/apply-patch+yaml",
    )


def get(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""
    try:
        result = request(api_client(), "GET", resource_path(api_version, kind, namespace, name))
    except ApiException as e:
        if e.status == 404:
            return None
        raise _map_error(e, f"get {kind} {namespace}/{name}") from e
    assert isinstance(result, dict)
    return result


def list_owned(api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
    """Objects of a kind in a namespace matching a label selector."""
    result = _call(
        "GET",
        resource_path(api_version, kind, namespace),
        f"list {kind} in {namespace}",
        query=[("labelSelector", label_selector)],
    )
    items = result.get("items", []) if isinstance(result, dict) else []
    return list(items)


def delete(api_version: str, kind: str, namespace: str, name: str) -> None:
    """Delete an object (background propagation); a missing one is fine."""
    try:
        request(
            api_client(),
            "DELETE",
            resource_path(api_version, kind, namespace, name),
            body={"propagationPolicy": "Background"},
        )
    except ApiException as e:
        if e.status != 404:
            raise _map_error(e, f"delete {kind} {namespace}/{name}") from e


# Replica counts are written under their own field manager and never in the object's main apply:
# a count the main manager stopped sending would be reset, and an HPA that owns the count of the
# stable revision must be able to keep it while the operator keeps applying everything else.
SCALE_FIELD_MANAGER = f"{FIELD_MANAGER}-scale"


def apply_scale(api_version: str, kind: str, namespace: str, name: str, replicas: int) -> dict[str, Any]:
    """Set ``spec.replicas`` of a workload under the scale field manager (no write when equal);
    returns the workload as stored."""
    obj = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas},
    }
    result = _call(
        "PATCH",
        resource_path(api_version, kind, namespace, name),
        f"scale {kind} {namespace}/{name} to {replicas}",
        body=obj,
        query=[("fieldManager", SCALE_FIELD_MANAGER), ("force", "true")],
        content_type="application/apply-patch+yaml",
    )
    return result if isinstance(result, dict) else {}


def patch_status(body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """Merge ``status`` into the DeepSeekDeployment's status, only if it is unchanged since ``body``
    was read (its resourceVersion): a decision made on stale facts is refused with a
    :class:`TransientError` instead of overwriting a newer one."""
    meta = body["metadata"]
    patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
    result = _call(
        "PATCH",
        resource_path(API_VERSION, KIND, meta["namespace"], meta["name"]) + "/status",
        f"patch status of {meta['namespace']}/{meta['name']}",
        body=patch,
        content_type="application/merge-patch+json",
        missing_is_gone=True,
    )
    assert isinstance(result, dict)
    return result


def patch_labels(
    api_version: str, kind: str, namespace: str, name: str, labels: dict[str, Any]
) -> dict[str, Any] | None:
    """Merge ``labels`` into an object's labels (a None value removes the label); returns the object
    as stored, or None when it is gone meanwhile (that is fine)."""
    try:
        result = request(
            api_client(),
            "PATCH",
            resource_path(api_version, kind, namespace, name),
            body={"metadata": {"labels": labels}},
            content_type="application/merge-patch+json",
        )
    except ApiException as e:
        if e.status != 404:
            raise _map_error(e, f"label {kind} {namespace}/{name}") from e
        return None
    return result if isinstance(result, dict) else None


_log = logging.getLogger(__name__)


def post_event(body: dict[str, Any], kind: str, reason: str, message: str) -> None:
    """Post a core/v1 Event about the DeepSeekDeployment ``body``; never raises.

    Events are posted here, one request each, rather than through kopf's queue: that queue
    retries an event it cannot post (e.g. into a namespace being deleted) with growing delays,
    and every event behind it, such as a rollback's, waits.
    """
    meta = body["metadata"]
    now = format_time(dt.datetime.now(dt.UTC))
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}-", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": FIELD_MANAGER},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        request(api_client(), "POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=event)
    except ApiException as e:
        if _terminating(e):  # the namespace, the resource and its events are going
            _log.debug("event %s for %s/%s not posted: the namespace is being deleted", reason, *_at(meta))
        else:
            _log.warning("event %s for %s/%s not posted: %s", reason, *_at(meta), _map_error(e, "post"))
    except Exception as e:  # an event is worth one try; it must never break a reconcile
        _log.warning("event %s for %s/%s not posted: %s", reason, *_at(meta), e)


def _at(meta: dict[str, Any]) -> tuple[str, str]:
    return str(meta["namespace"]), str(meta["name"])
