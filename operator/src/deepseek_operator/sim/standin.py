"""A stand-in model server for tests and benchmarks: a real Triton on the CPU, answers from a table.

:class:`StandInServer` starts a real Triton Inference Server (the 2.51 binary that
``nvidia-pytriton`` bundles) serving one model named ``ensemble`` under the TensorRT-LLM
ensemble's tensor names: inputs ``text_input`` (BYTES, dims [1]) and ``max_tokens``
(INT32, dims [1]), output ``text_output`` (BYTES, dims [1]), ``max_batch_size`` 8, so
clients send shape [1, 1] as they do to the real ensemble. It listens on 127.0.0.1 only,
on free ports, and publishes Triton's own Prometheus metrics with summary latencies on
(``nv_inference_request_summary_us``), so analysis code reads exactly what it would read
from a TensorRT-LLM pod. :meth:`StandInServer.set_behaviour` makes it slow, failing or
wrong, deterministically.

Startup, measured on a 2-CPU machine: 3.4-3.9 s from ``start()`` to ready with the 8
model instances (2.6 s with one, 2.9-3.3 s with four); about 1 start in 10 hits a pytriton
race and is retried, adding another ~3.5 s; with other tests busy on the same CPUs two
servers took up to 24 s. ``stop()`` takes 2-3 s (Triton's 1 s exit timeout plus the
stubs) and also ends the stub that pytriton's Triton sometimes leaves running after
failed requests. The first request to each instance is ~70 ms slower than the
rest; after that a request costs ~5 ms alone and ~20 ms with 8 in flight, plus the
added latency. Several servers run side by side in one Python process, each its own
``tritonserver`` process.

Why the model looks the way it does:

* No dynamic batcher, 8 instances: every request is its own execution, so an injected
  failure fails exactly that request (pytriton fails a whole batch when the callable
  raises) and up to 8 requests sleep their added latency in parallel, as the probe's
  default concurrency of 8 expects.
* The Python callables run in this process (pytriton's proxy), so behaviour is plain
  shared state guarded by a lock: a change applies to the next request that starts.
* ``max_tokens`` is accepted and ignored: answers come from the table whole.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import math
import os
import shutil
import signal
import socket
import sysconfig
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

MODEL_NAME = "ensemble"
UNKNOWN_ANSWER = "I do not know."
UNKNOWN_PROMPT_ANSWER = "OK"
MAX_BATCH_SIZE = 8
DEFAULT_INSTANCES = 8
READY_TIMEOUT_S = 60.0
_START_ATTEMPTS = 5

# pytriton hands the server process a copy of os.environ taken when it starts it; the
# environment is changed only for the length of one start, one start at a time, and
# restored after, so the rest of the process keeps its own.
_ENV_LOCK = threading.Lock()
_LOG_FILTER_LOCK = threading.Lock()
_log_filter_installed = False


class InjectedFailureError(RuntimeError):
    """The failure set_behaviour(error_rate=...) injects; Triton reports it as a BACKEND failure."""


class _DropInjectedFailures(logging.Filter):
    # pytriton logs a warning with the whole traceback for every failing request; injected
    # failures are the point of a test, not news, so only those are dropped.
    def filter(self, record: logging.LogRecord) -> bool:
        return InjectedFailureError.__name__ not in record.getMessage()


def _install_log_filter() -> None:
    global _log_filter_installed  # noqa: PLW0603 - one filter per process, installed lazily
    with _LOG_FILTER_LOCK:
        if not _log_filter_installed:
            logging.getLogger("pytriton.proxy.inference").addFilter(_DropInjectedFailures())
            logging.getLogger("pytriton.server.triton_server").addFilter(_DropOwnStopFailures())
            _log_filter_installed = True


@dataclass(frozen=True)
class _Behaviour:
    latency_s: float
    error_rate: float
    correct: frozenset[str]  # the known prompts answered correctly


def _stable_rank(prompt: str) -> str:
    # hash() is salted per process; sha256 keeps the ranking the same in every run.
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def _free_ports(count: int) -> list[int]:
    # All sockets stay open until every port is chosen, so the ports are distinct.
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


@contextlib.contextmanager
def _python_libdir_first() -> Iterator[None]:
    # With a pyenv-built Python the Python-backend stub otherwise loads the system's
    # libpython and fails at model load ("'_thread.RLock' object has no attribute
    # '_recursion_count'"); the interpreter's own LIBDIR first fixes that.
    libdir = sysconfig.get_config_var("LIBDIR")
    with _ENV_LOCK:
        old = os.environ.get("LD_LIBRARY_PATH")
        if libdir:
            os.environ["LD_LIBRARY_PATH"] = libdir if not old else f"{libdir}:{old}"
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("LD_LIBRARY_PATH", None)
            else:
                os.environ["LD_LIBRARY_PATH"] = old


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    argv: tuple[str, ...]


def _processes() -> dict[int, _Proc]:
    procs: dict[int, _Proc] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode("utf-8", errors="replace").split("\0")
            # The command name in /proc/PID/stat may hold spaces or ")"; ppid follows the last ")".
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
        procs[int(entry.name)] = _Proc(int(entry.name), ppid, tuple(a for a in argv if a))
    return procs


def _started_under(root: Path, procs: dict[int, _Proc]) -> list[_Proc]:
    # Each server runs its own copy of tritonserver and of the stub binary from its own
    # workspace, so the path of the executable names the server's processes and no others.
    prefix = f"{root}/"
    return [p for p in procs.values() if p.argv and p.argv[0].startswith(prefix)]


def _stubs_under(root: Path, procs: dict[int, _Proc]) -> list[_Proc]:
    return [p for p in _started_under(root, procs) if p.argv[0].endswith("/triton_python_backend_stub")]


def _descendants(pids: set[int], procs: dict[int, _Proc]) -> set[int]:
    found = set(pids)
    grew = True
    while grew:
        more = {p.pid for p in procs.values() if p.ppid in found} - found
        found |= more
        grew = bool(more)
    return found


def _alive(pid: int) -> bool:
    # A killed process whose parent has not reaped it yet is a zombie: gone for our purposes.
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _kill_all(pids: set[int], timeout_s: float = 3.0) -> None:
    """SIGKILL ``pids`` and wait (up to ``timeout_s``) until none of them runs any more."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)


