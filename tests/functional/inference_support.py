"""What the QA function's tests share: a Unix-socket listener standing in for the extension's ingest
(it reads the same NDJSON bytes), fixtures pointing the capture client at it, the handler on the
wired tiny model, and Lambda-shaped events and contexts.

Fixtures are registered under their plain names (``app``, ``listener``, ``capture_env``) by importing
the ``*_fixture`` functions into a test module.
"""

from __future__ import annotations

import base64
import json
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from awslambdaric.lambda_context import LambdaContext

import capture_ext.client as capture_client
from capture_ext.testing.net import free_port
from tests.qa_models import tiny_model

EVENTS = Path(__file__).resolve().parents[2] / "events"
QUESTION = "Which city is the capital of France?"
CONTEXT = "Paris is the capital and largest city of France. It lies on the river Seine."
#: What the wired model must answer for CONTEXT: from its first "paris" to the next "france".
EXPECTED = CONTEXT[: CONTEXT.index("France") + len("France")]


class SocketListener:
    """Accepts connections on a Unix socket and queues every NDJSON line received."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen()
        self._server.settimeout(0.05)  # how long close() may wait for the accept loop to notice
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            for line in stream:
                self.lines.put(json.loads(line))

    def records(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The next ``count`` capture records (control lines are skipped)."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if capture_client.CONTROL_KEY not in line:
                found.append(line)
        return found

    def drain(self, wait: float = 0.3) -> list[dict[str, Any]]:
        """Every line that arrives within ``wait`` seconds."""
        time.sleep(wait)
        out = []
        while not self.lines.empty():
            out.append(self.lines.get_nowait())
        return out

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=2)


@pytest.fixture(name="capture_env")
def capture_env_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh process-wide capture client pointed at ``tmp_path/capture.sock``, nothing else."""
    sock_path = tmp_path / "capture.sock"
    monkeypatch.setenv("CAPTURE_SOCKET", str(sock_path))
    # A port nothing listens on, so the HTTP fallback cannot reach another test's extension.
    monkeypatch.setenv("CAPTURE_PORT", str(free_port()))
    monkeypatch.delenv("CAPTURE_SAMPLE_RATE", raising=False)
    monkeypatch.setattr(capture_client, "_client", None)
    yield sock_path
    if capture_client._client is not None:
        capture_client._client.close()


@pytest.fixture(name="listener")
def listener_fixture(capture_env: Path) -> Iterator[SocketListener]:
    server = SocketListener(capture_env)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(name="app")
def app_fixture(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The handler module with a model holder of its own, pointed at the wired tiny model."""
    monkeypatch.setenv("MODEL_DIR", str(tiny_model("wired")))
    from inference_fn import app as module

    monkeypatch.setattr(module, "MODEL", module.ModelHolder())
    return module


def lambda_context() -> LambdaContext:
    return LambdaContext(
        str(uuid.uuid4()),
        None,
        None,
        int(time.time() * 1000) + 30_000,
        "arn:aws:lambda:us-east-1:123456789012:function:nlp-qa",
    )


def api_event(body: str | None, *, b64: bool = False) -> dict[str, Any]:
    if b64 and body is not None:
        body = base64.b64encode(body.encode()).decode()
    return {
        "resource": "/nlp-qa",
        "path": "/nlp-qa",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "requestContext": {"httpMethod": "POST", "stage": "Prod", "requestId": "r-1"},
        "body": body,
        "isBase64Encoded": b64,
    }
