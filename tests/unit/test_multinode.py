"""Finding 6 of issue 10: a multi-node replica can start MPI in the pinned image.

Upstream: TensorRT-LLM v1.0.0 examples/models/core/deepseek_v3/README.md ("Multi-node / mpirun":
``mpirun -H <HOST1>:8,<HOST2>:8 -n 16 trtllm-llmapi-launch ... --tp 16 --ep 16`` over passwordless
ssh, ``enable_attention_dp: true`` in extra-llm-api-config.yml); the image has no sshd
(Dockerfile.triton.trt_llm_backend of tensorrtllm_backend v1.0.0), so mpirun's rsh agent is the
operator's own (builders/mpi_agent.py), run here for real on loopback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deepseek_operator.api import names
from deepseek_operator.api.spec import DeploymentSpec, parse_spec
from deepseek_operator.builders import mpi_agent, multinode
from deepseek_operator.planning import catalog
from deepseek_operator.planning.inventory import build_inventory
from deepseek_operator.planning.placement import plan_placement
from deepseek_operator.planning.types import Plan
from deepseek_operator.sim.gpus import node_manifests, parse_gpu_spec

OWNER: dict[str, Any] = {
    "apiVersion": "serving.deepseek.ai/v1alpha1",
    "kind": "DeepSeekDeployment",
    "metadata": {"name": "r1", "namespace": "llm", "uid": "00000000-0000-0000-0000-000000000001"},
}


def _r1(
    fabric: str = "auto", source: dict[str, Any] | None = None, **engine: Any
) -> tuple[DeploymentSpec, Plan]:
    spec = parse_spec(
        {
            "model": {
                "id": "deepseek-ai/DeepSeek-R1",
                "source": source or {"pvc": {"claimName": "store", "path": "r1"}},
            },
            "engine": engine,
            "gpu": {"products": ["NVIDIA-H100-80GB-HBM3"]},
            "nccl": {"fabric": fabric},
        }
    )
    manifests = node_manifests(parse_gpu_spec("h100:2x8"))
    for n in manifests:
        n["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    plan = plan_placement(spec, catalog.arch_from_spec(spec.model), build_inventory(manifests, []))
    assert isinstance(plan, Plan) and plan.nodes_per_replica == 2, plan
    return spec, plan


def _pods(spec: DeploymentSpec, plan: Plan) -> tuple[dict[str, Any], dict[str, Any]]:
    lws = multinode.build_leader_worker_set(OWNER, spec, plan, None)
    t = lws["spec"]["leaderWorkerTemplate"]
    return t["leaderTemplate"]["spec"], t["workerTemplate"]["spec"]


def _script(pod: dict[str, Any]) -> str:
    command = pod["containers"][0]["command"]
    assert command[:2] == ["bash", "-c"]
    return str(command[2])


def test_layout_is_the_upstream_two_node_recipe() -> None:
    spec, plan = _r1()
    assert (plan.tensor_parallel, plan.pipeline_parallel, plan.expert_parallel) == (16, 1, 16)
    script = _script(_pods(spec, plan)[0])
    assert "--tp_size 16 --pp_size 1 --ep_size 16" in script
    assert "enable_attention_dp: true" in multinode.extra_llm_api_options(plan)
    assert f"--extra_llm_api_options {multinode.EXTRA_OPTIONS_PATH}" in script


@pytest.mark.parametrize("group", [0, 1, 3])
def test_host_list_names_the_pods_of_the_leaders_own_group(group: int) -> None:
    """LeaderWorkerSet sets LWS_LEADER_ADDRESS to <lws>-<group>.<lws>.<namespace>; worker i of the
    group is <lws>-<group>-<i> (the old ``${LWS_LEADER_ADDRESS/-0./-0-$i.}`` matched only group 0's
    address: from group 1 on, every rank landed on the leader)."""
    env = {
        "LWS_LEADER_ADDRESS": f"r1-abc-{group}.r1-abc.llm",
        "LWS_GROUP_SIZE": "2",
        "PATH": os.environ["PATH"],
    }
    out = subprocess.run(
        ["bash", "-c", mpi_agent.group_hosts_shell(8) + '; echo "$HOSTS"; echo $WORKERS'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert out[0] == f"r1-abc-{group}.r1-abc.llm:8,r1-abc-{group}-1.r1-abc.llm:8"
    assert out[1] == f"r1-abc-{group}-1.r1-abc.llm"


def test_mpirun_forwards_path_and_every_nccl_variable_and_sets_prefix() -> None:
    spec, plan = _r1(fabric="ethernet")
    leader, worker = _pods(spec, plan)
    script = _script(leader)
    mpirun = next(line for line in script.splitlines() if line.startswith("exec mpirun"))
    assert "--prefix /opt/hpcx/ompi" in mpirun and "-mca plm_rsh_agent /tmp/dso-mpi-agent" in mpirun
    assert "-x PATH" in mpirun and "-x LD_LIBRARY_PATH" in mpirun
    nccl = {k for k, _ in plan.nccl_env} | {"NCCL_DEBUG"}
    assert len(nccl) > 3
    for key in nccl:
        assert f"-x {key}" in mpirun, key
    for pod in (leader, worker):
        env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
        assert nccl <= set(env), nccl - set(env)
        assert env["NCCL_DEBUG"] == "WARN"


def test_leader_waits_for_every_worker_before_mpirun() -> None:
    spec, plan = _r1()
    lines = _script(_pods(spec, plan)[0]).splitlines()
    wait = next(i for i, line in enumerate(lines) if line.startswith("python3 /tmp/dso-mpi-agent wait"))
    run = next(i for i, line in enumerate(lines) if line.startswith("exec mpirun"))
    assert wait < run and '"$LWS_LEADER_ADDRESS" $WORKERS' in lines[wait]
    assert "sshd" not in "\n".join(lines)


@pytest.mark.parametrize(("fabric", "locked"), [("infiniband", True), ("roce", True), ("ethernet", False)])
def test_rdma_pods_may_lock_memory(fabric: str, locked: bool) -> None:
    spec, plan = _r1(fabric=fabric)
    for pod in _pods(spec, plan):
        caps = pod["containers"][0]["securityContext"].get("capabilities", {}).get("add", [])
        assert ("IPC_LOCK" in caps) == locked


def test_uri_source_is_fetched_in_the_group() -> None:
    spec, plan = _r1(source={"uri": "s3://models/r1"}, cacheClaimName="cache")
    leader, worker = _pods(spec, plan)
    assert [c["name"] for c in leader["initContainers"]] == ["fetch-model"]
    assert [c["name"] for c in worker["initContainers"]] == ["wait-for-model"]
    spec, plan = _r1(source={"uri": "s3://models/r1"})
    leader, worker = _pods(spec, plan)
    assert [c["name"] for c in worker["initContainers"]] == ["fetch-model"]  # its own emptyDir


# --- the agent itself, on loopback ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    path = tmp_path / "agent"
    path.write_text(mpi_agent.AGENT)
    env = {**os.environ, "DSO_MPI_AGENT_PORT": str(_free_port()), "LWS_LEADER_ADDRESS": "localhost"}
    env["NCCL_SOCKET_IFNAME"] = "eth0"
    server = subprocess.Popen([sys.executable, str(path), "serve"], env=env, stderr=subprocess.PIPE)
    try:
        subprocess.run([sys.executable, str(path), "wait", "localhost"], env=env, check=True, timeout=30)
        yield path, env
    finally:
        server.terminate()
        server.wait(timeout=10)


def _remote(agent: tuple[Path, dict[str, str]], *command: str) -> subprocess.CompletedProcess[str]:
    path, env = agent
    return subprocess.run(
        [sys.executable, str(path), "localhost", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_agent_runs_the_mpi_daemon_for_its_leader_with_the_pods_environment(agent: Any) -> None:
    done = _remote(agent, "echo", "orted", "nccl=$NCCL_SOCKET_IFNAME;", "exit", "7")
    assert done.returncode == 7 and done.stdout == "orted nccl=eth0\n"


def test_agent_refuses_other_commands(agent: Any) -> None:
    done = _remote(agent, "cat", "/etc/passwd")
    assert done.returncode == 126 and "refused" in done.stdout and "root:" not in done.stdout


def test_agent_refuses_peers_other_than_the_groups_leader(tmp_path: Path) -> None:
    path = tmp_path / "agent"
    path.write_text(mpi_agent.AGENT)
    # The leader is elsewhere (TEST-NET address): a connection from loopback is not the leader.
    env = {**os.environ, "DSO_MPI_AGENT_PORT": str(_free_port()), "LWS_LEADER_ADDRESS": "192.0.2.10"}
    server = subprocess.Popen([sys.executable, str(path), "serve"], env=env, stderr=subprocess.PIPE)
    try:
        subprocess.run([sys.executable, str(path), "wait", "localhost"], env=env, check=True, timeout=30)
        done = subprocess.run(
            [sys.executable, str(path), "localhost", "echo", "orted"], env=env, capture_output=True, text=True
        )
        assert done.returncode == 126 and "refused" in done.stdout
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_statefulset_controller_revisions_are_not_revision_records() -> None:
    """Seen with the real LeaderWorkerSet controller: its StatefulSets keep ControllerRevisions named
    <statefulset>-<hash> that carry the pod template's labels, the operator's included. Taken for
    revision records, they broke every pass ("has no plan"); only the operator's own count."""
    from deepseek_operator.reconcile import revision as rv  # noqa: PLC0415

    labels = {names.DEPLOYMENT_LABEL: "r1", names.REVISION_LABEL: "abc123"}
    ours = {"metadata": {"name": names.controller_revision_name("r1", "abc123"), "labels": labels}}
    theirs = {"metadata": {"name": "r1-abc123-0-78bcf6ccb8", "labels": labels}, "data": {}}
    children = {
        ("ControllerRevision", ours["metadata"]["name"]): ours,
        ("ControllerRevision", theirs["metadata"]["name"]): theirs,
    }
    assert rv.records_of(children) == {"abc123": ours}