def _shared_memory_of(pids: set[int]) -> set[Path]:
    """The POSIX shared memory segments (``/dev/shm/...``) that ``pids`` have mapped."""
    found: set[Path] = set()
    for pid in pids:
        try:
            maps = (Path("/proc") / str(pid) / "maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            fields = line.split(maxsplit=5)  # address perms offset dev inode [path]
            path = fields[5] if len(fields) == 6 else ""
            if path.startswith("/dev/shm/"):
                found.add(Path(path.removesuffix(" (deleted)")))
    return found


def _quiet(triton: Any) -> None:
    """Keep tritonserver's own lines off this process's stdout.

    pytriton's TritonServer prints every line tritonserver writes on stdout or stderr (its
    ``verbose`` defaults to True and ``Triton(...)`` does not pass it on; pytriton 0.7.0). Triton's
    log goes to ``log_file``, so what still reached the demo's output was Triton's "Signal (2)
    received." at each stop. The server object is made before ``run()`` (which makes it only when
    there is none) and told not to print; pytriton still keeps the lines (``get_server_logs``).
    """
    triton._initialize_server()  # no public way to this setting
    server = getattr(triton, "_triton_server", None)
    if server is not None and hasattr(server, "_verbose"):
        server._verbose = False


def _sweep(root: Path) -> None:
    """End every process still running from the server workspace ``root`` and their children."""
    procs = _processes()
    started = {p.pid for p in _started_under(root, procs)}
    if started:
        _kill_all(_descendants(started, procs))


class _DropOwnStopFailures(logging.Filter):
    # stop() ends the stubs before it stops tritonserver (see there), so tritonserver cannot
    # unload the model and exits non-zero, which pytriton reports as a warning. Only that
    # record, and only while a stop() is running, is dropped.
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_stops_in_progress and record.getMessage().startswith(_EXITED_WITH_FAILURE))


