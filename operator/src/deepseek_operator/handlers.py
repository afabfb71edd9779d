"""Thin kopf handlers: take the body, hand it to the reconciler, report.

Importing this module registers the handlers with kopf's default registry.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from deepseek_operator import reconcile as reconciler
from deepseek_operator.api.constants import GROUP, KOPF_PREFIX, PLURAL, VERSION
from deepseek_operator.errors import OperatorError, TransientError
from deepseek_operator.kube import client as kube

STATUS_INTERVAL_SECONDS = 5.0  # how often the children are followed into status
# How often an analysis may start (its own interval is at least 1 s). Most ticks only compare
# a time in memory; the observation runs every STATUS_INTERVAL_SECONDS.
TICK_SECONDS = 0.5


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Operator-wide settings: bookkeeping in our own annotations, bounded watches."""
    # kopf's bookkeeping goes to annotations under our group, never to spec and
    # never to a status field the CRD schema would prune.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Re-list now and then so that a silently dropped watch cannot stall us.
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    settings.posting.level = logging.INFO


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the ServiceAccount; elsewhere the kubeconfig ``$KUBECONFIG`` names at login time.

    (The kubernetes client reads ``$KUBECONFIG`` once, when it is imported; the
    operator reads it when it logs in, so a test or a CLI can set it first.)
    """
    info = kopf.login_with_service_account(**kwargs)
    return info if info is not None else kopf.login_with_kubeconfig(**kwargs)


def _post(body: kopf.Body, events: list[tuple[str, str, str]]) -> None:
    plain = _plain(body)
    for kind, reason, message in events:
        kube.post_event(plain, kind, reason, message)


def _plain(value: Any) -> Any:
    """kopf's body views as plain dicts and lists (they are written back to the API as JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _write(outcome: reconciler.Outcome) -> None:
    if outcome.status:
        kube.patch_status(outcome.body, outcome.status)


def _reconcile(body: kopf.Body, logger: kopf.Logger) -> None:
    try:
        outcome = reconciler.reconcile(_plain(body), _now())
    except TransientError as e:
        raise kopf.TemporaryError(str(e), delay=2) from e
    except OperatorError as e:
        # Not the user's spec and not passing: say so, and retry slowly rather than crash-loop.
        _post(body, [("Warning", "ReconcileError", str(e))])
        raise kopf.TemporaryError(str(e), delay=60) from e
    # What the reconcile did to the rollout is already written; its events are posted even when
    # the final status write loses a race (the retry then writes the status, not the events).
    _post(body, outcome.events)
    try:
        _write(outcome)
    except TransientError as e:
        raise kopf.TemporaryError(str(e), delay=2) from e
    if outcome.status:
        logger.info("status: %s", ", ".join(sorted(outcome.status)))


@kopf.on.create(GROUP, VERSION, PLURAL)
def on_create(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """A new DeepSeekDeployment."""
    _reconcile(body, logger)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def on_update(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """A changed spec."""
    _reconcile(body, logger)


@kopf.on.resume(GROUP, VERSION, PLURAL)
def on_resume(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """A DeepSeekDeployment that existed when the operator started."""
    _reconcile(body, logger)


_last_observed: dict[str, float] = {}
_last_error: dict[str, str] = {}


@kopf.timer(GROUP, VERSION, PLURAL, interval=TICK_SECONDS, initial_delay=2.0, sharp=True)
def tick(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Analysis when its interval is due (with the promotion or rollback it leads to), and every
    few seconds the children followed into status; writes only on change."""
    uid = str(body.get("metadata", {}).get("uid"))
    now = time.monotonic()
    observe = now - _last_observed.get(uid, 0.0) >= STATUS_INTERVAL_SECONDS
    try:
        outcome = reconciler.tick(_plain(body), dt.datetime.now(dt.UTC), analysis_only=not observe)
    except TransientError as e:
        logger.debug("tick: %s", e)  # a newer version of the resource exists; the next tick uses it
        return
    except OperatorError as e:
        # Said once per distinct error, not at every tick.
        if _last_error.get(uid) != str(e):
            _last_error[uid] = str(e)
            _post(body, [("Warning", "TickError", str(e))])
        return
    _last_error.pop(uid, None)
    # Decisions are written inside the tick; their events go out even if the status that follows
    # them loses a race with another write (the next tick writes it again).
    _post(body, outcome.events)
    try:
        _write(outcome)
    except TransientError as e:
        logger.debug("tick: %s", e)
        return
    if observe:
        _last_observed[uid] = now


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def on_delete(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Deletion: the garbage collector removes every owned child (owner references); nothing to block."""
    _last_observed.pop(str(body.get("metadata", {}).get("uid")), None)
    _last_error.pop(str(body.get("metadata", {}).get("uid")), None)
    logger.info("deleted; owned objects are removed by the garbage collector")
