"""A work queue of resource keys, as client-go's: a key waits once however often it is added, is
never handled by two workers at once, and may be added for later (``delay``)."""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """Keys to handle, deduplicated; :meth:`get` blocks until one is ready or the queue shuts down."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._ready: deque[K] = deque()
        self._dirty: set[K] = set()  # waiting in _ready, or to be handled again after processing
        self._processing: set[K] = set()
        self._later: list[tuple[float, int, K]] = []  # (when, tie-breaker, key)
        self._seq = 0
        self._closed = False

    def add(self, key: K, delay: float = 0.0) -> None:
        """Handle ``key`` (after ``delay`` seconds)."""
        with self._cond:
            if self._closed:
                return
            if delay > 0:
                self._seq += 1
                heapq.heappush(self._later, (time.monotonic() + delay, self._seq, key))
                self._cond.notify()
                return
            self._add_now(key)

    def _add_now(self, key: K) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._ready.append(key)
            self._cond.notify()

    def _promote_due(self) -> float | None:
        now = time.monotonic()
        while self._later and self._later[0][0] <= now:
            _, _, key = heapq.heappop(self._later)
            self._add_now(key)
        return self._later[0][0] - now if self._later else None

    def get(self) -> K | None:
        """The next key to handle (the caller must call :meth:`done`); None once shut down."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                wait = self._promote_due()
                if self._ready:
                    key = self._ready.popleft()
                    self._dirty.discard(key)
                    self._processing.add(key)
                    return key
                self._cond.wait(wait)

    def done(self, key: K) -> None:
        """``key`` is handled; if it was added meanwhile it is ready again."""
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._ready.append(key)
                self._cond.notify()

    def pending(self, key: K) -> bool:
        """Whether ``key`` was added again while it is being handled."""
        with self._cond:
            return key in self._dirty

    def shutdown(self) -> None:
        """Wake every waiting :meth:`get` with None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._ready)


class ProgressHold(Generic[K]):
    """Progress-only status writes of a key wait a short ``window`` from the first one held, so
    that a burst of child changes (a pod created, scheduled, running, ready in a few tens of
    milliseconds) is one status write, and a pass that decides something is never queued behind a
    write that only reports. A pass that decides, or finds nothing to write, releases the key.

    Callers pass ``now`` (a monotonic clock); nothing here reads a clock.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._since: dict[K, float] = {}
        self._lock = threading.Lock()

    def hold(self, key: K, now: float) -> float | None:
        """Seconds to wait before ``key``'s progress write (then come back), or None: write now."""
        with self._lock:
            left = self._since.setdefault(key, now) + self.window - now
        return left if left > 0 else None

    def release(self, key: K) -> None:
        """``key`` wrote, or had nothing to write: the next progress write waits again."""
        with self._lock:
            self._since.pop(key, None)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._since
