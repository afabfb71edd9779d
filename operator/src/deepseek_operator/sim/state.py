"""The record ``sim up`` leaves so that ``sim down`` (another process) can stop it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from deepseek_operator.sim.tools import cache_root


@dataclass
class SimState:
    """What a running ``sim up`` is: its own pid, its components' pids, its files."""

    name: str
    pid: int
    kubeconfig: str
    workdir: str
    server: str
    components: dict[str, int]


def state_path(name: str) -> Path:
    """Where the record of the simulated cluster ``name`` is kept."""
    return cache_root() / "sim" / f"{name}.json"


def write_state(state: SimState) -> None:
    path = state_path(state.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(path)


def read_state(name: str) -> SimState | None:
    try:
        return SimState(**json.loads(state_path(name).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def remove_state(name: str, pid: int | None = None) -> None:
    """Remove the record, only if it still belongs to ``pid`` when one is given."""
    current = read_state(name)
    if pid is None or (current is not None and current.pid == pid):
        with contextlib.suppress(OSError):
            state_path(name).unlink()


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.2)
    return not alive(pid)


def stop_recorded(state: SimState, timeout: float = 60.0) -> list[str]:
    """Stop the ``sim up`` process of ``state`` and anything of its that survived.

    Returns a line per thing it had to force (empty when the cluster stopped cleanly).
    """
    forced: list[str] = []
    if alive(state.pid):
        os.kill(state.pid, signal.SIGTERM)
        if not _wait_gone(state.pid, timeout):
            os.kill(state.pid, signal.SIGKILL)
            forced.append(f"sim up (pid {state.pid}) did not stop in {timeout:.0f}s and was killed")
    # Components left behind (the sim process was killed outright): end them,
    # checking the pid still runs the program we started, not a reused pid.
    for name, pid in state.components.items():
        if alive(pid) and name in _cmdline(pid):
            os.kill(pid, signal.SIGKILL)
            forced.append(f"{name} (pid {pid}) was left running and was killed")
    if Path(state.workdir).exists():
        shutil.rmtree(state.workdir, ignore_errors=True)
        forced.append(f"removed leftover folder {state.workdir}")
    remove_state(state.name)
    return forced
