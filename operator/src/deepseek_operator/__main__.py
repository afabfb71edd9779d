"""The ``deepseek-operator`` command: ``run`` the operator, ``sim up|down|status`` a simulated cluster."""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from deepseek_operator import __version__
from deepseek_operator.errors import OperatorError, SpecError


def _err(message: str) -> None:
    print(f"deepseek-operator: {message}", file=sys.stderr, flush=True)


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _watch_namespaces(given: Sequence[str] | None) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(given or ()))
    for ns in names:
        if not _DNS_LABEL.match(ns):
            raise OperatorError(
                f"--namespace {ns!r} is not a namespace name: give the exact name of an existing "
                "namespace (lowercase letters, digits and '-'), once per namespace; patterns are "
                "not supported, as the operator's Roles are made for named namespaces"
            )
    return names


def _peering(args: argparse.Namespace, namespaces: tuple[str, ...]) -> Any:
    """The replica's peering settings, or None when it runs alone (no --peering)."""
    if not args.peering:
        return None
    from deepseek_operator.peering import PeeringConfig, auto_priority  # noqa: PLC0415

    if not 2 <= args.peering_lifetime <= 600:
        raise OperatorError(f"--peering-lifetime {args.peering_lifetime}: give 2 to 600 seconds (10 is good)")
    priority = args.priority
    if priority is None:
        priority = auto_priority(int(time.time() * 1000), secrets.randbelow(1000))
    identity = f"{socket.gethostname()}@{os.getpid()}/{secrets.token_hex(4)}"
    return PeeringConfig(args.peering, identity, priority, args.peering_lifetime, namespaces)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the operator in this process until interrupted."""
    namespaces = _watch_namespaces(args.namespace)
    peering = _peering(args, namespaces)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    if args.endpoints:
        from deepseek_operator.rollout.analysis import ENDPOINTS_ENV  # noqa: PLC0415

        os.environ[ENDPOINTS_ENV] = os.path.abspath(args.endpoints)
    import kopf  # noqa: PLC0415 - keep `sim` and `--help` fast

    import deepseek_operator.handlers  # noqa: F401, PLC0415 - registers the handlers

    kopf.configure(verbose=args.verbose)
    if args.metrics_port:
        from prometheus_client import start_http_server  # noqa: PLC0415

        start_http_server(args.metrics_port, addr=args.metrics_address)
    kopf.run(
        standalone=peering is None,
        peering_name=peering.name if peering else None,
        priority=peering.priority if peering else None,
        identity=peering.identity if peering else None,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(watch_namespaces=namespaces, peering=peering),
    )
    return 0


def cmd_sim_up(args: argparse.Namespace) -> int:
    """Start a simulated cluster, print KUBECONFIG=..., keep it up until `sim down` or an interrupt."""
    from deepseek_operator.sim.cluster import SimCluster  # noqa: PLC0415
    from deepseek_operator.sim.state import SimState, alive, read_state, remove_state, write_state  # noqa: PLC0415

    existing = read_state(args.name)
    if existing is not None and alive(existing.pid):
        _err(
            f"a simulated cluster named {args.name!r} is already up (pid {existing.pid}, "
            f"KUBECONFIG={existing.kubeconfig}); stop it with 'deepseek-operator sim down"
            f"{'' if args.name == 'default' else ' --name ' + args.name}' or pick another --name"
        )
        return 1

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    cluster = SimCluster(
        gpus=args.gpus,
        cpu_nodes=args.cpu_nodes,
        with_components=tuple(args.with_components or ()),
        progress=lambda m: print(f"[sim] {m}", file=sys.stderr, flush=True),
    )
    try:
        cluster.start(timeout=args.timeout)
    except KeyboardInterrupt:
        return 130
    try:
        write_state(
            SimState(
                name=args.name,
                pid=os.getpid(),
                kubeconfig=str(cluster.kubeconfig),
                workdir=str(cluster.workdir),
                server=cluster.server,
                components=cluster.pids,
            )
        )
        print(f"KUBECONFIG={cluster.kubeconfig}", flush=True)
        print(
            f"[sim] up: {cluster.server}; nodes: "
            + ", ".join(
                f"{p.nodes}x {p.product.product} ({p.gpus_per_node} GPUs each)" for p in cluster.pools
            )
            + (f", {cluster.cpu_nodes} CPU node(s)" if cluster.cpu_nodes else "")
            + "; stop with 'deepseek-operator sim down' or Ctrl-C",
            file=sys.stderr,
            flush=True,
        )
        if cluster.monitoring is not None:
            mon = cluster.monitoring
            print(
                f"[sim] monitoring: Prometheus {mon.prometheus.url}; "
                f"dcgm-exporter stand-in {mon.exporter.url} "
                f"(set a value: curl -X POST '{mon.exporter.url.rsplit('/', 1)[0]}/set?metric="
                "DCGM_FI_DEV_GPU_UTIL&value=90&namespace=NS'); prometheus-adapter serves "
                "custom.metrics.k8s.io/v1beta1",
                file=sys.stderr,
                flush=True,
            )
        while not stop.wait(1.0):
            cluster.check_running()
        return 0
    finally:
        print("[sim] stopping", file=sys.stderr, flush=True)
        cluster.stop()
        remove_state(args.name, os.getpid())
        print("[sim] stopped; nothing left behind", file=sys.stderr, flush=True)


def cmd_sim_down(args: argparse.Namespace) -> int:
    """Stop the simulated cluster `sim up` started."""
    from deepseek_operator.sim.state import read_state, stop_recorded  # noqa: PLC0415

    state = read_state(args.name)
    if state is None:
        print(f"no simulated cluster named {args.name!r} is up", file=sys.stderr)
        return 0
    for line in stop_recorded(state, timeout=args.timeout):
        print(f"[sim] {line}", file=sys.stderr)
    print(f"[sim] {args.name!r} is down", file=sys.stderr)
    return 0


def cmd_sim_status(args: argparse.Namespace) -> int:
    """Say whether a simulated cluster is up and where its kubeconfig is."""
    from deepseek_operator.sim.state import alive, read_state  # noqa: PLC0415

    state = read_state(args.name)
    if state is None or not alive(state.pid):
        print(f"{args.name}: down")
        return 1
    print(f"{args.name}: up (pid {state.pid}) {state.server}\nKUBECONFIG={state.kubeconfig}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The operator serving the samples on a simulated cluster, start to finish."""
    from deepseek_operator.demo import run_demo  # noqa: PLC0415

    return run_demo(gpus=args.gpus, keep=args.keep, timeout=args.timeout)


