"""Where the control-plane programs are: the version-keyed cache ``make tools`` fills."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from deepseek_operator.errors import ToolsMissingError

# Which versions-file key and cache folder each program lives under.
_PROGRAMS: dict[str, tuple[str, str]] = {
    "kube-apiserver": ("KUBERNETES_VERSION", "kubernetes"),
    "kube-controller-manager": ("KUBERNETES_VERSION", "kubernetes"),
    "kube-scheduler": ("KUBERNETES_VERSION", "kubernetes"),
    "kubectl": ("KUBERNETES_VERSION", "kubernetes"),
    "etcd": ("ETCD_VERSION", "etcd"),
    "kwok": ("KWOK_VERSION", "kwok"),
    "helm": ("HELM_VERSION", "helm"),
    "kubeconform": ("KUBECONFORM_VERSION", "kubeconform"),
    "lws-controller": ("LWS_VERSION", "lws"),
    "prometheus-adapter": ("PROMETHEUS_ADAPTER_VERSION", "prometheus-adapter"),  # hack/build-adapter.sh
}


def repo_root() -> Path:
    """The checkout this package runs from (``operator/src/deepseek_operator/sim`` is four levels down)."""
    return Path(__file__).resolve().parents[4]


def versions_file() -> Path:
    """The one file that pins every tool version (``hack/tools.versions``)."""
    return repo_root() / "hack" / "tools.versions"


def parse_versions(text: str) -> dict[str, str]:
    """Read ``KEY=VALUE`` lines (shell syntax, comments allowed) into a dict."""
    versions: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or "=" not in line:
            continue
        key, value = line.split("=", 1)
        versions[key.strip()] = value.strip().strip("\"'")
    return versions


def cache_root() -> Path:
    """The cache folder outside the repository, as ``hack/build-tools.sh`` computes it."""
    if env := os.environ.get("DSO_TOOLS_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deepseek-operator"


@dataclass(frozen=True)
class Tools:
    """Paths of the programs the simulated cluster runs."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    etcd: Path
    kwok: Path


def tool_path(program: str, versions: dict[str, str] | None = None) -> Path:
    """The cached binary of ``program`` at its pinned version.

    ``DSO_TOOLS_BIN`` (a folder holding the binaries) overrides the cache.
    Raises :class:`ToolsMissingError` saying how to build it when it is absent.
    """
    if override := os.environ.get("DSO_TOOLS_BIN"):
        path = Path(override) / program
        if not os.access(path, os.X_OK):
            raise ToolsMissingError(f"{program} is not in DSO_TOOLS_BIN={override}")
        return path
    if versions is None:
        vf = versions_file()
        if not vf.exists():
            raise ToolsMissingError(f"cannot find {vf}; set DSO_TOOLS_BIN to a folder holding {program}")
        versions = parse_versions(vf.read_text())
    key, folder = _PROGRAMS[program]
    version = versions[key]
    path = cache_root() / "tools" / f"{folder}-{version}" / program
    if not os.access(path, os.X_OK):
        raise ToolsMissingError(
            f"{program} {version} is not built yet (looked for {path}); run 'make tools' "
            f"(the first build takes about 11 minutes on 2 cores)"
        )
    return path


def find_tools() -> Tools:
    """All the programs of the simulated cluster; raises :class:`ToolsMissingError` for the first missing."""
    return Tools(
        kube_apiserver=tool_path("kube-apiserver"),
        kube_controller_manager=tool_path("kube-controller-manager"),
        kube_scheduler=tool_path("kube-scheduler"),
        kubectl=tool_path("kubectl"),
        etcd=tool_path("etcd"),
        kwok=tool_path("kwok"),
    )
