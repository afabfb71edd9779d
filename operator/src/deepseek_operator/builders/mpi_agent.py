"""How ``mpirun`` on a multi-node leader starts its remote ranks without ssh.

TensorRT-LLM documents multi-node serving as ``mpirun -H host1:8,host2:8 -n 16 trtllm-llmapi-launch
trtllm-serve ...`` over passwordless ssh (examples/models/core/deepseek_v3/README.md, "mpirun"),
installing openssh-server into the container by hand. The Triton TensorRT-LLM image has no sshd
(its profile, ``installed``), and installing one at start needs root, apt and a network. OpenMPI
lets any program stand in for ssh (``-mca plm_rsh_agent``): LeaderWorkerSet's own TensorRT-LLM
example uses ``kubectl exec`` for it (docs/examples/tensorrt-llm in kubernetes-sigs/lws), which
needs kubectl in the image and a ServiceAccount allowed ``pods/exec``. This one needs only the
image's ``python3``: every pod of a group runs :data:`AGENT` as a small remote-shell daemon, and
the leader's mpirun uses it as its rsh agent.

What the daemon runs, and for whom: only the OpenMPI daemon (a command naming ``orted`` or
``prted``, which mpirun sends to start its ranks), and only for a connection from its own group's
leader (the addresses ``LWS_LEADER_ADDRESS`` resolves to); anything else is refused and logged.
The command's output comes back to mpirun, and its exit status; when mpirun drops the
connection, the daemon's process group is killed.

Used as ``python3 /tmp/dso-mpi-agent serve`` (the daemon), ``... wait HOST...`` (returns once every
host's daemon accepts connections: mpirun must not start before the workers listen) and
``... HOST COMMAND...`` (what mpirun calls, like ``ssh HOST COMMAND``).
"""

from __future__ import annotations

import shlex

AGENT_PATH = "/tmp/dso-mpi-agent"
AGENT_PORT = 2222

AGENT = """\
import os, re, signal, socket, struct, subprocess, sys, threading, time
PORT = int(os.environ.get("DSO_MPI_AGENT_PORT", "2222"))
DAEMON = re.compile(r"(^|[\\s;/])(orted|prted)(\\s|$)")

def frame(sock, kind, data):
    sock.sendall(kind + struct.pack("!I", len(data)) + data)

def leader_ips():
    try:
        return set(socket.gethostbyname_ex(os.environ["LWS_LEADER_ADDRESS"])[2])
    except (KeyError, OSError):
        return set()

def handle(conn, peer):
    with conn:
        line = conn.makefile("rb").readline().decode(errors="replace").strip()
        if not line:
            return  # a readiness probe (wait)
        if peer not in leader_ips() or not DAEMON.search(line):
            print("dso-mpi-agent: refused %r from %s" % (line[:200], peer), file=sys.stderr, flush=True)
            frame(conn, b"o", b"dso-mpi-agent: refused\\n")
            frame(conn, b"x", struct.pack("!i", 126))
            return
        child = subprocess.Popen(["sh", "-c", line], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        def watch():
            try:
                while conn.recv(1):
                    pass
            except OSError:
                pass
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        threading.Thread(target=watch, daemon=True).start()
        try:
            for chunk in iter(lambda: child.stdout.read1(65536), b""):
                frame(conn, b"o", chunk)
            frame(conn, b"x", struct.pack("!i", child.wait()))
        except OSError:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)

def serve():
    srv = socket.create_server(("", PORT), family=socket.AF_INET, backlog=64, reuse_port=False)
    print("dso-mpi-agent: listening on %d" % PORT, flush=True)
    while True:
        conn, addr = srv.accept()
        threading.Thread(target=handle, args=(conn, addr[0]), daemon=True).start()

def wait(hosts, timeout=float(os.environ.get("DSO_MPI_WAIT_SECONDS", "1800"))):
    deadline = time.monotonic() + timeout
    for host in hosts:
        while True:
            try:
                socket.create_connection((host, PORT), timeout=5).close()
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    sys.exit("dso-mpi-agent: %s does not answer on %d: %s" % (host, PORT, e))
                time.sleep(2)
        print("dso-mpi-agent: %s is up" % host, flush=True)

def remote(argv):
    while argv and argv[0].startswith("-"):
        argv = argv[1:]  # ssh-style options mpirun may add
    host, command = argv[0], " ".join(argv[1:])
    sock = socket.create_connection((host, PORT), timeout=30)
    sock.settimeout(None)
    sock.sendall(command.encode() + b"\\n")
    stream = sock.makefile("rb")
    while True:
        head = stream.read(5)
        if len(head) < 5:
            sys.exit(255)
        kind, size = head[:1], struct.unpack("!I", head[1:])[0]
        data = stream.read(size)
        if kind == b"x":
            sys.exit(struct.unpack("!i", data)[0])
        sys.stdout.buffer.write(data)
        sys.stdout.flush()

if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve()
    elif sys.argv[1:2] == ["wait"]:
        wait(sys.argv[2:])
    else:
        remote(sys.argv[1:])
"""


def install_agent() -> str:
    """Shell that writes :data:`AGENT` to :data:`AGENT_PATH` (executable), for ``bash -c``."""
    return f"cat > {AGENT_PATH} <<'DSO_MPI_AGENT'\n{AGENT}DSO_MPI_AGENT\nchmod 0755 {AGENT_PATH}"


def group_hosts_shell(slots: int) -> str:
    """Shell that sets ``HOSTS`` (``host:slots,...``, the leader first) and ``WORKERS`` (the other
    pods' names) from LeaderWorkerSet's environment, for whichever group the pod belongs to.

    ``LWS_LEADER_ADDRESS`` is ``<lws>-<group>.<lws>.<namespace>`` (the leader's hostname, then the
    headless Service's subdomain); the group's worker ``i`` is ``<lws>-<group>-<i>`` in the same
    subdomain. (The old ``${LWS_LEADER_ADDRESS/-0./-0-$i.}`` was right for group 0 only.)"""
    return (
        'LEADER_HOST="${LWS_LEADER_ADDRESS%%.*}"; DOMAIN="${LWS_LEADER_ADDRESS#*.}"; '
        f'HOSTS="$LWS_LEADER_ADDRESS:{slots}"; WORKERS=""; '
        'for i in $(seq 1 $((LWS_GROUP_SIZE - 1))); do h="$LEADER_HOST-$i.$DOMAIN"; '
        f'HOSTS="$HOSTS,$h:{slots}"; WORKERS="$WORKERS $h"; done'
    )


def agent_command(daemon_only: bool, then: str = "") -> list[str]:
    """The container command: install the agent, run its daemon, then (the leader) ``then``."""
    serve = f"python3 {AGENT_PATH} serve"
    if daemon_only:
        return ["bash", "-c", f"set -eu\n{install_agent()}\nexec {serve}"]
    return ["bash", "-c", f"set -eu\n{install_agent()}\n{serve} &\n{then}"]


def quote_all(values: list[str]) -> str:
    """Shell words."""
    return " ".join(shlex.quote(v) for v in values)