def cmd_plan(args: argparse.Namespace) -> int:
    """Print what a model needs on each GPU product, and where it would go on a cluster."""
    from deepseek_operator import plan_cli  # noqa: PLC0415

    nodes = None
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
        from deepseek_operator.kube.inventory import gather_inventory  # noqa: PLC0415

        nodes = gather_inventory()
    req = plan_cli.PlanRequest(
        model=args.model,
        precision=args.precision,
        products=tuple(args.gpu or ()),
        max_input_tokens=args.max_input_tokens,
        max_output_tokens=args.max_output_tokens,
        max_batch_size=args.max_batch_size,
        parameters=args.parameters,
    )
    report = plan_cli.plan_report(req, nodes)
    print(plan_cli.to_json(report) if args.output == "json" else plan_cli.render_table(report))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    """Print every object the operator would create for the resources of a file, offline."""
    from deepseek_operator import render_cli  # noqa: PLC0415

    if args.filename == "-":
        text, source = sys.stdin.read(), "<stdin>"
    else:
        try:
            with open(args.filename, encoding="utf-8") as f:
                text, source = f.read(), args.filename
        except OSError as e:
            raise SpecError(f"-f {args.filename}: cannot read it ({e.strerror})") from e
    sys.stdout.write(render_cli.render(text, source, gpus=args.gpus, namespace=args.namespace))
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    """Write one archive with what an engineer needs first about a DeepSeekDeployment."""
    import datetime as dt  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from deepseek_operator import diagnose_cli  # noqa: PLC0415
    from deepseek_operator.kube.client import api_client, reset_api_client  # noqa: PLC0415

    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    reset_api_client()
    try:
        api = api_client()
    except Exception as e:
        raise OperatorError(f"cannot reach the cluster: {e}; set --kubeconfig or $KUBECONFIG") from e
    get, get_text = diagnose_cli.kube_readers(api)
    report = diagnose_cli.collect(
        get,
        get_text,
        args.namespace,
        args.name,
        tail=args.tail,
        operator_logs=args.operator_log or (),
        operator_namespace=args.operator_namespace,
        prometheus=args.prometheus,
    )
    folder = diagnose_cli.archive_name(args.namespace, args.name, dt.datetime.now(dt.UTC))
    out = Path(args.output or f"{folder}.tar.gz")
    diagnose_cli.write_archive(report, out, folder)
    print(out)
    for problem in report.problems:
        _err(f"not in the archive: {problem}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``run`` and ``sim up|down|status``."""
    parser = argparse.ArgumentParser(
        prog="deepseek-operator",
        description="Run DeepSeek models on your own GPU cluster with Triton / TensorRT-LLM.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator (kopf) against the current kubeconfig")
    run.add_argument("--namespace", "-n", action="append", help="watch only this namespace (repeatable)")
    run.add_argument("--kubeconfig", help="kubeconfig to use (default: $KUBECONFIG or in-cluster)")
    run.add_argument("--liveness", help="serve a liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    run.add_argument(
        "--peering",
        metavar="NAME",
        help="run as one of several replicas that meet in kopf's peering object NAME (a ClusterKopfPeering, "
        "or a KopfPeering in each --namespace): one works, the others wait and take over",
    )
    run.add_argument(
        "--priority",
        type=int,
        help="peering priority (the highest works); default: the replica that started first wins",
    )
    run.add_argument(
        "--peering-lifetime",
        type=int,
        default=10,
        help="seconds a replica counts as alive after last seen (about the fail-over time; default 10)",
    )
    run.add_argument("--verbose", "-v", action="store_true", help="log more")
    run.add_argument(
        "--metrics-port", type=int, default=0, help="serve the operator's Prometheus metrics on this port"
    )
    run.add_argument("--metrics-address", default="0.0.0.0", help="address for --metrics-port (default all)")
    run.add_argument(
        "--endpoints",
        help="YAML file mapping namespace/name/revision to Triton addresses, for an operator outside the "
        "cluster (sets $DEEPSEEK_OPERATOR_ENDPOINTS; see docs/rollout.md)",
    )
    run.set_defaults(func=cmd_run)

    plan = sub.add_parser("plan", help="what a model needs per GPU product, and where it goes on a cluster")
    plan.add_argument(
        "model", help="a catalog id such as deepseek-ai/DeepSeek-R1 (or any id with --parameters)"
    )
    plan.add_argument(
        "--precision", default="auto", choices=["auto", "bf16", "fp16", "fp8", "int8", "int4-awq"]
    )
    plan.add_argument("--gpu", action="append", help="GPU product (GFD name) to consider; repeatable")
    plan.add_argument("--kubeconfig", help="plan against this cluster's GPUs and free capacity")
    plan.add_argument("--max-input-tokens", type=int, default=4096)
    plan.add_argument("--max-output-tokens", type=int, default=1024)
    plan.add_argument("--max-batch-size", type=int, default=0, help="0: derive from memory")
    plan.add_argument("--parameters", help="parameter count of a model outside the catalog, e.g. 7.6B")
    plan.add_argument("--output", "-o", choices=["table", "json"], default="table")
    plan.set_defaults(func=cmd_plan)

    render = sub.add_parser(
        "render",
        help="print every object the operator would create for a resource, and its model repository "
        "(offline, like helm template)",
    )
    render.add_argument("-f", "--filename", required=True, help="YAML with DeepSeekDeployments ('-': stdin)")
    render.add_argument(
        "--gpus",
        help="plan on these empty GPU node pools, POOL:NODESxGPUS[,...] as for 'sim up' (e.g. h100:2x8); "
        "default: every catalog GPU, 2 nodes of 8 each",
    )
    render.add_argument(
        "--namespace",
        "-n",
        default="default",
        help="namespace for resources without one",
    )
    render.set_defaults(func=cmd_render)

    diagnose = sub.add_parser(
        "diagnose",
        help="write one archive (tar.gz) with a DeepSeekDeployment, its status, events, revisions, owned "
        "objects, pods and container logs, nodes, the operator's log lines and alerts (never Secrets)",
    )
    diagnose.add_argument("name", help="the DeepSeekDeployment")
    diagnose.add_argument("--namespace", "-n", default="default", help="its namespace (default: default)")
    diagnose.add_argument("--kubeconfig", help="kubeconfig to use (default: $KUBECONFIG or in-cluster)")
    diagnose.add_argument(
        "--output", "-o", help="archive path (default: deepseek-diagnose-NS-NAME-TIME.tar.gz)"
    )
    diagnose.add_argument("--tail", type=int, default=500, help="last log lines per container (default 500)")
    diagnose.add_argument(
        "--prometheus", help="Prometheus URL, e.g. http://prometheus:9090: add its current alerts"
    )
    diagnose.add_argument(
        "--operator-namespace", help="where the operator's pods run (default: looked for in every namespace)"
    )
    diagnose.add_argument(
        "--operator-log",
        action="append",
        help="a log file of an operator run outside the cluster, read for this resource's lines (repeatable)",
    )
    diagnose.set_defaults(func=cmd_diagnose)

    demo = sub.add_parser("demo", help="the operator serving the sample models on a simulated cluster")
    demo.add_argument("--gpus", default="h100:2x8,a100-80gb:1x4,h200:1x8", help="GPU node pools (see sim up)")
    demo.add_argument("--keep", action="store_true", help="keep the cluster and operator up until Ctrl-C")
    demo.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for the samples to be Ready"
    )
    demo.set_defaults(func=cmd_demo)

    from deepseek_operator.encryption.cli import add_commands  # noqa: PLC0415

    add_commands(sub)

    sim = sub.add_parser("sim", help="a simulated GPU cluster with a real control plane")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    up = sim_sub.add_parser("up", help="start it; prints KUBECONFIG=<path> when ready")
    up.add_argument(
        "--gpus",
        default="h100:2x8",
        help="GPU node pools as POOL:NODESxGPUS[,...], e.g. 'h100:2x8,a100-80gb:1x4' (default: h100:2x8)",
    )
    up.add_argument("--cpu-nodes", type=int, default=0, help="plain untainted nodes to add (default: 0)")
    up.add_argument("--name", default="default", help="name of this cluster, for 'sim down --name'")
    up.add_argument(
        "--with",
        dest="with_components",
        action="append",
        choices=["lws", "monitoring"],
        help="also run an optional component (repeatable): lws = the real LeaderWorkerSet controller "
        "(built by 'make tools'); monitoring = Prometheus, a dcgm-exporter stand-in and "
        "prometheus-adapter as the custom metrics API, so that HPAs on GPU utilization work "
        "(docs/autoscaling.md)",
    )
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    up.set_defaults(func=cmd_sim_up)
    down = sim_sub.add_parser("down", help="stop the cluster 'sim up' started")
    down.add_argument("--name", default="default")
    down.add_argument("--timeout", type=float, default=60.0, help="seconds to wait before killing")
    down.set_defaults(func=cmd_sim_down)
    st = sim_sub.add_parser("status", help="is it up, and where is its kubeconfig")
    st.add_argument("--name", default="default")
    st.set_defaults(func=cmd_sim_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deepseek-operator`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except OperatorError as e:
        _err(str(e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
