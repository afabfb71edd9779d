"""A stand-in for a multi-node leader's ``trtllm-serve``: its OpenAI-compatible HTTP API on loopback.

Serves what the operator's analysis uses of it: ``GET /health``, ``GET /v1/models`` (the model it
serves) and ``POST /v1/completions`` (``prompt``, ``max_tokens`` -> ``choices[0].text``), answering
with ``answer(prompt)`` after ``delay_s``. Not a model: a test decides what is right or wrong.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class OpenAIStandIn:
    """What the stand-in answers, changeable while it runs, and what it was asked."""

    answer: Callable[[str], str]
    model: str = "/models/deepseek/r1"
    delay_s: float = 0.0
    prompts: list[str] = field(default_factory=list)
    address: str = ""


def _handler(state: OpenAIStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _json(self, code: int, body: Any) -> None:
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._json(200, {})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": state.model, "object": "model"}]})
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path != "/v1/completions":
                self._json(404, {"error": "not found"})
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            if body.get("model") != state.model:
                self._json(404, {"error": f"model {body.get('model')!r} not found"})
                return
            state.prompts.append(str(body["prompt"]))
            time.sleep(state.delay_s)
            self._json(
                200,
                {
                    "object": "text_completion",
                    "choices": [{"index": 0, "text": state.answer(body["prompt"])}],
                },
            )

    return Handler


@contextmanager
def openai_standin(answer: Callable[[str], str], **kwargs: Any) -> Iterator[OpenAIStandIn]:
    """Run a stand-in on 127.0.0.1 (a free port) for the duration of the block."""
    state = OpenAIStandIn(answer=answer, **kwargs)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.address = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
