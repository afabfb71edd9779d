"""Which replica works: kopf's peering rule, applied to the loop as well.

kopf pauses its own watch of DeepSeekDeployments when its peering object shows another live
replica with a higher (or the same) priority, and resumes when none is left. The loop
(:class:`~deepseek_operator.reconcile.controller.Controller`) has informers and workers of its
own that kopf does not know about, so :class:`PeeringWatch` follows the same peering objects
and applies the same rule (:func:`paused`), pausing and resuming the Controller with kopf.
A paused replica keeps its caches current, so that it takes over without listing anything.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from deepseek_operator.kube.watch import Informer, Source

log = logging.getLogger(__name__)

KOPF_DEFAULT_LIFETIME = 60  # what kopf assumes for a peer that does not say (kopf's Peer)
_RECHECK_SECONDS = 1.0  # a peer's deadline passing changes nothing on the server: look again


@dataclass(frozen=True)
class PeeringConfig:
    """The replica's place in kopf's peering: the object's name, its own identity (the key kopf
    writes under the object's status), its priority and its lifetime in seconds."""

    name: str
    identity: str
    priority: int
    lifetime: int
    namespaces: tuple[str, ...] = ()  # empty: the ClusterKopfPeering; else a KopfPeering in each


def auto_priority(now_ms: int, tiebreak: int) -> int:
    """A priority that makes the replica that started first win (it keeps working while a new
    one starts, as in a rolling update) and that two replicas practically never share (kopf
    pauses every replica of the same priority): ``tiebreak`` is a random number below 1000."""
    return (10**13 - now_ms) * 1000 + tiebreak % 1000


def _lastseen(info: Mapping[str, Any], now: dt.datetime) -> dt.datetime:
    raw = info.get("lastseen")
    if not raw:
        return now  # kopf reads a peer that did not say as seen just now
    seen = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    return seen if seen.tzinfo else seen.replace(tzinfo=dt.UTC)


def paused(status: Mapping[str, Any] | None, identity: str, priority: int, now: dt.datetime) -> bool:
    """kopf's rule: pause while the peering object is missing (``None``), or while it shows
    another peer, not yet dead (last seen + lifetime is still ahead), whose priority is higher
    than ``priority`` or equal to it."""
    if status is None:
        return True
    for peer, info in status.items():
        if peer == identity or not isinstance(info, Mapping):
            continue
        lifetime = dt.timedelta(seconds=int(info.get("lifetime", KOPF_DEFAULT_LIFETIME)))
        if _lastseen(info, now) + lifetime <= now:
            continue  # dead
        if int(info.get("priority", 0)) >= priority:
            return True
    return False


def _slim_peering(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {
        "metadata": {k: meta[k] for k in ("name", "namespace", "resourceVersion") if k in meta},
        "status": dict(obj.get("status") or {}),
    }


class PeeringWatch:
    """Follows the peering object(s) and calls ``on_active(True|False)`` when the rule's answer
    changes (the first answer included). It starts paused, as kopf does with mandatory peering."""

    def __init__(self, config: PeeringConfig, on_active: Callable[[bool], None]) -> None:
        self.config = config
        self._on_active = on_active
        self._active: bool | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if config.namespaces:
            source = Source("KopfPeering", "/apis/kopf.dev/v1/kopfpeerings", namespaces=config.namespaces)
        else:
            source = Source("ClusterKopfPeering", "/apis/kopf.dev/v1/clusterkopfpeerings")
        self._informer = Informer(source, _slim_peering, self._changed)
        self._thread = threading.Thread(target=self._recheck, name="peering", daemon=True)

    def start(self) -> None:
        """Start following the peering objects."""
        self._informer.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop following them."""
        self._stop.set()
        self._informer.stop()
        self._informer.join(1.0)
        self._thread.join(2.0)

    def _changed(self, *_: object) -> None:
        self.evaluate()

    def evaluate(self, now: dt.datetime | None = None) -> bool:
        """Apply the rule to what is stored now; returns whether this replica is active."""
        if not self._informer.synced.is_set():
            return False
        now = now or dt.datetime.now(dt.UTC)
        c = self.config
        scopes = c.namespaces or ("",)
        active = not any(
            paused(
                None if (obj := self._informer.store.get(ns, c.name)) is None else obj["status"],
                c.identity,
                c.priority,
                now,
            )
            for ns in scopes
        )
        with self._lock:
            changed = active != self._active
            self._active = active
        if changed:
            log.info("peering %s: %s", c.name, "active" if active else "paused (another replica works)")
            self._on_active(active)
        return active

    def _recheck(self) -> None:
        while not self._stop.wait(_RECHECK_SECONDS):
            try:
                self.evaluate()
            except Exception:  # a malformed peering object: say it, keep the last answer
                log.exception("peering %s: cannot evaluate", self.config.name)
