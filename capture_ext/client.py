"""Function-side capture client: hands records to the local capture extension in microseconds.

This module runs inside the user's inference function, so it imports only the standard library
(``orjson`` is used when it happens to be installed) and it is **fail-open**: no call ever raises
into the handler or blocks it for more than ``CAPTURE_CLIENT_TIMEOUT_MS`` (default 5 ms), even
when the extension is absent, dead, frozen or slow.

Transport: NDJSON lines over the extension's Unix stream socket (``CAPTURE_SOCKET``), written
with non-blocking sends; bytes the kernel cannot take right now stay in a bounded outbox and go
first on the next call, so the stream is never cut mid-record. When the socket is unavailable the
client falls back to the HTTP endpoint (``CAPTURE_PORT``); when both fail it keeps records in the
outbox and retries the connection with backoff, so records captured while the extension restarts
are delivered once it is back.

Example::

    from capture_ext.client import capture, capture_handler

    @capture_handler
    def handler(event, context):
        answer = model(event["question"])
        capture(input=event, output=answer, model={"name": "distilbert-squad", "version": "1"})
        return answer
"""

from __future__ import annotations

import contextvars
import errno
import functools
import hashlib
import http.client
import json
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

try:  # optional accelerator: 20x faster serialisation when present
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised when orjson is absent
    _orjson = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_SOCKET = "/tmp/capture-ext.sock"
DEFAULT_PORT = 9009
#: Control line sent by :func:`capture_handler` when the handler returns, so the extension knows
#: the handler is done even where the Telemetry API is unavailable (AWS's RIE).
CONTROL_KEY = "_capture_ext"

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("capture_request_id", default=None)


