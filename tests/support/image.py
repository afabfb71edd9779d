"""The operator's image, built once per test session by ``hack/build-image.sh`` (``make image``),
and podman run with the project's settings (runc, granted ulimits, the host's network)."""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from deepseek_operator.rollout.analysis import ENDPOINTS_ENV
from deepseek_operator.sim.cluster import SimCluster
from deepseek_operator.sim.tools import repo_root, tool_path

PODMAN = repo_root() / "hack" / "podman.sh"


def build_image() -> str:
    """Build (or reuse the cached parts of) the operator image; returns its name."""
    proc = subprocess.run(
        [str(repo_root() / "hack" / "build-image.sh")], capture_output=True, text=True, timeout=1800
    )
    if proc.returncode != 0:
        pytest.fail(f"hack/build-image.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout.strip().splitlines()[-1]


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run podman (``hack/podman.sh``); fails the test with its output when ``check`` and it fails."""
    proc = subprocess.run([str(PODMAN), *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def run_args(image: str, *args: str, options: Sequence[str] = ()) -> list[str]:
    """``podman run`` as the chart runs the operator: read-only root, the non-root user, no
    capabilities, the host's network (the simulated cluster listens on 127.0.0.1)."""
    return [
        "run",
        "--network",
        "host",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        *options,
        image,
        *args,
    ]


def kubectl(
    cluster: SimCluster,
    *args: str,
    kubeconfig: Path | None = None,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """The project's kubectl against ``cluster`` (as its admin unless ``kubeconfig`` says)."""
    proc = subprocess.run(
        [str(tool_path("kubectl")), f"--kubeconfig={kubeconfig or cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        input=input,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def sa_kubeconfig(cluster: SimCluster, folder: Path, namespace: str, name: str) -> Path:
    """``folder``/kubeconfig holding a token of the ServiceAccount (TokenRequest API)."""
    token = kubectl(cluster, "-n", namespace, "create", "token", name, "--duration=2h").stdout.strip()
    assert cluster.pki is not None
    ca = base64.b64encode(cluster.pki.ca_cert.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "sim", "cluster": {"server": cluster.server, "certificate-authority-data": ca}}
        ],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "sim", "user": name}}],
        "current-context": "sa",
    }
    path = folder / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)
    return path


class OperatorContainer:
    """The operator image run by podman as the chart runs it (read-only root, the non-root user,
    no capabilities), on the host's network, with ``folder`` (the kubeconfig, the endpoints
    file) mounted read-only at /config."""

    def __init__(self, image: str, folder: Path, args: list[str]) -> None:
        self.name = f"dso-operator-{uuid.uuid4().hex[:8]}"
        self.image, self.folder, self.args = image, folder, args

    def start(self) -> None:
        """Start it detached."""
        podman(
            *run_args(
                self.image,
                "--kubeconfig=/config/kubeconfig",
                *self.args,
                options=[
                    "-d",
                    "--name",
                    self.name,
                    "--user",
                    "65532:65532",
                    "-v",
                    f"{self.folder}:/config:ro",
                    "-e",
                    f"{ENDPOINTS_ENV}=/config/endpoints.yaml",
                ],
            )
        )

    def logs(self) -> str:
        """Everything it logged so far."""
        out = podman("logs", self.name, check=False)
        return out.stdout + out.stderr

    def kill(self) -> None:
        """SIGKILL it (no cleanup of any kind)."""
        podman("kill", "--signal", "KILL", self.name, check=False)

    def remove(self) -> None:
        """Stop and remove it."""
        podman("rm", "-f", "-t", "5", self.name, check=False)