_EXITED_WITH_FAILURE = "Triton Inference Server exited with failure"
_stops_in_progress = 0
_STOPS_LOCK = threading.Lock()


def _stub_leftovers(stubs: list[_Proc]) -> tuple[list[Path], list[Path]]:
    # The stub's argv: binary, <model dir copy>/<version>/model.py, shm region name, ...
    # Triton copies each instance's model into a fresh temp "folderXXXXXX" and names a
    # /dev/shm region per instance; both outlive a stub that did not exit cleanly.
    tmp = Path(tempfile.gettempdir())
    dirs: list[Path] = []
    regions: list[Path] = []
    for stub in stubs:
        if len(stub.argv) > 2:
            model_dir = Path(stub.argv[1]).parent.parent
            if model_dir.parent == tmp and model_dir.name.startswith("folder"):
                dirs.append(model_dir)
            if stub.argv[2].startswith("pytrtion") and "/" not in stub.argv[2]:
                regions.append(Path("/dev/shm") / stub.argv[2])
    return dirs, regions


class StandInServer:
    """A real Triton server on 127.0.0.1 answering prompts from ``answers``; see the module docstring."""

    def __init__(
        self, answers: Mapping[str, str], name: str = "standin", *, instances: int = DEFAULT_INSTANCES
    ) -> None:
        """Prepare (not start) a server answering ``answers[prompt]``; ``name`` labels its logs."""
        if instances < 1:
            raise ValueError(f"instances must be at least 1, not {instances}")
        self.name = name
        self._answers = {prompt.strip(): answer for prompt, answer in answers.items()}
        self._ranked = sorted(self._answers, key=_stable_rank)
        self._instances = instances
        self._lock = threading.Lock()
        self._requests = 0
        self._behaviour = _Behaviour(0.0, 0.0, frozenset(self._ranked))
        self._triton: Any = None
        self._tmpdir: Path | None = None
        self._ports: tuple[int, int, int] | None = None

    # -- addresses -------------------------------------------------------------------------

    def _port(self, index: int) -> int:
        if self._ports is None:
            raise RuntimeError(f"stand-in server {self.name!r} is not started")
        return self._ports[index]

    @property
    def http_address(self) -> str:
        """Triton's HTTP endpoint as "127.0.0.1:<port>"; RuntimeError before start()."""
        return f"127.0.0.1:{self._port(0)}"

    @property
    def grpc_address(self) -> str:
        """Triton's gRPC endpoint as "127.0.0.1:<port>"; RuntimeError before start()."""
        return f"127.0.0.1:{self._port(1)}"

    @property
    def metrics_url(self) -> str:
        """Triton's Prometheus endpoint, "http://127.0.0.1:<port>/metrics"; RuntimeError before start()."""
        return f"http://127.0.0.1:{self._port(2)}/metrics"

    @property
    def log_path(self) -> Path | None:
        """The tritonserver log file while the server runs (removed by stop()); None otherwise."""
        return None if self._tmpdir is None else self._tmpdir / "tritonserver.log"

    # -- behaviour -------------------------------------------------------------------------

    def set_behaviour(self, latency_ms: float = 0.0, error_rate: float = 0.0, quality: float = 1.0) -> None:
        """Change how the next requests are answered (effective for the next request that starts).

        ``latency_ms``: added sleep per request. ``error_rate`` (0..1): counting requests
        from this call, request k fails when floor(k*rate) rises, so 0.5 fails every second
        request and 1.0 all. ``quality`` (0..1): of the known prompts, ranked by sha256, the
        first round(quality*n) get their answer and the others "I do not know."; unknown
        prompts always get "OK". Raises ValueError for values out of range.
        """
        if not (math.isfinite(latency_ms) and latency_ms >= 0):
            raise ValueError(f"latency_ms must be >= 0, not {latency_ms}")
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be from 0 to 1, not {error_rate}")
        if not 0.0 <= quality <= 1.0:
            raise ValueError(f"quality must be from 0 to 1, not {quality}")
        correct = frozenset(self._ranked[: round(quality * len(self._ranked))])
        with self._lock:
            self._behaviour = _Behaviour(latency_ms / 1000.0, error_rate, correct)
            self._requests = 0

    def _next_request(self) -> tuple[_Behaviour, bool]:
        with self._lock:
            self._requests += 1
            k = self._requests
            behaviour = self._behaviour
        rate = behaviour.error_rate
        # A small epsilon keeps e.g. 10 * 0.1 from landing just under 1.0.
        fails = math.floor(k * rate + 1e-9) > math.floor((k - 1) * rate + 1e-9)
        return behaviour, fails

    def _answer(self, prompt: str, behaviour: _Behaviour) -> str:
        key = prompt.strip()
        if key not in self._answers:
            return UNKNOWN_PROMPT_ANSWER
        return self._answers[key] if key in behaviour.correct else UNKNOWN_ANSWER

    def _infer(self, requests: list[Any]) -> list[dict[str, Any]]:
        import numpy as np  # noqa: PLC0415 - numpy comes with pytriton, not with the operator

        responses = []
        # Without a dynamic batcher each call normally holds one request; a client may
        # still send a batch of several rows in it, answered row by row.
        for request in requests:
            behaviour, fails = self._next_request()
            if behaviour.latency_s > 0:
                time.sleep(behaviour.latency_s)
            if fails:
                raise InjectedFailureError(f"injected failure (error_rate={behaviour.error_rate})")
            texts = request["text_input"]
            rows = [
                self._answer(
                    t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t), behaviour
                )
                for t in texts.reshape(-1)
            ]
            out = np.array([r.encode("utf-8") for r in rows], dtype=np.object_).reshape(texts.shape)
            responses.append({"text_output": out})
        return responses

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start Triton on free 127.0.0.1 ports; return once it and the model report ready.

        A failed start is retried (fresh ports), 5 attempts in all: pytriton's model
        instances fetch their configuration from the first instance over a Unix socket and
        now and then connect before it listens (about 1 start in 10 on a 2-CPU machine).
        Raises RuntimeError (with the tail of Triton's log) when no attempt comes up, or
        when this server is already running.
        """
        if self._triton is not None:
            raise RuntimeError(f"stand-in server {self.name!r} is already running")
        _install_log_filter()
        errors: list[str] = []
        for attempt in range(1, _START_ATTEMPTS + 1):
            self._tmpdir = Path(tempfile.mkdtemp(prefix=f"standin-{self.name}-"))
            http_port, grpc_port, metrics_port = _free_ports(3)
            self._ports = (http_port, grpc_port, metrics_port)
            try:
                self._launch(http_port, grpc_port, metrics_port)
                self._wait_ready()
                atexit.register(self.stop)
                return
            except Exception as err:
                first_line = (str(err).splitlines() or [type(err).__name__])[0]
                errors.append(f"attempt {attempt}: {first_line}\n{self._log_tail()}")
                # A half-started server may fail to stop cleanly; the next attempt matters more.
                with contextlib.suppress(Exception):
                    self.stop()
        raise RuntimeError(f"stand-in server {self.name!r} did not start:\n" + "\n".join(errors))

    def _launch(self, http_port: int, grpc_port: int, metrics_port: int) -> None:
        import numpy as np  # noqa: PLC0415
        from pytriton.model_config import ModelConfig, Tensor  # noqa: PLC0415
        from pytriton.triton import Triton, TritonConfig  # noqa: PLC0415

        assert self._tmpdir is not None
        config = TritonConfig(
            id=self.name,
            http_address="127.0.0.1",
            http_port=http_port,
            grpc_address="127.0.0.1",
            grpc_port=grpc_port,
            metrics_address="127.0.0.1",
            metrics_port=metrics_port,
            metrics_config=["summary_latencies=true"],
            allow_gpu_metrics=False,
            # Triton waits this long for open client connections on exit (default 30 s).
            exit_timeout_secs=1,
            log_file=self._tmpdir / "tritonserver.log",
        )
        triton = Triton(config=config, workspace=self._tmpdir / "workspace")
        infer: Callable[[list[Any]], list[dict[str, Any]]] = self._infer
        triton.bind(
            model_name=MODEL_NAME,
            infer_func=[infer] * self._instances,
            inputs=[
                Tensor(name="text_input", dtype=bytes, shape=(1,)),
                Tensor(name="max_tokens", dtype=np.int32, shape=(1,)),
            ],
            outputs=[Tensor(name="text_output", dtype=bytes, shape=(1,))],
            config=ModelConfig(batching=True, max_batch_size=MAX_BATCH_SIZE, batcher=None),
            strict=True,
        )
        # Kept before run(), so that stop() cleans up after a start that fails half-way.
        self._triton = triton
        with _python_libdir_first():
            _quiet(triton)
            triton.run()

    def _wait_ready(self) -> None:
        # pytriton's run() only logs a warning when the model does not become ready;
        # the promise here is that the caller can send requests at once.
        deadline = time.monotonic() + READY_TIMEOUT_S
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        urls = [
            f"http://{self.http_address}/v2/health/ready",
            f"http://{self.http_address}/v2/models/{MODEL_NAME}/ready",
        ]
        while True:
            try:
                if all(opener.open(u, timeout=2).status == 200 for u in urls):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.05)

    def _log_tail(self, lines: int = 20) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        # Lines cut short: the stub repeats whole tracebacks on one log line.
        return "\n".join(line[:300] for line in path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop Triton, end the processes it started, remove its files; safe twice or before start().

        The order is what keeps the shutdown quiet. Triton unloads the 8 model instances one
        after the other, ~1.5 s each, far beyond its 1 s exit timeout; it then exits and leaves
        the stubs behind, which print "Non-graceful termination detected", and the resource
        trackers of the stubs (and of the tensor store the first stub runs) find the tensor
        store's shared memory still registered and warn about leaked shared_memory objects,
        one pair of lines each, often after the caller has moved on. So the stubs, the tensor
        store and their resource trackers are ended first (SIGKILL: nothing is printed), the
        shared memory they mapped is unlinked here, and only then is Triton stopped through
        pytriton, which also closes the in-process side (the proxies and their sockets).
        """
        atexit.unregister(self.stop)
        triton, self._triton = self._triton, None
        # Read while the stubs still run: what they name is gone once they are.
        procs = _processes() if self._tmpdir else {}
        stubs = _stubs_under(self._tmpdir, procs) if self._tmpdir else []
        dirs, regions = _stub_leftovers(stubs)
        helpers = _descendants({stub.pid for stub in stubs}, procs)
        segments = _shared_memory_of(helpers)
        global _stops_in_progress  # noqa: PLW0603 - counts the stops under way in this process
        with _STOPS_LOCK:
            _stops_in_progress += 1
        try:
            _kill_all(helpers)
            if triton is not None:
                triton.stop()
        finally:
            with _STOPS_LOCK:
                _stops_in_progress -= 1
            if self._tmpdir is not None:
                _sweep(self._tmpdir)
                shutil.rmtree(self._tmpdir, ignore_errors=True)
            for model_dir in dirs:
                shutil.rmtree(model_dir, ignore_errors=True)
            for region in (*regions, *segments):
                region.unlink(missing_ok=True)
            self._tmpdir = None
            self._ports = None

    def __enter__(self) -> StandInServer:
        """Start the server; the context's exit stops it."""
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the server."""
        self.stop()
