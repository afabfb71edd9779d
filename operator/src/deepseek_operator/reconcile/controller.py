"""The loop: watch caches feed a work queue; workers take a resource and make one pass of
gather -> decide -> write. Nothing polls: a pass runs when the resource or one of its children
changes, when GPUs free up for a resource waiting on them, or when its next analysis is due.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from deepseek_operator import metrics
from deepseek_operator.api.spec import DeploymentSpec
from deepseek_operator.errors import GoneError, OperatorError, TransientError
from deepseek_operator.kube import client as kube
from deepseek_operator.planning.types import Plan
from deepseek_operator.reconcile import decide as decider
from deepseek_operator.reconcile import revision as rv
from deepseek_operator.reconcile import spec_step as sp
from deepseek_operator.reconcile.cache import Cache, Owner
from deepseek_operator.reconcile.facts import Facts, Writes
from deepseek_operator.reconcile.gather import gather
from deepseek_operator.reconcile.queue import ProgressHold, WorkQueue
from deepseek_operator.reconcile.workloads import revision_objects
from deepseek_operator.reconcile.write import execute

log = logging.getLogger(__name__)

WORKERS = 8  # passes wait on the API server most of the time: more of them overlap
TRANSIENT_REPORT_DELAY = 6.4  # a "passing" fault still there after five retries is said in an event
SYNC_TIMEOUT_SECONDS = 60.0
# A write that only reports the children's progress (no decision, no event) waits this long from
# the first one held: the pod steps that follow within it make one write, not one each.
PROGRESS_HOLD_SECONDS = 0.2
_MEMO_SIZE = 4096
Built = tuple[DeploymentSpec, Plan, list[dict[str, Any]]]


class Controller:
    """The operator's loop for every DeepSeekDeployment it sees."""

    def __init__(self, workers: int = WORKERS, namespaces: tuple[str, ...] = (), active: bool = True) -> None:
        """``namespaces``: watch only these (empty: every namespace). ``active``: False starts it
        paused (a replica that waits for peering to pick it): informers run, no pass does."""
        self.queue: WorkQueue[Owner] = WorkQueue()
        self.cache = Cache(
            on_owner=self.queue.add,
            on_capacity=self._wake_waiting,
            on_references=self._wake_referring,
            namespaces=namespaces,
            on_metrics_api=self._wake_autoscaling,
        )
        self._active = threading.Event()
        if active:
            self._active.set()
        self._parked: set[Owner] = set()  # taken while paused: passed on resuming
        self._workers = workers
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._placing = threading.Lock()  # placements are made one after the other
        self._ran_at: dict[Owner, dt.datetime] = {}  # analyses that ran and were not written
        self._waiting: set[Owner] = set()  # resources waiting for free GPUs
        self._errors: dict[Owner, str] = {}  # the last error said in an event, per resource
        self._failures: dict[Owner, int] = {}  # consecutive failed passes, for the backoff
        # Resources (by uid) found deleted, or refused by their namespace being deleted: no
        # more passes for them (every one would be refused again) until they are gone.
        self._going: dict[Owner, str] = {}
        self._held: ProgressHold[Owner] = ProgressHold(PROGRESS_HOLD_SECONDS)
        self._built: OrderedDict[tuple[Any, ...], tuple[DeploymentSpec, Plan, bytes]] = OrderedDict()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the informers, wait until they have listed, then start the workers."""
        self.cache.start()
        late = self.cache.wait_synced(SYNC_TIMEOUT_SECONDS)
        if late:
            log.warning("not listed after %.0f s: %s; starting anyway", SYNC_TIMEOUT_SECONDS, ", ".join(late))
        for i in range(self._workers):
            t = threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop the workers (after their current pass) and the informers."""
        self.queue.shutdown()
        for t in self._threads:
            t.join(10.0)
        self.cache.stop()

    def pause(self) -> None:
        """Stop making passes (another replica works): a pass under way finishes, the keys that
        come up wait, the caches stay current for a fast take-over."""
        if self._active.is_set():
            self._active.clear()
            log.info("paused: another replica of the operator is active")

    def resume(self) -> None:
        """Make passes again, first for every resource known and every key that waited."""
        with self._lock:  # with _parked_while_paused: no key is parked after this
            if self._active.is_set():
                return
            self._active.set()
            parked, self._parked = self._parked, set()
        for body in self.cache.resources.items():
            meta = body.get("metadata") or {}
            parked.add((str(meta.get("namespace")), str(meta.get("name"))))
        log.info("active: reconciling %d resource(s)", len(parked))
        for owner in parked:
            self.queue.add(owner)

    @property
    def active(self) -> bool:
        """Whether this replica makes passes (False while another replica works)."""
        return self._active.is_set()

    # --- inputs --------------------------------------------------------------------------------

    def resource_event(self, event: str, body: dict[str, Any]) -> None:
        """A DeepSeekDeployment was added, changed or deleted (from kopf's watch)."""
        meta = body.get("metadata") or {}
        owner = (str(meta.get("namespace")), str(meta.get("name")))
        if event == "DELETED":
            self.cache.resource_changed(event, body)
            self._forget(owner)
            return
        if self.cache.resource_changed(event, body):
            self.queue.add(owner)

    def _wake_waiting(self) -> None:
        with self._lock:
            waiting = list(self._waiting)
        for owner in waiting:
            self.queue.add(owner)

    def _wake_referring(self) -> None:
        """A PVC appeared: the resources whose status says they wait for one look again."""
        for body in self.cache.resources.items():
            if sp.waits_on_references(body):
                meta = body.get("metadata") or {}
                self.queue.add((str(meta.get("namespace")), str(meta.get("name"))))

    def _wake_autoscaling(self) -> None:
        """The custom metrics APIService changed: the resources with an HPA say so in their status."""
        for body in self.cache.resources.items():
            if (body.get("spec") or {}).get("autoscaling") is not None:
                meta = body.get("metadata") or {}
                self.queue.add((str(meta.get("namespace")), str(meta.get("name"))))

    def _forget(self, owner: Owner) -> None:
        self.cache.capacity.forget(owner)
        self._held.release(owner)
        metrics.forget(*owner)
        with self._lock:
            self._ran_at.pop(owner, None)
            self._waiting.discard(owner)
            self._errors.pop(owner, None)
            self._failures.pop(owner, None)
            self._going.pop(owner, None)

    # --- one pass ------------------------------------------------------------------------------

    def _build(self, body: Mapping[str, Any], revision: str, records: rv.Records) -> Built:
        """:func:`revision_objects`, memoised on what it depends on."""
        meta = body["metadata"]
        record = records.get(revision) or {}
        key = (
            meta.get("uid"),
            meta.get("generation"),
            revision,
            (record.get("metadata") or {}).get("resourceVersion"),
        )
        with self._lock:
            hit = self._built.get(key)
            if hit is not None:
                self._built.move_to_end(key)
        if hit is not None:
            spec, plan, packed = hit
            return spec, plan, json.loads(zlib.decompress(packed))
        built = revision_objects(body, revision, records)
        # Kept compressed: a revision's objects are some 40 KiB as Python dicts, a few as zlib'd
        # JSON, and a thousand resources keep a thousand of them.
        packed = zlib.compress(json.dumps(built[2], separators=(",", ":")).encode(), 1)
        with self._lock:
            self._built[key] = (built[0], built[1], packed)
            while len(self._built) > _MEMO_SIZE:
                self._built.popitem(last=False)
        return built

    def sync(self, owner: Owner) -> float | None:
        """One pass for ``owner``: gather, decide, write. Returns when to come back (seconds)."""
        now = dt.datetime.now(dt.UTC)
        t0 = time.perf_counter()
        with self._lock:
            ran_at = self._ran_at.get(owner)
        facts = gather(self.cache, owner, now, ran_at)
        if facts is None:
            self._forget(owner)
            return None
        t1 = time.perf_counter()
        if sp.needs_spec_step(facts.body):
            writes = self._place(owner, facts)
        else:
            writes = decider.decide(facts, self._build)
        t2 = time.perf_counter()
        if writes.only_progress():
            if self.queue.pending(owner):
                return None  # a child changed meanwhile: the pass about to run writes the newer status
            if (wait := self._held.hold(owner, time.monotonic())) is not None:
                return wait  # more progress may follow: one write for all of it
        self._held.release(owner)
        execute(self.cache, facts.body, writes)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s/%s: gather %.1f ms, decide %.1f ms, write %.1f ms (%d records, %d events, status %s, "
                "%d objects)",
                *owner,
                (t1 - t0) * 1e3,
                (t2 - t1) * 1e3,
                (time.perf_counter() - t2) * 1e3,
                len(writes.records),
                len(writes.events),
                ",".join(sorted(writes.status)) or "-",
                len(writes.apply),
            )
        with self._lock:
            if writes.analysis_ran_at is not None:
                self._ran_at[owner] = writes.analysis_ran_at
            elif "analysis" in writes.status:
                self._ran_at.pop(owner, None)
            if writes.waiting_for_capacity:
                self._waiting.add(owner)
            else:
                self._waiting.discard(owner)
        return writes.requeue_after

    def _place(self, owner: Owner, facts: Facts) -> Writes:
        """A pass that places: one at a time, each against the GPUs the ones before it claimed."""
        with self._placing:
            capacity = self.cache.capacity
            facts = replace(facts, inventory=capacity.inventory(owner, time.monotonic()))
            writes = decider.decide(facts, self._build)
            if writes.claim is not None:
                capacity.claim(owner, writes.claim, time.monotonic())
        return writes

    def _parked_while_paused(self, owner: Owner) -> bool:
        with self._lock:
            if self._active.is_set():
                return False
            self._parked.add(owner)
            return True

    def _work(self) -> None:
        while (owner := self.queue.get()) is not None:
            try:
                if self._parked_while_paused(owner):
                    continue
                again = self._sync_reporting(owner)
                if again is not None:
                    self.queue.add(owner, again)
            finally:
                self.queue.done(owner)

    def _sync_reporting(self, owner: Owner) -> float | None:
        """:meth:`sync`, with failures retried with backoff and said once in an event."""
        if self._going_away(owner):
            return None
        try:
            with metrics.timed_pass():
                again = self.sync(owner)
        except GoneError as e:
            # Deleted since it was read, or its namespace is being deleted (the resource with it);
            # the deletion's watch event ends it here. Nothing to say (no event can be posted
            # there) and nothing to retry.
            log.debug("%s/%s: %s; no more passes for it", *owner, e)
            body = self.cache.resource(owner)
            if body is not None:
                with self._lock:
                    self._going[owner] = _uid(body)
            return None
        except TransientError as e:
            # A newer version exists, or the API server is busy: said only when it repeats.
            delay = self._backoff(owner, 0.2)
            if delay >= TRANSIENT_REPORT_DELAY:
                self._report(owner, f"{e} (again in {delay:.0f} s)")  # it does not pass: say so
            else:
                log.debug("%s/%s: %s; again in %.1f s", *owner, e, delay)
            return delay
        except OperatorError as e:
            self._report(owner, str(e))
            return self._backoff(owner, 2.0)
        except Exception as e:
            log.exception("%s/%s: the pass failed", *owner)
            self._report(owner, f"internal error: {e!r}")
            return self._backoff(owner, 2.0)
        with self._lock:
            self._failures.pop(owner, None)
            self._errors.pop(owner, None)
        return again

    def _going_away(self, owner: Owner) -> bool:
        """Whether ``owner``, as cached now, was found gone or going with its namespace."""
        with self._lock:
            refused = self._going.get(owner)
        if refused is None:
            return False
        body = self.cache.resource(owner)
        return body is not None and _uid(body) == refused

    def _backoff(self, owner: Owner, base: float) -> float:
        with self._lock:
            n = self._failures.get(owner, 0)
            self._failures[owner] = n + 1
        return float(min(base * 2**n, 60.0))

    def _report(self, owner: Owner, message: str) -> None:
        with self._lock:
            if self._errors.get(owner) == message:
                return
            self._errors[owner] = message
        body = self.cache.resource(owner)
        log.warning("%s/%s: %s", *owner, message)
        if body is not None:
            kube.post_event(dict(body), "Warning", "ReconcileError", message)


def _uid(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("uid") or "")
