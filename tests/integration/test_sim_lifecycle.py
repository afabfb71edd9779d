"""`deepseek-operator sim up|down` as a user runs it, and clean stops on failure.

Each test here starts a cluster of its own (not the session one).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest

from deepseek_operator.errors import SimError
from deepseek_operator.sim.cluster import SimCluster
from deepseek_operator.sim.state import alive, read_state
from deepseek_operator.sim.tools import Tools, find_tools, tool_path


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "deepseek_operator", *args]


def _read_kubeconfig_line(stream: IO[str], proc: subprocess.Popen[str], timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if line.startswith("KUBECONFIG="):
            return line.strip().split("=", 1)[1]
        if not line and proc.poll() is not None:
            break
    pytest.fail(
        f"sim up printed no KUBECONFIG line (exit {proc.poll()}): {proc.stderr.read() if proc.stderr else ''}"
    )


def _port_open(server: str) -> bool:
    host, port = server.removeprefix("https://").rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


@pytest.fixture
def sim_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose sim state lives in a private folder (tools are still found in the real cache)."""
    env = dict(os.environ)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd", "kwok"):
        (bin_dir / program).symlink_to(tool_path(program))
    env["DSO_TOOLS_BIN"] = str(bin_dir)
    env["DSO_TOOLS_CACHE"] = str(tmp_path / "cache")
    env.pop("KUBECONFIG", None)
    return env


def _kubectl_json(kubeconfig: str, *args: str) -> Any:
    out = subprocess.run(
        [str(tool_path("kubectl")), "--kubeconfig", kubeconfig, *args, "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def test_sim_up_gives_two_gpu_nodes_and_sim_down_leaves_nothing(sim_env: dict[str, str]) -> None:
    up = subprocess.Popen(
        _cli("sim", "up", "--gpus", "h100:2x8"),
        env=sim_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert up.stdout is not None
        kubeconfig = _read_kubeconfig_line(up.stdout, up)
        nodes = _kubectl_json(kubeconfig, "get", "nodes")["items"]
        assert len(nodes) == 2
        for node in nodes:
            assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
            assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"

        state_env = {**os.environ, **sim_env}
        status = subprocess.run(
            _cli("sim", "status"), env=state_env, capture_output=True, text=True, timeout=30
        )
        assert status.returncode == 0 and f"KUBECONFIG={kubeconfig}" in status.stdout

        # A second `sim up` with the same name is refused, the first one keeps running.
        again = subprocess.run(_cli("sim", "up"), env=sim_env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "already up" in again.stderr

        saved = _saved_state(sim_env)
        assert saved is not None and saved.pid == up.pid
        pids = list(saved.components.values())
        assert len(pids) == 5 and all(alive(p) for p in pids)

        down = subprocess.run(_cli("sim", "down"), env=sim_env, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        assert "forced" not in down.stderr and "killed" not in down.stderr, down.stderr
        assert up.wait(timeout=60) == 0
        assert not any(alive(p) for p in pids)
        assert not Path(saved.workdir).exists()
        assert not _port_open(saved.server)
        assert _saved_state(sim_env) is None
    finally:
        if up.poll() is None:
            up.kill()


def test_interrupt_stops_everything(sim_env: dict[str, str]) -> None:
    up = subprocess.Popen(
        _cli("sim", "up", "--gpus", "l40s:1x4"),
        env=sim_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert up.stdout is not None
        _read_kubeconfig_line(up.stdout, up)
        saved = _saved_state(sim_env)
        assert saved is not None
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
        assert not any(alive(p) for p in saved.components.values())
        assert not Path(saved.workdir).exists()
        assert _saved_state(sim_env) is None
    finally:
        if up.poll() is None:
            up.kill()


def test_bad_gpu_spec_is_refused_before_anything_starts(sim_env: dict[str, str]) -> None:
    proc = subprocess.run(
        _cli("sim", "up", "--gpus", "h100:2by8"), env=sim_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "--gpus" in proc.stderr and "POOL:NODESxGPUS" in proc.stderr
    assert _saved_state(sim_env) is None


def test_failure_half_way_stops_what_was_started(tmp_path: Path) -> None:
    real = find_tools()
    # A kube-apiserver that cannot start: etcd is already running when it fails.
    broken = tmp_path / "kube-apiserver"
    broken.write_text("#!/bin/sh\necho 'refusing to start' >&2\nexit 3\n")
    broken.chmod(0o755)
    tools = Tools(
        kube_apiserver=broken,
        kube_controller_manager=real.kube_controller_manager,
        kube_scheduler=real.kube_scheduler,
        kubectl=real.kubectl,
        etcd=real.etcd,
        kwok=real.kwok,
    )
    cluster = SimCluster(gpus="h100:1x8", tools=tools, base_dir=tmp_path)
    with pytest.raises(SimError, match="kube-apiserver exited with code 3") as info:
        cluster.start(timeout=60)
    assert "refusing to start" in str(info.value)
    assert cluster.pids == {}
    # Nothing that was started for it (etcd ran with its data dir under tmp_path) is still running.
    assert _processes_mentioning(str(tmp_path)) == []
    assert [p for p in tmp_path.iterdir() if p.name.startswith("dso-sim-")] == []


def _saved_state(env: dict[str, str]) -> Any:
    old = os.environ.get("DSO_TOOLS_CACHE")
    os.environ["DSO_TOOLS_CACHE"] = env["DSO_TOOLS_CACHE"]
    try:
        return read_state("default")
    finally:
        if old is None:
            del os.environ["DSO_TOOLS_CACHE"]
        else:
            os.environ["DSO_TOOLS_CACHE"] = old


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and alive(int(proc.name)):
                found.append(int(proc.name))
    return found


def test_sim_up_with_monitoring_serves_the_custom_metrics_api_and_down_stops_it(
    sim_env: dict[str, str],
) -> None:
    (Path(sim_env["DSO_TOOLS_BIN"]) / "prometheus-adapter").symlink_to(tool_path("prometheus-adapter"))
    up = subprocess.Popen(
        _cli("sim", "up", "--gpus", "h100:1x8", "--with", "monitoring"),
        env=sim_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert up.stdout is not None
        kubeconfig = _read_kubeconfig_line(up.stdout, up)
        api_service = _kubectl_json(kubeconfig, "get", "apiservice", "v1beta1.custom.metrics.k8s.io")
        conditions = {c["type"]: c["status"] for c in api_service["status"]["conditions"]}
        assert conditions["Available"] == "True"
        kubectl = [str(tool_path("kubectl")), "--kubeconfig", kubeconfig]
        raw = subprocess.run(
            [*kubectl, "get", "--raw", "/apis/custom.metrics.k8s.io/v1beta1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert raw.returncode == 0, raw.stderr
        assert json.loads(raw.stdout)["groupVersion"] == "custom.metrics.k8s.io/v1beta1"
        saved = _saved_state(sim_env)
        assert saved is not None
        assert {"prometheus", "prometheus-adapter"} <= saved.components.keys()
        pids = list(saved.components.values())
        down = subprocess.run(_cli("sim", "down"), env=sim_env, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        assert up.wait(timeout=60) == 0
        assert not any(alive(p) for p in pids)
    finally:
        if up.poll() is None:
            up.kill()