def test_the_leader_script_runs_through_to_mpirun(tmp_path: Path) -> None:
    """The leader's own script, run with bash: it installs and starts the agent, waits for the
    group (here a group of one, on loopback), writes the LLM-API options and execs mpirun (a stand-in
    that records its arguments) with the hosts and every -x variable."""
    spec, plan = _r1(fabric="ethernet")
    leader, _ = _pods(spec, plan)
    script = _script(leader)
    agent_path, options_path = tmp_path / "agent", tmp_path / "options.yaml"
    script = script.replace(mpi_agent.AGENT_PATH, str(agent_path)).replace(
        multinode.EXTRA_OPTIONS_PATH, str(options_path)
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mpirun").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path / "argv"}\n')
    (bin_dir / "mpirun").chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LWS_LEADER_ADDRESS": "localhost",
        "LWS_GROUP_SIZE": "1",
        "DSO_MPI_AGENT_PORT": str(_free_port()),
        "DSO_MPI_WAIT_SECONDS": "20",
    }
    out = tmp_path / "out"
    # Its own session, so that the agent it leaves running in the background is stopped with it.
    with out.open("w") as log:
        proc = subprocess.Popen(
            ["bash", "-c", script], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = proc.wait(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    assert code == 0, out.read_text()
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[argv.index("-H") + 1] == "localhost:8"
    assert argv[argv.index("-np") + 1] == "16"
    assert "trtllm-llmapi-launch" in argv and "--ep_size" in argv
    assert "enable_attention_dp: true" in options_path.read_text()
    assert "localhost is up" in out.read_text()
