"""The operator's image, built once per test session by ``hack/build-image.sh`` (``make image``),
and podman run with the project's settings (runc, granted ulimits, the host's network)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from deepseek_operator.sim.tools import repo_root

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
