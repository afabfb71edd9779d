"""``deepseek-operator diagnose NAME [-n NS]``: one archive with what an engineer needs first.

Modelled on the report commands people know (``kubectl cnpg report cluster``): it reads, never
writes, and puts into one ``.tar.gz``:

* ``resource.yaml``: the DeepSeekDeployment with its status; ``summary.txt``: phase,
  conditions, the last analysis and rollback in plain words;
* ``events.yaml``: the events of the resource and of everything it owns, oldest first;
* ``controllerrevisions.yaml``: its revision records;
* ``objects/KIND-NAME.yaml``: every object it owns (workloads, Services, PDB, HPA, Jobs);
* ``model-repository/NAME.yaml``: the Triton model repository ConfigMaps;
* ``pods/POD/pod.yaml`` and ``pods/POD/CONTAINER.log`` / ``CONTAINER.previous.log``: each pod
  (its description: spec, status, its own events) and the last lines of every container, the
  previous instance's too;
* ``nodes.yaml``: the GPU node inventory placement reads (GPU labels, allocatable, taints,
  conditions) and ``status.placement``, the plan made on it;
* ``operator.log``: the operator's own log lines for this resource (its pods' logs, or the
  files given with ``--operator-log``), when reachable;
* ``alerts.json``: the firing and pending alerts about it, when ``--prometheus`` is given;
* ``README.txt``: what is in it, when and how long it took, and what could not be read.

Secrets are never read, so no Secret value can be in the archive; the pod and workload
specs only name Secrets (``secretKeyRef``, volumes), and an ``env`` value set in plain text
whose name looks like a credential is replaced by ``<redacted>``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import re
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deepseek_operator.api import constants as c
from deepseek_operator.api import names
from deepseek_operator.api.clock import format_time
from deepseek_operator.errors import OperatorError

# (apiVersion, kind, REST plural) of what a DeepSeekDeployment owns; label-selected by owner.
OWNED_KINDS: tuple[tuple[str, str, str], ...] = (
    ("apps/v1", "Deployment", "deployments"),
    (c.LWS_API_VERSION, c.LWS_KIND, c.LWS_PLURAL),
    ("batch/v1", "Job", "jobs"),
    ("v1", "ConfigMap", "configmaps"),
    ("v1", "Service", "services"),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ("apps/v1", "ControllerRevision", "controllerrevisions"),
)
OPERATOR_SELECTOR = "app.kubernetes.io/name=deepseek-operator"
_CREDENTIAL_NAME = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|API_?KEY|ACCESS_?KEY|PRIVATE", re.IGNORECASE)
REDACTED = "<redacted>"

Get = Callable[[str, list[tuple[str, str]] | None], Any]  # path, query -> JSON answer
GetText = Callable[[str, list[tuple[str, str]] | None], str]  # path, query -> text answer


class ReadError(Exception):
    """A part of the report could not be read (said in README.txt; the rest goes on)."""


@dataclass
class Report:
    """The files of the archive (path inside it -> text) and what could not be read."""

    files: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, path: str, text: str) -> None:
        self.files[path] = text

    def problem(self, what: str, error: BaseException) -> None:
        self.problems.append(f"{what}: {error}")


def _path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{ns}/{plural}" + (f"/{name}" if name else "")


def _dump(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=120)


def _clean(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` without managedFields, with plain-text credential env values redacted."""
    out = json.loads(json.dumps(obj))
    (out.get("metadata") or {}).pop("managedFields", None)
    _redact(out)
    return dict(out)


def _redact(value: Any) -> None:
    """Replace the ``value`` of env entries whose name looks like a credential, in place."""
    if isinstance(value, dict):
        env = value.get("env")
        if isinstance(env, list):
            for entry in env:
                if (
                    isinstance(entry, dict)
                    and "value" in entry
                    and _CREDENTIAL_NAME.search(str(entry.get("name")))
                ):
                    entry["value"] = REDACTED
        for v in value.values():
            _redact(v)
    elif isinstance(value, list):
        for v in value:
            _redact(v)


def _items(answer: Any) -> list[dict[str, Any]]:
    return [dict(i) for i in (answer or {}).get("items") or []]