def _default(value: Any) -> Any:
    """Make numpy/torch scalars and arrays, sets and other objects JSON-serialisable."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


if _orjson is not None:
    _OPTS = _orjson.OPT_SERIALIZE_NUMPY | _orjson.OPT_NON_STR_KEYS

    def _dumps(obj: Any) -> bytes:
        return _orjson.dumps(obj, default=_default, option=_OPTS)

else:  # pragma: no cover - exercised when orjson is absent

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, default=_default, separators=(",", ":"), ensure_ascii=False).encode()


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        logger.warning("capture client: %s=%r is not a number; using %s", name, os.environ.get(name), default)
        return default


def _uuid4_hex() -> str:
    """``uuid.uuid4().hex`` in a third of the time (it is on every capture call's path)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


def sampled(inference_id: str, rate: float) -> bool:
    """Deterministic sampling: the same ``inference_id`` gets the same decision everywhere."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(inference_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2**64


class CaptureClient:
    """A connection to the local capture extension; thread-safe, fail-open, cheap to call."""

    def __init__(
        self,
        socket_path: str | None = None,
        port: int | None = None,
        sample_rate: float | None = None,
        timeout_ms: float | None = None,
        max_outbox_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.socket_path = socket_path or os.environ.get("CAPTURE_SOCKET", DEFAULT_SOCKET)
        self.port = port or int(_env_float("CAPTURE_PORT", DEFAULT_PORT))
        rate = _env_float("CAPTURE_SAMPLE_RATE", 1.0) if sample_rate is None else sample_rate
        self.sample_rate = min(max(rate, 0.0), 1.0)
        timeout = _env_float("CAPTURE_CLIENT_TIMEOUT_MS", 5.0) if timeout_ms is None else timeout_ms
        self.timeout_s = max(timeout, 0.0) / 1000.0
        self.max_outbox_bytes = max_outbox_bytes
        self._sock: socket.socket | None = None
        self._outbox = bytearray()
        #: Bytes at the head of the outbox already handed to the socket (a partly sent line).
        self._sent = 0
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._backoff_s = 0.05
        self._http: http.client.HTTPConnection | None = None
        self._http_retry_at = 0.0
        #: What happened to the records this process tried to capture (for tests and debugging).
        self.stats: dict[str, int] = {"sent": 0, "http": 0, "unsampled": 0, "dropped": 0, "errors": 0}

    # -- public ---------------------------------------------------------------------------
    def capture(
        self,
        input: Any = None,
        output: Any = None,
        *,
        inference_id: str | None = None,
        request_id: str | None = None,
        model: str | dict[str, Any] | None = None,
        latency_ms: float | None = None,
        metadata: dict[str, Any] | None = None,
        timestamp: str | int | float | None = None,
    ) -> str:
        """Send one inference record; returns its ``inference_id``. Never raises."""
        inference_id = inference_id or _uuid4_hex()
        try:
            if not sampled(inference_id, self.sample_rate):
                self.stats["unsampled"] += 1
                return inference_id
            record: dict[str, Any] = {
                "inference_id": inference_id,
                "timestamp": timestamp or time.time_ns() // 1_000_000,
            }
            if input is not None:
                record["input"] = input
            if output is not None:
                record["output"] = output
            request_id = request_id or _request_id.get()
            if request_id:
                record["request_id"] = request_id
            if model is not None:
                record["model"] = model
            if latency_ms is not None:
                record["latency_ms"] = latency_ms
            if metadata:
                record["metadata"] = metadata
            self.send_line(_dumps(record) + b"\n")
        except Exception:  # fail-open: capture must never break inference
            self.stats["errors"] += 1
            logger.debug("capture failed", exc_info=True)
        return inference_id

    def send_line(self, line: bytes) -> bool:
        """Queue one NDJSON line and push as much as the socket takes within the time budget."""
        with self._lock:
            sock = self._sock
            if sock is not None and not self._outbox:
                # The common case, kept free of copies: nothing queued, so the line goes straight
                # to the kernel; only what it cannot take now enters the outbox.
                try:
                    sent = sock.send(line)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self._outbox += line
                    self._drop_socket()
                    self._sent = 0
                    return False
                if sent == len(line):
                    self.stats["sent"] += 1
                    return True
                self._outbox += line
                self._sent = sent
                return self._pump(time.monotonic() + self.timeout_s)
            if len(self._outbox) + len(line) > self.max_outbox_bytes:
                self.stats["dropped"] += 1
                return False
            self._outbox += line
            return self._pump(time.monotonic() + self.timeout_s)

    def flush(self, timeout_ms: float | None = None) -> bool:
        """Try to push queued bytes out (called by :func:`capture_handler` when the handler ends)."""
        budget = self.timeout_s if timeout_ms is None else timeout_ms / 1000.0
        with self._lock:
            return self._pump(time.monotonic() + budget)

    def close(self) -> None:
        with self._lock:
            self._drop_socket()
            if self._http is not None:
                self._http.close()
                self._http = None

    # -- transport ------------------------------------------------------------------------
    def _pump(self, deadline: float) -> bool:
        if not self._outbox:
            return True
        sock = self._connected_socket()
        if sock is None:
            return self._http_fallback(deadline)
        view = memoryview(self._outbox)
        try:
            while self._sent < len(self._outbox):
                try:
                    self._sent += sock.send(view[self._sent :])
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    select.select([], [sock], [], remaining)
                except OSError:
                    # The extension went away mid-stream: it discards a line cut short, so the
                    # unfinished line goes again, whole, over the next connection.
                    self._drop_socket()
                    self._sent = 0
                    return False
        finally:
            view.release()
            self._forget_sent_lines()
        return True

    def _forget_sent_lines(self) -> None:
        """Drop the complete lines the kernel has taken; keep a partly sent line for a resend."""
        cut = self._outbox.rfind(b"\n", 0, self._sent) + 1
        if cut:
            self.stats["sent"] += self._outbox.count(b"\n", 0, cut)
            del self._outbox[:cut]
            self._sent -= cut

    def _connected_socket(self) -> socket.socket | None:
        if self._sock is not None:
            return self._sock
        now = time.monotonic()
        if now < self._retry_at:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN):
                logger.debug("capture socket connect failed: %s", exc)
            self._schedule_retry(now)
            return None
        self._sock = sock
        self._backoff_s = 0.05
        return sock

    def _schedule_retry(self, now: float) -> None:
        self._retry_at = now + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, 2.0)

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._schedule_retry(time.monotonic())

    def _http_fallback(self, deadline: float) -> bool:
        """POST the outbox as NDJSON; used when the Unix socket is unavailable."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or time.monotonic() < self._http_retry_at:
            return False
        body = bytes(self._outbox)
        try:
            if self._http is None:
                self._http = http.client.HTTPConnection("127.0.0.1", self.port, timeout=remaining)
            else:
                self._http.timeout = remaining
                if self._http.sock is not None:
                    self._http.sock.settimeout(remaining)
            self._http.request("POST", "/v1/records", body, {"Content-Type": "application/x-ndjson"})
            response = self._http.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            if self._http is not None:
                self._http.close()
                self._http = None
            self._http_retry_at = time.monotonic() + self._backoff_s
            return False
        if response.status == 202:
            self.stats["http"] += body.count(b"\n")
            del self._outbox[: len(body)]
            return True
        # 4xx: the extension refused these lines for good (it logged why); do not resend them.
        self.stats["dropped"] += body.count(b"\n")
        del self._outbox[: len(body)]
        return False

    def handler_done(self, request_id: str | None) -> None:
        """Tell the extension the handler returned (its fallback when telemetry is unavailable)."""
        if request_id:
            self.send_line(_dumps({CONTROL_KEY: "done", "request_id": request_id}) + b"\n")


_client: CaptureClient | None = None
_client_lock = threading.Lock()


def get_client() -> CaptureClient:
    """The process-wide client, created on first use from the environment."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = CaptureClient()
    return _client


def capture(
    input: Any = None,
    output: Any = None,
    *,
    inference_id: str | None = None,
    request_id: str | None = None,
    model: str | dict[str, Any] | None = None,
    latency_ms: float | None = None,
    metadata: dict[str, Any] | None = None,
    timestamp: str | int | float | None = None,
) -> str:
    """Capture one inference with the process-wide client; returns the ``inference_id``."""
    return get_client().capture(
        input,
        output,
        inference_id=inference_id,
        request_id=request_id,
        model=model,
        latency_ms=latency_ms,
        metadata=metadata,
        timestamp=timestamp,
    )


def capture_handler(handler: F) -> F:
    """Decorate a Lambda handler so captures inside it carry ``context.aws_request_id``."""

    @functools.wraps(handler)
    def wrapper(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
        request_id = getattr(context, "aws_request_id", None)
        token = _request_id.set(request_id)
        try:
            return handler(event, context, *args, **kwargs)
        finally:
            _request_id.reset(token)
            try:
                get_client().handler_done(request_id)
            except Exception:  # fail-open
                logger.debug("capture handler_done failed", exc_info=True)

    return wrapper  # type: ignore[return-value]
