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

from capture_ext import wire
from capture_ext.client_support import _dumps, _env_float, _env_port, _uuid4_hex, sampled

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_SOCKET = wire.SOCKET_PATH
DEFAULT_PORT = wire.PORT
#: Largest body the HTTP fallback sends at once (well under the extension's request cap).
HTTP_BODY_BYTES = 1024 * 1024
#: Control lines sent by :func:`capture_handler` when the handler starts and returns, so the
#: extension knows when the handler is done even where the Telemetry API is unavailable (AWS's RIE).
CONTROL_KEY = wire.CONTROL_KEY

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("capture_request_id", default=None)


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
        self.port = port or _env_port("CAPTURE_PORT", DEFAULT_PORT)
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
        #: Largest fallback body; halved when the extension answers 413 (a lower request cap).
        self._http_body_bytes = HTTP_BODY_BYTES
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
        trace_id: str | None = None,
    ) -> str:
        """Send one inference record; returns its ``inference_id``. Never raises.

        ``trace_id`` defaults to the invoke's X-Ray trace header, which Lambda's runtime puts in
        ``_X_AMZN_TRACE_ID`` for each invoke, so records join their traces.
        """
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
            trace_id = trace_id or os.environ.get("_X_AMZN_TRACE_ID")
            if trace_id:
                record["trace_id"] = trace_id
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
        """POST the outbox as NDJSON; used when the Unix socket is unavailable.

        ``?partial=1`` makes every line stand alone, as on the socket: one bad line (or a control
        line) cannot get the others refused. A full store (503) keeps the lines for a later try;
        only lines the extension refused on their own merits are gone, and it counted them.
        """
        while self._outbox:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or time.monotonic() < self._http_retry_at:
                return False
            cut = len(self._outbox)
            if cut > self._http_body_bytes:
                cut = self._outbox.rfind(b"\n", 0, self._http_body_bytes) + 1 or self._outbox.find(b"\n") + 1 or cut
            body = bytes(self._outbox[:cut])
            lines = body.count(b"\n")
            status, answer = self._post(body, remaining)
            if status == 413 and lines > 1:  # the extension takes smaller requests: split, keep everything
                self._http_body_bytes = max(len(body) // 2, 1)
                continue
            if status == 0 or status == 503 or status >= 500:
                self._http_retry_at = time.monotonic() + self._backoff_s
                return False
            if 200 <= status < 300:
                accepted = answer.get("accepted") if isinstance(answer, dict) else None
                counted = accepted if type(accepted) is int and 0 <= accepted <= lines else lines
                self.stats["http"] += counted
            else:  # refused as a whole (an extension too old for ?partial, or a request it cannot read)
                self.stats["dropped"] += lines
            del self._outbox[:cut]
        return True

    def _post(self, body: bytes, timeout: float) -> tuple[int, Any]:
        """One POST; (status, parsed JSON answer), or (0, None) when the extension is unreachable."""
        try:
            if self._http is None:
                self._http = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            else:
                self._http.timeout = timeout
                if self._http.sock is not None:
                    self._http.sock.settimeout(timeout)
            self._http.request(
                "POST", f"/v1/records?{wire.PARTIAL_QUERY}", body, {"Content-Type": "application/x-ndjson"}
            )
            response = self._http.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            if self._http is not None:
                self._http.close()
                self._http = None
            return 0, None
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, None

    def handler_done(self, request_id: str | None) -> None:
        """Tell the extension the handler returned (its fallback when telemetry is unavailable)."""
        if request_id:
            self.send_line(_dumps({CONTROL_KEY: wire.CONTROL_DONE, "request_id": request_id}) + b"\n")

    def handler_started(self, request_id: str | None) -> None:
        """Tell the extension a handler-done line will follow for this request.

        Where telemetry is unavailable this is how the extension knows to wait for the handler
        instead of guessing a fixed time on an invoke where a flush is due.
        """
        if request_id:
            self.send_line(_dumps({CONTROL_KEY: wire.CONTROL_START, "request_id": request_id}) + b"\n")


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
    trace_id: str | None = None,
) -> str:
    """Capture one inference with the process-wide client; returns the ``inference_id``. Never raises."""
    try:
        client = get_client()
    except Exception:  # fail-open, even if the environment is unusable
        logger.debug("capture client could not be created", exc_info=True)
        return inference_id or _uuid4_hex()
    return client.capture(
        input,
        output,
        inference_id=inference_id,
        request_id=request_id,
        model=model,
        latency_ms=latency_ms,
        metadata=metadata,
        timestamp=timestamp,
        trace_id=trace_id,
    )


def capture_handler(handler: F) -> F:
    """Decorate a Lambda handler so captures inside it carry ``context.aws_request_id``."""

    @functools.wraps(handler)
    def wrapper(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
        request_id = getattr(context, "aws_request_id", None)
        token = _request_id.set(request_id)
        try:
            get_client().handler_started(request_id)
        except Exception:  # fail-open
            logger.debug("capture handler_started failed", exc_info=True)
        try:
            return handler(event, context, *args, **kwargs)
        finally:
            _request_id.reset(token)
            try:
                get_client().handler_done(request_id)
            except Exception:  # fail-open
                logger.debug("capture handler_done failed", exc_info=True)

    return wrapper  # type: ignore[return-value]