def gpu_nodes(nodes: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The nodes placement reads (those with GPUs), with what it reads of them."""
    out = []
    for node in nodes:
        meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
        allocatable = status.get("allocatable") or {}
        if c.GPU_RESOURCE not in allocatable and c.GPU_RESOURCE not in (status.get("capacity") or {}):
            continue
        out.append(
            {
                "name": meta.get("name"),
                "labels": {
                    k: v for k, v in (meta.get("labels") or {}).items() if k.startswith("nvidia.com/")
                },
                "allocatable": allocatable,
                "taints": spec.get("taints") or [],
                "unschedulable": bool(spec.get("unschedulable")),
                "conditions": [
                    {"type": x.get("type"), "status": x.get("status"), "reason": x.get("reason")}
                    for x in status.get("conditions") or []
                ],
            }
        )
    return out


def summary(body: Mapping[str, Any], now: dt.datetime) -> str:
    """The resource's state in plain words: phase, conditions, last analysis and rollback."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    lines = [
        f"DeepSeekDeployment {meta.get('namespace')}/{meta.get('name')} "
        f"(generation {meta.get('generation')}, observed {status.get('observedGeneration')}), "
        f"report made {format_time(now)}",
        f"phase: {status.get('phase') or '-'}; replicas {status.get('readyReplicas', 0)}/"
        f"{(body.get('spec') or {}).get('replicas', '-')} ready",
        "",
        "conditions:",
    ]
    for cond in status.get("conditions") or []:
        why = f"{cond.get('reason') or ''}: {cond.get('message') or ''}"
        lines.append(f"  {cond.get('type')}={cond.get('status')} {why}")
    revs = status.get("revisions") or {}
    lines += [
        "",
        f"revisions: stable {revs.get('stable') or '-'}, canary {revs.get('canary') or '-'}, "
        f"previous {revs.get('previous') or '-'}, failed {', '.join(revs.get('failed') or []) or '-'}",
    ]
    analysis = status.get("analysis") or {}
    if analysis:
        lines.append(
            f"last analysis ({analysis.get('lastRunTime')}): {analysis.get('verdict')} of "
            f"{analysis.get('revision')} ({analysis.get('role')}): {analysis.get('message')}"
        )
    rollback = status.get("lastRollback") or {}
    if rollback:
        lines.append(
            f"last rollback ({rollback.get('time')}): {rollback.get('from')} -> {rollback.get('to')}: "
            f"{rollback.get('reason')}"
        )
    return "\n".join(lines) + "\n"


def _events(get: Get, namespace: str, involved: set[tuple[str, str]]) -> list[dict[str, Any]]:
    events = [
        e
        for e in _items(get(_path("v1", "events", namespace), None))
        if ((e.get("involvedObject") or {}).get("kind"), (e.get("involvedObject") or {}).get("name"))
        in involved
    ]

    def when(e: Mapping[str, Any]) -> str:
        return str(
            e.get("lastTimestamp") or e.get("eventTime") or (e.get("metadata") or {}).get("creationTimestamp")
        )

    return [_clean(e) for e in sorted(events, key=when)]


def _container_logs(get_text: GetText, namespace: str, pod: Mapping[str, Any], tail: int) -> dict[str, str]:
    name = str((pod.get("metadata") or {}).get("name"))
    spec = pod.get("spec") or {}
    restarts = {
        str(s.get("name")): int(s.get("restartCount") or 0)
        for s in [
            *((pod.get("status") or {}).get("initContainerStatuses") or []),
            *((pod.get("status") or {}).get("containerStatuses") or []),
        ]
    }
    out: dict[str, str] = {}
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        cname = str(container.get("name"))
        for previous in (False, True):
            query = [("container", cname), ("tailLines", str(tail)), ("timestamps", "true")]
            if previous:
                query.append(("previous", "true"))
            key = f"pods/{name}/{cname}{'.previous' if previous else ''}.log"
            try:
                out[key] = get_text(_path("v1", "pods", namespace, name) + "/log", query)
            except ReadError as e:
                why = (
                    "no previous instance (it has not restarted)"
                    if previous and not restarts.get(cname)
                    else str(e)
                )
                out[key] = f"# not available: {why}\n"
    return out


def _operator_lines(text: str, namespace: str, name: str) -> list[str]:
    # "llm/r1" and not "llm/r10": the operator writes namespace/name, then ":" or a space.
    needle = re.compile(rf"(?<![\w.-]){re.escape(namespace)}/{re.escape(name)}(?![\w.-])")
    return [line for line in text.splitlines() if needle.search(line)]


def alerts_about(alerts: Iterable[Mapping[str, Any]], namespace: str, name: str) -> list[dict[str, Any]]:
    """The alerts about ``namespace/name``, and those about the operator itself (no name)."""
    out = []
    for a in alerts:
        labels = a.get("labels") or {}
        if (labels.get("namespace"), labels.get("name")) == (namespace, name) or (
            str(labels.get("alertname", "")).startswith("DeepSeekOperator")
        ):
            out.append(dict(a))
    return out


