"""Thin kopf handlers: start and stop the loop, and hand it every DeepSeekDeployment kopf sees.

Importing this module registers the handlers with kopf's default registry. kopf watches the
custom resource; the loop (:mod:`deepseek_operator.reconcile.controller`) watches the children,
pods and nodes itself, with the label selectors that keep those watches small.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from deepseek_operator import metrics
from deepseek_operator.api.constants import GROUP, PLURAL, VERSION
from deepseek_operator.kube import client as kube
from deepseek_operator.kube.watch import WATCH_TIMEOUT_SECONDS
from deepseek_operator.peering import PeeringConfig, PeeringWatch
from deepseek_operator.reconcile.controller import Controller


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Start the loop (its informers list everything first), with kopf kept to watching."""
    # kopf keeps no state on the resources: no finalizer, no progress or diff-base annotations
    # (the loop is level-triggered and keeps what it needs in status), and posts no events.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.enabled = False
    settings.watching.server_timeout = WATCH_TIMEOUT_SECONDS
    settings.watching.client_timeout = WATCH_TIMEOUT_SECONDS + 60
    objects = logging.getLogger("kopf.objects")
    if objects.getEffectiveLevel() >= logging.INFO:
        objects.setLevel(logging.WARNING)  # not a "Handler succeeded" line for every watch event
    kube.reset_api_client()  # $KUBECONFIG is read now, not when a previous run read it
    # `deepseek-operator run` puts the namespaces and the peering in the memo (none: every
    # namespace, standalone).
    peering: PeeringConfig | None = memo.get("peering")
    if peering is not None:
        settings.peering.lifetime = peering.lifetime
    controller = Controller(namespaces=tuple(memo.get("watch_namespaces") or ()), active=peering is None)
    memo["controller"] = controller
    metrics.install(_collector(controller))
    await asyncio.get_running_loop().run_in_executor(None, controller.start)
    if peering is not None:
        # kopf pauses its own watch when another replica works; the loop pauses with it.
        watch = PeeringWatch(peering, lambda on: controller.resume() if on else controller.pause())
        memo["peering_watch"] = watch
        watch.start()


def _collector(controller: Controller) -> metrics.ResourceCollector:
    """The gauges of every resource in ``controller``'s cache (read when Prometheus scrapes)."""
    cache = controller.cache

    def pods(namespace: str, name: str) -> list[dict[str, Any]]:
        return [obj for (kind, _), obj in cache.children((namespace, name)).items() if kind == "Pod"]

    return metrics.ResourceCollector(cache.resources.items, pods, lambda: controller.active)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Stop the loop: the workers finish their pass, the watches close."""
    watch = memo.get("peering_watch")
    if watch is not None:
        await asyncio.get_running_loop().run_in_executor(None, watch.stop)
    controller = memo.get("controller")
    if controller is not None:
        metrics.install(None)
        await asyncio.get_running_loop().run_in_executor(None, controller.stop)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the ServiceAccount; elsewhere the kubeconfig ``$KUBECONFIG`` names at login time.

    (The kubernetes client reads ``$KUBECONFIG`` once, when it is imported; the
    operator reads it when it logs in, so a test or a CLI can set it first.)
    """
    info = kopf.login_with_service_account(**kwargs)
    return info if info is not None else kopf.login_with_kubeconfig(**kwargs)


def _plain(value: Any) -> Any:
    """kopf's body views as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@kopf.on.event(GROUP, VERSION, PLURAL)
async def resource_event(event: Mapping[str, Any], memo: kopf.Memo, **_: Any) -> None:
    """Every version of every DeepSeekDeployment goes to the loop's cache and queue."""
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        controller.resource_event(str(event.get("type") or "ADDED"), _plain(event.get("object")))
