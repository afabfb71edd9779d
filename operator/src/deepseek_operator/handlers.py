"""Thin kopf handlers: take the body, hand it to the reconciler, report.

Importing this module registers the handlers with kopf's default registry.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import kopf

from deepseek_operator import status as status_logic
from deepseek_operator.api.constants import COND_READY, GROUP, KOPF_PREFIX, PLURAL, VERSION

EVENT_REASON_RECONCILED = "Reconciled"


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


def reconcile(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger) -> None:
    """Record what this version of the operator decides about the resource in its status."""
    generation = body.metadata.get("generation")
    current = dict(body.get("status", {}) or {})
    wanted = {
        "observedGeneration": generation,
        "phase": "Pending",
        "conditions": status_logic.merge_conditions(
            current.get("conditions", []) or [],
            [
                status_logic.Condition(
                    type=COND_READY,
                    status="False",
                    reason="NotServing",
                    message=(
                        f"spec accepted at generation {generation}; this operator version records "
                        "status only and does not create the serving stack yet"
                    ),
                )
            ],
            generation,
            _now(),
        ),
    }
    changes = status_logic.status_patch(current, wanted)
    if changes:
        patch.status.update(changes)
        kopf.info(body, reason=EVENT_REASON_RECONCILED, message=f"observed generation {generation}")
        logger.info("status updated for generation %s", generation)


@kopf.on.create(GROUP, VERSION, PLURAL)
def on_create(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    """A new DeepSeekDeployment."""
    reconcile(body, patch, logger)


@kopf.on.update(GROUP, VERSION, PLURAL)
def on_update(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    """A changed DeepSeekDeployment (spec, labels or annotations)."""
    reconcile(body, patch, logger)


@kopf.on.resume(GROUP, VERSION, PLURAL)
def on_resume(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    """A DeepSeekDeployment that existed when the operator started."""
    reconcile(body, patch, logger)