def prometheus_alerts(url: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every alert Prometheus holds now (GET /api/v1/alerts)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url.rstrip("/") + "/api/v1/alerts", timeout=timeout) as resp:
            answer = json.loads(resp.read())
    except (OSError, ValueError) as e:
        raise ReadError(f"Prometheus at {url}: {e}") from e
    return [dict(a) for a in (answer.get("data") or {}).get("alerts") or []]


def _owned(report: Report, get: Get, namespace: str, selector: str) -> list[dict[str, Any]]:
    """Every object the resource owns, each written to the report."""
    owned: list[dict[str, Any]] = []
    for api_version, kind, plural in OWNED_KINDS:
        try:
            found = _items(get(_path(api_version, plural, namespace), [("labelSelector", selector)]))
        except ReadError as e:
            report.problem(f"list {kind}", e)
            continue
        for obj in found:
            obj.setdefault("apiVersion", api_version)
            obj.setdefault("kind", kind)
            owned.append(obj)
    revisions = [_clean(o) for o in owned if o["kind"] == "ControllerRevision"]
    report.add(
        "controllerrevisions.yaml", _dump(sorted(revisions, key=lambda r: int(r.get("revision") or 0)))
    )
    for obj in owned:
        meta = obj.get("metadata") or {}
        component = (meta.get("labels") or {}).get(c.LABEL_COMPONENT)
        if obj["kind"] == "ControllerRevision":
            continue
        if obj["kind"] == "ConfigMap" and component == names.COMPONENT_MODEL_REPOSITORY:
            report.add(f"model-repository/{meta.get('name')}.yaml", _dump(_clean(obj)))
        else:
            report.add(f"objects/{obj['kind']}-{meta.get('name')}.yaml", _dump(_clean(obj)))
    return owned


def _pods(
    report: Report,
    get: Get,
    get_text: GetText,
    namespace: str,
    selector: str,
    involved: set[tuple[str, str]],
    tail: int,
) -> None:
    """The events, the pods with their own events, and every container's logs."""
    try:
        pods = _items(get(_path("v1", "pods", namespace), [("labelSelector", selector)]))
    except ReadError as e:
        report.problem("list pods", e)
        pods = []
    involved = involved | {("Pod", str((p.get("metadata") or {}).get("name"))) for p in pods}
    try:
        events = _events(get, namespace, involved)
    except ReadError as e:
        report.problem("list events", e)
        events = []
    report.add("events.yaml", _dump(events))
    with ThreadPoolExecutor(max_workers=8) as pool:
        logs = list(pool.map(lambda p: _container_logs(get_text, namespace, p, tail), pods))
    for pod, pod_logs in zip(pods, logs, strict=True):
        pname = str((pod.get("metadata") or {}).get("name"))
        own = [e for e in events if (e.get("involvedObject") or {}).get("name") == pname]
        report.add(f"pods/{pname}/pod.yaml", _dump({**_clean(pod), "events": own}))
        for path, text in pod_logs.items():
            report.add(path, text)


