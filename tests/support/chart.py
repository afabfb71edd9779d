"""The Helm chart under test: ``helm`` (built by ``make tools``) on charts/deepseek-operator, the
rules its roles grant, and the API server's audit log read back as (verb, group, resource)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepseek_operator.sim.tools import repo_root, tool_path

CHART = repo_root() / "charts" / "deepseek-operator"
KUBE_VERSION = "1.37.2"

# (verb, API group, resource[/subresource])
Use = tuple[str, str, str]

# Metadata of every request the operator's ServiceAccount makes; nothing else.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: None
"""

# A refusal in the operator's log: the client's and kopf's "Forbidden", or a urllib3 request line
# with status 403. A bare "403" is not one: log timestamps carry milliseconds (",403]").
_REFUSAL = re.compile(r'forbidden|HTTP/1\.1" 403\b', re.IGNORECASE)


def refusals(logs: str) -> list[str]:
    """The lines of an operator log that show the API server refused a request."""
    return [line for line in logs.splitlines() if _REFUSAL.search(line)]


def kubeconform_schemas() -> Path:
    """The v1.37 schemas in kubeconform's layout (hack/build-schemas.sh; cached)."""
    proc = subprocess.run([str(repo_root() / "hack" / "build-schemas.sh")], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"hack/build-schemas.sh failed:\n{proc.stderr}")
    return Path(proc.stdout.strip().splitlines()[-1])


def crd_schemas(folder: Path) -> Path:
    """JSON schemas of the project's custom resources (from crds/), named as kubeconform looks
    them up (``<kind>-<first part of the group>-<version>.json``), written into ``folder``."""
    for path in sorted((repo_root() / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd:
                continue
            spec = crd["spec"]
            for v in spec["versions"]:
                name = f"{spec['names']['kind'].lower()}-{spec['group'].split('.')[0]}-{v['name']}.json"
                (folder / name).write_text(json.dumps(v["schema"]["openAPIV3Schema"]))
    return folder


def kubeconform(text: str, crds: Path) -> subprocess.CompletedProcess[str]:
    """``kubeconform -strict`` of ``text`` against the v1.37 schemas and the project's CRDs."""
    template = "{{.ResourceKind}}{{.KindSuffix}}.json"
    args = [str(tool_path("kubeconform")), "-strict", "-summary", "-kubernetes-version", "1.37.2"]
    args += [
        "-schema-location",
        f"{kubeconform_schemas()}/{template}",
        "-schema-location",
        f"{crds}/{template}",
    ]
    return subprocess.run([*args, "-"], input=text, capture_output=True, text=True, timeout=120)


def helm(
    *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the project's helm; fails the test with its output when ``check`` and it fails."""
    proc = subprocess.run(
        [str(tool_path("helm")), *args], capture_output=True, text=True, timeout=180, env=env
    )
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def set_args(values: dict[str, Any]) -> list[str]:
    """``--set-json`` arguments for ``values`` (one per top-level key)."""
    out = []
    for key, value in values.items():
        out += ["--set-json", f"{key}={json.dumps(value)}"]
    return out


def template(
    values: dict[str, Any] | None = None,
    release: str = "dso",
    namespace: str = "dso-system",
    crds: bool = False,
    api_versions: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The chart's objects as ``helm template`` renders them (``api_versions``: APIs the cluster
    is said to serve, as ``group/version/Kind``, e.g. the Prometheus Operator's)."""
    args = ["template", release, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION]
    if crds:
        args.append("--include-crds")
    for api in api_versions:
        args += ["--api-versions", api]
    text = helm(*args, *set_args(values or {})).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def granted(objects: Iterable[dict[str, Any]], subject: str) -> dict[Use, set[str]]:
    """What the (Cluster)Roles bound to ``subject`` (system:serviceaccount:NS:NAME) grant:
    (verb, group, resource) -> the namespaces (``*`` for a ClusterRole)."""
    objects = list(objects)
    _, _, sa_ns, sa_name = subject.split(":")
    roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects}
    out: dict[Use, set[str]] = {}
    for b in objects:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s.get("name") == sa_name and s.get("namespace") == sa_ns for s in b.get("subjects") or []):
            continue
        ref = b["roleRef"]
        where = b["metadata"].get("namespace", "") if b["kind"] == "RoleBinding" else ""
        role = roles[(ref["kind"], where if ref["kind"] == "Role" else "", ref["name"])]
        for rule in role.get("rules") or []:
            for verb in rule["verbs"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        out.setdefault((verb, group, resource), set()).add(where or "*")
    return out


@dataclass(frozen=True)
class Request:
    """One request of the audit log."""

    verb: str
    group: str
    resource: str
    namespace: str
    name: str
    code: int
    uri: str

    @property
    def use(self) -> Use:
        return (self.verb, self.group, self.resource)


def audit_requests(log: Path, user: str, start: int = 0) -> list[Request]:
    """The requests ``user`` made, from line ``start`` of the audit log on."""
    out = []
    lines = log.read_text().splitlines()[start:] if log.exists() else []
    for line in lines:
        event = json.loads(line)
        if (event.get("user") or {}).get("username") != user or event.get("stage") != "ResponseComplete":
            continue
        ref = event.get("objectRef") or {}
        if not ref.get("resource"):
            continue  # discovery (/api, /apis, /version): open to every authenticated user
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        out.append(
            Request(
                verb=event["verb"],
                group=ref.get("apiGroup", ""),
                resource=resource,
                namespace=ref.get("namespace", ""),
                name=ref.get("name", ""),
                code=int((event.get("responseStatus") or {}).get("code", 0)),
                uri=event.get("requestURI", ""),
            )
        )
    return out


def audit_lines(log: Path) -> int:
    """How many events the audit log holds now (to read only what comes after)."""
    return len(log.read_text().splitlines()) if log.exists() else 0


def used(requests: Sequence[Request]) -> set[Use]:
    """What the requests used, as RBAC authorized them: a server-side apply that created the
    object (answered 201) was authorized as create as well as patch."""
    out = set()
    for r in requests:
        if r.code == 403:
            continue
        out.add(r.use)
        if r.verb == "patch" and r.code == 201:
            out.add(("create", r.group, r.resource))
    return out
