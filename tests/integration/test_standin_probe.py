"""The probe against real Triton servers (StandInServer): answers, failures, latency, metrics.

No cluster: two stand-in servers on 127.0.0.1, shared by every test in the module.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deepseek_operator.rollout.golden import GoldenCase, score
from deepseek_operator.rollout.probe import CaseResult, run_cases, scrape_metrics
from deepseek_operator.sim.standin import MODEL_NAME, StandInServer

ANSWERS = {
    "What is 17 * 23? Answer with the number only.": "391",
    "Capital of France?": "Paris",
    "Reply with OK.": "OK",
    "What is 2 + 2?": "4",
    "Largest planet?": "Jupiter",
    "Chemical symbol of gold?": "Au",
    "Author of Hamlet?": "Shakespeare",
    "Boiling point of water in Celsius?": "100",
}
CASES = [GoldenCase(prompt, "equals", answer) for prompt, answer in ANSWERS.items()]
TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[StandInServer, StandInServer]]:
    stable = StandInServer(ANSWERS, "stable")
    canary = StandInServer(ANSWERS, "canary")
    stable.start()
    try:
        canary.start()
        yield stable, canary
    finally:
        # Each stop waits on Triton's exit timeout; in parallel they take one wait.
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda s: s.stop(), (stable, canary)))


@pytest.fixture(autouse=True)
def normal_behaviour(servers: tuple[StandInServer, StandInServer]) -> None:
    for server in servers:
        server.set_behaviour()


def _run(
    server: StandInServer, cases: list[GoldenCase] = CASES, timeout_s: float = TIMEOUT_S, concurrency: int = 8
) -> list[CaseResult]:
    return run_cases(server.http_address, MODEL_NAME, "max_tokens", cases, timeout_s, concurrency)


# 127.0.0.1 as /proc/net/tcp writes it, and as /proc/net/tcp6 writes ::ffff:127.0.0.1
# (gRPC listens on an IPv6 socket mapped to the IPv4 loopback address).
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}


def test_addresses_are_loopback_and_distinct(servers: tuple[StandInServer, StandInServer]) -> None:
    addresses = set()
    for server in servers:
        assert server.http_address.startswith("127.0.0.1:")
        assert server.grpc_address.startswith("127.0.0.1:")
        assert server.metrics_url.startswith("http://127.0.0.1:") and server.metrics_url.endswith("/metrics")
        addresses |= {server.http_address, server.grpc_address, server.metrics_url.removesuffix("/metrics")}
    wanted = {int(a.rsplit(":", 1)[1]) for a in addresses}
    assert len(wanted) == 6
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not all(t.exists() for t in tables):
        return
    listening: dict[int, set[str]] = {}
    for table in tables:
        for row in table.read_text().splitlines()[1:]:
            fields = row.split()
            ip, port = fields[1].split(":")
            if fields[3] == "0A" and int(port, 16) in wanted:  # 0A: LISTEN
                listening.setdefault(int(port, 16), set()).add(ip)
    assert set(listening) == wanted
    assert set().union(*listening.values()) <= LOOPBACK, listening


def test_grpc_endpoint_serves_the_model(servers: tuple[StandInServer, StandInServer]) -> None:
    import tritonclient.grpc as triton_grpc  # noqa: PLC0415

    client = triton_grpc.InferenceServerClient(servers[0].grpc_address)
    try:
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL_NAME)
        config = client.get_model_config(MODEL_NAME, as_json=True)["config"]
    finally:
        client.close()
    # The TensorRT-LLM ensemble's tensor names and types, batching on.
    assert int(config["max_batch_size"]) > 0
    assert {(t["name"], t["data_type"]) for t in config["input"]} == {
        ("text_input", "TYPE_STRING"),
        ("max_tokens", "TYPE_INT32"),
    }
    assert [(t["name"], t["data_type"]) for t in config["output"]] == [("text_output", "TYPE_STRING")]


def test_healthy_servers_answer_every_case(servers: tuple[StandInServer, StandInServer]) -> None:
    for server in servers:
        results = _run(server)
        assert [r.output for r in results] == list(ANSWERS.values())
        assert all(r.error is None and r.latency_ms > 0 for r in results)
        assert score(CASES, [r.output for r in results]) == 1.0


def test_unknown_prompts_get_ok(servers: tuple[StandInServer, StandInServer]) -> None:
    results = _run(servers[0], [GoldenCase("Say anything.", "equals", "OK")])
    assert results[0].output == "OK"


def test_quality_answers_a_stable_fraction_correctly(servers: tuple[StandInServer, StandInServer]) -> None:
    stable, canary = servers
    canary.set_behaviour(quality=0.5)
    first = [r.output for r in _run(canary)]
    second = [r.output for r in _run(canary, concurrency=1)]
    assert first == second  # the same prompts are right every time
    assert sum(o == a for o, a in zip(first, ANSWERS.values(), strict=True)) == 4
    assert sorted(set(first) - set(ANSWERS.values())) == ["I do not know."]
    assert score(CASES, first) == 0.5
    # A second server with the same table picks the same prompts: the ranking is a stable hash.
    stable.set_behaviour(quality=0.5)
    assert [r.output for r in _run(stable)] == first
    canary.set_behaviour(quality=0.0)
    assert score(CASES, [r.output for r in _run(canary)]) == 0.0


def test_error_rate_fails_an_exact_share_and_metrics_count_it(
    servers: tuple[StandInServer, StandInServer],
) -> None:
    stable, canary = servers
    before = scrape_metrics([canary.metrics_url], MODEL_NAME, 5.0)
    assert before is not None and before.pods == 1

    canary.set_behaviour(error_rate=0.5)
    sequential = _run(canary, concurrency=1)
    # Every second request fails, counted from set_behaviour.
    assert [r.output is None for r in sequential] == [False, True] * 4
    failed = [r for r in sequential if r.output is None]
    assert all(r.error and "500" in r.error and "\n" not in r.error for r in failed)
    assert all(len(r.error or "") <= 500 for r in failed)
    assert score(CASES, [r.output for r in sequential]) == 0.5

    canary.set_behaviour(error_rate=1.0)
    assert all(r.output is None for r in _run(canary))
    canary.set_behaviour(error_rate=0.25)
    assert sum(r.output is None for r in _run(canary)) == 2  # concurrency changes which, not how many

    after = scrape_metrics([canary.metrics_url], MODEL_NAME, 5.0)
    assert after is not None
    assert after.failure - before.failure == 4 + 8 + 2
    assert after.success - before.success == 4 + 0 + 6

    # The stable server saw none of it.
    quiet = scrape_metrics([stable.metrics_url], MODEL_NAME, 5.0)
    assert quiet is not None and quiet.failure == 0


def test_latency_shows_in_results_and_in_p99(servers: tuple[StandInServer, StandInServer]) -> None:
    stable, canary = servers
    canary.set_behaviour(latency_ms=300)
    slow = _run(canary)
    assert all(r.output is not None for r in slow)
    assert all(300 <= r.latency_ms < 2000 for r in slow)
    fast = _run(stable)
    assert all(r.latency_ms < 300 for r in fast)

    canary_metrics = scrape_metrics([canary.metrics_url], MODEL_NAME, 5.0)
    stable_metrics = scrape_metrics([stable.metrics_url], MODEL_NAME, 5.0)
    assert canary_metrics is not None and stable_metrics is not None
    assert canary_metrics.p99_us is not None and canary_metrics.p99_us >= 300_000
    assert stable_metrics.p99_us is not None and stable_metrics.p99_us < 300_000

    both = scrape_metrics([stable.metrics_url, canary.metrics_url], MODEL_NAME, 5.0)
    assert both is not None
    assert both.pods == 2
    assert both.p99_us == canary_metrics.p99_us  # the worst pod
    # Counters add up (no traffic between the scrapes).
    assert both.success == stable_metrics.success + canary_metrics.success
    assert both.failure == stable_metrics.failure + canary_metrics.failure


def test_scrape_skips_endpoints_that_do_not_answer(servers: tuple[StandInServer, StandInServer]) -> None:
    stable, _ = servers
    dead = "http://127.0.0.1:9/metrics"
    not_metrics = f"http://{stable.http_address}/v2/models/{MODEL_NAME}/config"  # JSON, not Prometheus
    sample = scrape_metrics([dead, stable.metrics_url, not_metrics, "not a url"], MODEL_NAME, 2.0)
    assert sample is not None and sample.pods == 1
    assert scrape_metrics([dead], MODEL_NAME, 2.0) is None
    assert scrape_metrics([], MODEL_NAME, 2.0) is None
    other_model = scrape_metrics([stable.metrics_url], "tensorrt_llm", 2.0)
    assert other_model is not None and other_model.success == 0 and other_model.p99_us is None


def test_timeouts_and_refusals_become_results(servers: tuple[StandInServer, StandInServer]) -> None:
    _, canary = servers
    refused = run_cases("127.0.0.1:9", MODEL_NAME, "max_tokens", CASES[:2], 2.0)
    assert [r.output for r in refused] == [None, None]
    assert all(r.error and "refused" in r.error.lower() for r in refused)

    wrong_input = run_cases(canary.http_address, MODEL_NAME, "sampling_param_max_tokens", CASES[:1], 5.0)
    assert wrong_input[0].output is None and wrong_input[0].error

    canary.set_behaviour(latency_ms=1500)
    started = time.monotonic()
    timed_out = _run(canary, CASES[:4], timeout_s=0.3)
    assert time.monotonic() - started < 1.4
    assert all(r.output is None and r.error and "timed out" in r.error for r in timed_out)
    assert all(250 <= r.latency_ms < 1400 for r in timed_out)
    canary.set_behaviour()
    # The requests that timed out still hold model instances until their sleep ends.
    time.sleep(1.6)
    assert [r.output for r in _run(canary, CASES[:2])] == list(ANSWERS.values())[:2]


def test_behaviour_changes_apply_to_the_next_request(servers: tuple[StandInServer, StandInServer]) -> None:
    _, canary = servers
    for quality, expected in [(0.0, "I do not know."), (1.0, "391"), (0.0, "I do not know.")]:
        canary.set_behaviour(quality=quality)
        assert _run(canary, CASES[:1])[0].output == expected


def test_set_behaviour_rejects_out_of_range_values(servers: tuple[StandInServer, StandInServer]) -> None:
    server = servers[0]
    for kwargs in [{"latency_ms": -1.0}, {"error_rate": 1.5}, {"quality": -0.1}]:
        with pytest.raises(ValueError):
            server.set_behaviour(**kwargs)


def test_addresses_need_a_started_server() -> None:
    server = StandInServer({})
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.http_address
    server.stop()  # harmless before start


def test_stop_leaves_no_process_or_file_behind_and_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    """After a failed request Triton's exit used to strand the stub that hosts pytriton's tensor
    store (with its multiprocessing children); stop() must end them all. And tritonserver's own
    lines (its "Signal (2) received." at a stop) stay off the caller's output: pytriton would
    print them, and the demo showed them after its summary."""
    server = StandInServer(ANSWERS, "leak-check")
    server.start()
    log_path = server.log_path
    assert log_path is not None
    root = log_path.parent
    stubs = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _argv0(p).startswith(f"{root}/")]
    stubs = [p for p in stubs if _argv0(p).endswith("/triton_python_backend_stub")]
    assert len(stubs) == 8
    model_dirs = [Path(_argv(p)[1]).parent.parent for p in stubs]
    server.set_behaviour(error_rate=0.5)
    _run(server)
    server.stop()
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _argv0(p).startswith(f"{root}/")]
    assert left == []
    assert not root.exists()
    assert not any(d.exists() for d in model_dirs)
    out, err = capfd.readouterr()
    assert "Signal" not in out + err and out == "", (out, err)


def _argv(proc: Path) -> list[str]:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return [""]


def _argv0(proc: Path) -> str:
    return _argv(proc)[0]