def collect(
    get: Get,
    get_text: GetText,
    namespace: str,
    name: str,
    *,
    tail: int = 500,
    operator_logs: Iterable[str] = (),
    operator_namespace: str | None = None,
    prometheus: str | None = None,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> Report:
    """Read everything the archive holds; raises OperatorError only when the resource is not there."""
    started = time.monotonic()
    when = now()
    report = Report()
    try:
        body = get(_path(c.API_VERSION, c.PLURAL, namespace, name), None)
    except ReadError as e:
        raise OperatorError(
            f"DeepSeekDeployment {namespace}/{name}: {e}; check the name and namespace (-n), "
            f"e.g. with 'kubectl get dsd -A'"
        ) from e
    report.add("resource.yaml", _dump(_clean(body)))
    report.add("summary.txt", summary(body, when))
    selector = names.label_selector(names.owned_selector(name))
    owned = _owned(report, get, namespace, selector)
    involved = {(c.KIND, name)} | {(o["kind"], str((o.get("metadata") or {}).get("name"))) for o in owned}
    _pods(report, get, get_text, namespace, selector, involved, tail)
    try:
        nodes = gpu_nodes(_items(get(_path("v1", "nodes"), None)))
        report.add(
            "nodes.yaml", _dump({"placement": (body.get("status") or {}).get("placement"), "gpuNodes": nodes})
        )
    except ReadError as e:
        report.problem("list nodes", e)
    _operator_log(report, get, get_text, namespace, name, operator_logs, operator_namespace, tail)
    if prometheus:
        try:
            report.add(
                "alerts.json",
                json.dumps(alerts_about(prometheus_alerts(prometheus), namespace, name), indent=2),
            )
        except ReadError as e:
            report.problem("alerts", e)
    took = time.monotonic() - started
    report.add("README.txt", _readme(namespace, name, when, took, report))
    return report


def _operator_log(
    report: Report,
    get: Get,
    get_text: GetText,
    namespace: str,
    name: str,
    files: Iterable[str],
    operator_namespace: str | None,
    tail: int,
) -> None:
    lines: list[str] = []
    for path in files:
        try:
            lines += [
                f"[{path}] {line}"
                for line in _operator_lines(Path(path).read_text(errors="replace"), namespace, name)
            ]
        except OSError as e:
            report.problem(f"operator log {path}", e)
    try:
        pods = _items(get(_path("v1", "pods", operator_namespace), [("labelSelector", OPERATOR_SELECTOR)]))
    except ReadError as e:
        pods = []
        if not files:
            report.problem("the operator's pods", e)
    for pod in pods:
        meta = pod.get("metadata") or {}
        path = _path("v1", "pods", str(meta.get("namespace")), str(meta.get("name"))) + "/log"
        try:
            text = get_text(path, [("tailLines", str(max(tail, 5000))), ("timestamps", "true")])
        except ReadError as e:
            report.problem(f"operator pod {meta.get('namespace')}/{meta.get('name')} log", e)
            continue
        lines += [f"[{meta.get('name')}] {line}" for line in _operator_lines(text, namespace, name)]
    if not files and not pods:
        report.problem(
            "operator log",
            ReadError(
                "no operator pod found (label " + OPERATOR_SELECTOR + "); "
                "give --operator-log FILE for an operator run outside the cluster"
            ),
        )
    report.add("operator.log", "\n".join(lines) + ("\n" if lines else ""))


def _readme(namespace: str, name: str, when: dt.datetime, took: float, report: Report) -> str:
    lines = [
        f"deepseek-operator diagnose {name} -n {namespace}",
        f"made {format_time(when)} in {took:.1f} s",
        "",
        "No Secret is read: Secret values cannot be in this archive. Plain-text env values whose",
        f"name looks like a credential are replaced by {REDACTED}.",
        "",
        "files:",
        *[f"  {p}" for p in sorted(report.files)],
        "  README.txt",
        "",
        "could not be read:" if report.problems else "everything listed was read.",
        *[f"  {p}" for p in report.problems],
    ]
    return "\n".join(lines) + "\n"


def write_archive(report: Report, path: Path, folder: str) -> None:
    """``report`` as ``path`` (a gzip'd tar), every file under ``folder/``."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in sorted(report.files.items()):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            info.mtime = int(time.time())
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


def kube_readers(api: Any) -> tuple[Get, GetText]:
    """``get`` and ``get_text`` over a kubernetes ApiClient; errors become ReadError."""

    def raw(path: str, query: list[tuple[str, str]] | None, accept: str) -> bytes:
        method, url, headers, body, post = api.param_serialize(
            method="GET",
            resource_path=path,
            query_params=query or [],
            header_params={"Accept": accept},
            auth_settings=["BearerToken"],
        )
        try:
            resp = api.call_api(method, url, header_params=headers, body=body, post_params=post)
            data = bytes(resp.read())
        except Exception as e:  # urllib3 errors: the API server is not reachable
            raise ReadError(f"GET {path}: {e}") from e
        if not 200 <= resp.status < 300:
            message = data.decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                message = str(json.loads(message).get("message") or message)
            raise ReadError(f"GET {path}: HTTP {resp.status}: {message.strip()}")
        return data

    def get(path: str, query: list[tuple[str, str]] | None) -> Any:
        return json.loads(raw(path, query, "application/json"))

    def get_text(path: str, query: list[tuple[str, str]] | None) -> str:
        return raw(path, query, "*/*").decode(
            "utf-8", errors="replace"
        )  # the log endpoint refuses text/plain (406)

    return get, get_text


def archive_name(namespace: str, name: str, when: dt.datetime) -> str:
    """``deepseek-diagnose-NS-NAME-YYYYmmddTHHMMSSZ`` (the archive's folder, and its file name)."""
    return f"deepseek-diagnose-{namespace}-{name}-{when.astimezone(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}"
