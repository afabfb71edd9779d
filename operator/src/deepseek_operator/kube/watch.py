"""Informers: list once, then follow a watch, keeping a slim copy of every object in memory.

One thread per kind. Each list replaces the kind's store as a whole (so an object deleted while
no watch ran does not linger); each watch starts from the list's resourceVersion, asks for
bookmarks so that it can resume without a new list, and ends after ``timeoutSeconds`` (a
renewal). A ``410 Gone`` (the resourceVersion is too old) means a new list. Nothing here polls:
an idle cluster costs one watch request per kind per renewal.

The stores are read by the reconcile workers (other threads) through :class:`Store`, whose reads
return the stored dicts: callers treat them as read-only.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from deepseek_operator import metrics
from deepseek_operator.kube.client import api_client, request

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
Slim = Callable[[Mapping[str, Any]], dict[str, Any]]
# Called after each change with the kind, the event type (ADDED, MODIFIED, DELETED, SYNC), the
# object as stored now (for DELETED: as it was) and the object stored before (None if new).
OnChange = Callable[[str, str, dict[str, Any], dict[str, Any] | None], None]

WATCH_TIMEOUT_SECONDS = 300  # a watch is renewed this often (jittered), whatever happens
_READ_TIMEOUT_SECONDS = WATCH_TIMEOUT_SECONDS + 60  # a silent connection is given up after this


def resource_version(obj: Mapping[str, Any]) -> int:
    """The object's resourceVersion as a number (0 when absent or not a number).

    resourceVersions are opaque by contract, but every API server backed by etcd hands out
    increasing integers; comparing them keeps a write's answer from being undone by an older
    watch event that arrives after it.
    """
    raw = (obj.get("metadata") or {}).get("resourceVersion") or "0"
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 0


class Store:
    """A thread-safe map of (namespace, name) to slim objects of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._lock = threading.Lock()
        self._items: dict[Key, dict[str, Any]] = {}

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object, or None."""
        with self._lock:
            return self._items.get((namespace, name))

    def items(self) -> list[dict[str, Any]]:
        """A snapshot of every stored object."""
        with self._lock:
            return list(self._items.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def put(self, obj: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """Store ``obj`` unless an equal or newer version is stored. Returns whether it was stored
        and the object stored before (None when there was none)."""
        key = _key(obj)
        with self._lock:
            old = self._items.get(key)
            if old is not None and resource_version(old) >= resource_version(obj) > 0:
                return False, old
            self._items[key] = obj
            return True, old

    def remove(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Forget an object; returns it (None when it was not stored)."""
        with self._lock:
            return self._items.pop((namespace, name), None)

    def replace(
        self, objects: list[dict[str, Any]], namespace: str | None = None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Replace everything (or, given ``namespace``, everything in that namespace) by a fresh
        list; returns (objects new or changed, objects gone)."""
        fresh = {_key(o): o for o in objects}
        with self._lock:
            if namespace is None:
                old, self._items = self._items, fresh
            else:
                old = {k: o for k, o in self._items.items() if k[0] == namespace}
                self._items = {k: o for k, o in self._items.items() if k[0] != namespace} | fresh
        changed = [o for k, o in fresh.items() if old.get(k) != o]
        gone = [o for k, o in old.items() if k not in fresh]
        return changed, gone


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


@dataclass(frozen=True)
class Source:
    """What one informer follows: a kind at a REST path, optionally filtered by labels."""

    kind: str
    path: str  # the collection across namespaces, e.g. /apis/apps/v1/deployments
    label_selector: str = ""
    optional: bool = False  # the API may be absent (a CRD not installed): wait for it quietly
    # Given: follow the collection in each of these namespaces only (RBAC may grant no more).
    namespaces: tuple[str, ...] = ()
    field_selector: str = ""  # e.g. metadata.name=X: one object of a cluster-scoped kind

    def paths(self) -> list[tuple[str, str | None]]:
        """(REST path, namespace) of each collection to follow: the one across namespaces, or
        one per namespace (``/api/v1/pods`` -> ``/api/v1/namespaces/NS/pods``)."""
        if not self.namespaces:
            return [(self.path, None)]
        prefix, plural = self.path.rsplit("/", 1)
        return [(f"{prefix}/namespaces/{ns}/{plural}", ns) for ns in self.namespaces]


class Informer:
    """Lists and watches one :class:`Source` in a daemon thread (one per namespace when the
    source names namespaces), keeping :attr:`store` current."""

    def __init__(self, source: Source, slim: Slim, on_change: OnChange) -> None:
        self.source = source
        self.store = Store(source.kind)
        self._slim = slim
        self._on_change = on_change
        self._stop = threading.Event()
        self.synced = threading.Event()
        self.available = True  # False while an optional API is absent
        self._paths = source.paths()
        self._listed: set[str] = set()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(path, ns),
                name=f"informer-{source.kind}" + (f"-{ns}" if ns else ""),
                daemon=True,
            )
            for path, ns in self._paths
        ]
        self._responses: dict[str, Any] = {}

    def start(self) -> None:
        """Start listing and watching."""
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop now: the open watch connections are shut down, which ends the threads' reads."""
        self._stop.set()
        for resp in list(self._responses.values()):
            try:
                resp.shutdown()  # unblocks the reading thread (urllib3 2.3+)
            except Exception:  # the stream ended meanwhile; nothing to report
                log.debug("closing the %s watch", self.source.kind, exc_info=True)

    def join(self, timeout: float) -> None:
        """Wait for the threads to end."""
        for t in self._threads:
            t.join(timeout)

    def _mark_listed(self, path: str) -> None:
        with self._lock:
            self._listed.add(path)
            if len(self._listed) == len(self._paths):
                self.synced.set()

    def _query(self) -> list[tuple[str, str]]:
        query = [("labelSelector", self.source.label_selector)] if self.source.label_selector else []
        if self.source.field_selector:
            query.append(("fieldSelector", self.source.field_selector))
        return query

    def _run(self, path: str, namespace: str | None) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                version = self._list(path, namespace)
                backoff = 0.5
                resume: str | None = version
                while resume is not None and not self._stop.is_set():
                    resume = self._watch(path, resume)  # None: 410 Gone, list again
            except ApiException as e:
                if e.status == 404 and self.source.optional:
                    self.available = False
                    self._mark_listed(path)  # nothing to wait for: the API is not there
                    self._stop.wait(10.0)
                    continue
                if e.status == 403 and self.source.optional:
                    # Not granted (an older role without this rule): the caller does without it;
                    # asked again every few minutes, not at the backoff's pace.
                    if self.available:
                        log.info("not allowed to watch %s; going without it", self.source.kind)
                    self.available = False
                    self._mark_listed(path)
                    self._stop.wait(WATCH_TIMEOUT_SECONDS)
                    continue
                log.warning("watch of %s failed: HTTP %s %s", self.source.kind, e.status, e.reason)
            except Exception as e:  # a dropped connection, a timeout: list again after a pause
                if self._stop.is_set():
                    return
                log.warning("watch of %s failed: %s", self.source.kind, e)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)

    def _list(self, path: str, namespace: str | None) -> str:
        data = request(api_client(), "GET", path, query=self._query())
        items = []
        for item in (data or {}).get("items") or []:
            items.append(self._slim(item))
        self.available = True
        changed, gone = self.store.replace(items, namespace)
        for obj in gone:
            self._on_change(self.source.kind, "DELETED", obj, obj)
        for obj in changed:
            self._on_change(self.source.kind, "SYNC", obj, None)
        self._mark_listed(path)
        return str(((data or {}).get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, path: str, version: str) -> str | None:
        """Follow one watch from ``version``; returns the version to resume from, or None for a
        new list."""
        timeout = int(WATCH_TIMEOUT_SECONDS * random.uniform(0.9, 1.1))
        query = [
            *self._query(),
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout)),
            ("resourceVersion", version),
        ]
        for event in self._stream(path, query):
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return None
                raise RuntimeError(f"watch error: {obj.get('message')}")
            meta = obj.get("metadata") or {}
            version = str(meta.get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            self._apply_event(str(kind), obj)
        return version

    def _apply_event(self, kind: str, obj: Mapping[str, Any]) -> None:
        slim = self._slim(obj)
        if kind == "DELETED":
            meta = slim.get("metadata") or {}
            old = self.store.remove(str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            self._on_change(self.source.kind, kind, slim, old)
            return
        stored, previous = self.store.put(slim)
        if stored:
            self._on_change(self.source.kind, kind, slim, previous)

    def _stream(self, path: str, query: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        api = api_client()
        method, url, headers, _, _ = api.param_serialize(
            method="GET",
            resource_path=path,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        resp = api.rest_client.request(
            method, url, headers=headers, _request_timeout=(10, _READ_TIMEOUT_SECONDS)
        )
        raw = resp.response
        if not 200 <= raw.status < 300:
            metrics.api_error(raw.status, method)
        if raw.status == 410:
            raw.release_conn()
            yield {"type": "ERROR", "object": {"code": 410}}
            return
        if not 200 <= raw.status < 300:
            body = raw.data
            raw.release_conn()
            raise ApiException(status=raw.status, reason=raw.reason, http_resp=None) from ValueError(body)
        self._responses[path] = raw
        try:
            pending = b""
            for chunk in raw.stream(64 * 1024, decode_content=True):
                if self._stop.is_set():
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            self._responses.pop(path, None)
            raw.release_conn()
