"""Where records enter the extension: validation, plugin hooks, enrichment and buffering.

Both transports end here: the HTTP endpoint (any runtime) and the Unix socket (the Python
client's fast path). HTTP requests are all-or-nothing; socket lines are independent, because a
fire-and-forget sender cannot be told that one of its lines was refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

import orjson

from capture_ext.core.buffer import RecordBuffer
from capture_ext.core.http11 import Request, Response
from capture_ext.core.ledger import Ledger
from capture_ext.core.records import Enricher, RecordError, normalize, parse_body
from capture_ext.core.redact import Redactor
from capture_ext.core.store import Store

logger = logging.getLogger(__name__)

CONTROL_KEY = "_capture_ext"
PrepareHook = Callable[[dict[str, Any]], None]


def _json(status: int, payload: dict[str, Any]) -> Response:
    return Response(status, orjson.dumps(payload))


class Ingest:
    """Accepts records into the store (memory and spool), counting each one.

    Order for every record: redaction, ``capture_prepare_record`` hooks, enrichment, one
    serialisation (the bytes are both the spool line and the memory cost), then the store. The
    HTTP answer is sent only after the store returned, i.e. after the spool ``write``.
    """

    def __init__(
        self,
        buffer: RecordBuffer | Store,
        ledger: Ledger,
        enricher: Enricher,
        max_record_bytes: int,
        prepare: PrepareHook | None = None,
        on_handler_done: Callable[[str], None] | None = None,
        health: Callable[[], dict[str, Any]] | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.store = buffer if isinstance(buffer, Store) else Store(buffer, buffer.budget)
        self.buffer = self.store.buffer
        self.redactor = redactor if redactor else None
        self.ledger = ledger
        self.enricher = enricher
        self.max_record_bytes = max_record_bytes
        self.prepare = prepare
        self.on_handler_done = on_handler_done
        self.health = health
        self._warnings = 0

    # -- the shared path -----------------------------------------------------------------------
    def accept(self, records: list[dict[str, Any]], whole: bool = False) -> int:
        """Store already-normalised records; returns how many were kept.

        ``whole``: a record that cannot be serialised rejects the whole call (RecordError) before
        anything is counted or kept; otherwise it alone is rejected.
        """
        items: list[tuple[dict[str, Any], bytes]] = []
        hook_drops = 0
        for index, record in enumerate(records):
            if self.redactor is not None:
                self.redactor.apply(record)
            if self.prepare is not None:
                try:
                    self.prepare(record)
                except Exception as exc:
                    hook_drops += 1
                    logger.warning("capture_prepare_record raised %s; record dropped", type(exc).__name__)
                    continue
            self.enricher.enrich(record)
            try:
                data = orjson.dumps(record, default=str)
            except (orjson.JSONEncodeError, TypeError) as exc:
                where = f"record {index}: " if len(records) > 1 else ""
                if whole:
                    raise RecordError(f"{where}cannot be stored as JSON ({exc})") from None
                self.ledger.rejected["invalid"] += 1
                continue
            items.append((record, data))
        self.ledger.received += len(items) + hook_drops
        if hook_drops:
            self.ledger.dropped["prepare_error"] += hook_drops
        kept_count, reason = self.store.add(items) if items else (0, "")
        if kept_count < len(items):
            self.ledger.dropped[reason] += len(items) - kept_count
        return kept_count

    # -- HTTP ----------------------------------------------------------------------------------
    async def handle_http(self, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        if path == "/v1/records":
            if request.method != "POST":
                return Response(405, orjson.dumps({"error": "use POST /v1/records"}), headers=[("allow", "POST")])
            return self._post_records(request)
        if path == "/v1/health":
            if request.method not in {"GET", "HEAD"}:
                return Response(405, orjson.dumps({"error": "use GET /v1/health"}), headers=[("allow", "GET")])
            return _json(200, self.health() if self.health else {"status": "ok"})
        return _json(404, {"error": f"no route {path!r}: use POST /v1/records or GET /v1/health"})

    def _post_records(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "application/json")
        try:
            raw = parse_body(request.body, content_type, self.max_record_bytes)
            records = [normalize(item, index if len(raw) > 1 else None) for index, item in enumerate(raw)]
            accepted = self.accept(records, whole=True)
        except RecordError as exc:
            self.ledger.rejected[_reason(exc.status)] += 1
            return _json(exc.status, {"error": str(exc)})
        if accepted < len(records):
            full = "spool" if self.store.durable else "buffer"
            return _json(
                503,
                {
                    "error": f"capture {full} is full; records were not kept",
                    "accepted": accepted,
                    "dropped": len(records) - accepted,
                },
            )
        return _json(202, {"accepted": accepted})

    # -- Unix socket ---------------------------------------------------------------------------
    def accept_line(self, line: bytes) -> None:
        """One NDJSON line from the fast path: a record or a control message."""
        record = self.parse_line(line)
        if record is not None:
            self.accept([record])

    def parse_line(self, line: bytes) -> dict[str, Any] | None:
        """A normalised record, or None for a control message or a refused line (counted)."""
        if len(line) > self.max_record_bytes:
            self.ledger.rejected["too_large"] += 1
            self._warn("socket record of %d bytes is over CAPTURE_MAX_RECORD_BYTES; refused", len(line))
            return None
        try:
            raw = orjson.loads(line)
            if isinstance(raw, dict) and CONTROL_KEY in raw:
                self._control(raw)
                return None
            if not isinstance(raw, dict):
                raise RecordError(f"expected a JSON object, got {type(raw).__name__}")
            return normalize(raw)
        except (orjson.JSONDecodeError, RecordError) as exc:
            self.ledger.rejected["invalid"] += 1
            self._warn("socket record refused: %s", exc)
            return None

    def _warn(self, message: str, *args: Any) -> None:
        """Log the first refusals, then one in a thousand: hostile input must not flood the logs."""
        self._warnings += 1
        if self._warnings <= 10 or self._warnings % 1000 == 0:
            logger.warning("%s (%d refused so far)", message % args, self._warnings)

    def _control(self, message: dict[str, Any]) -> None:
        done = message.get(CONTROL_KEY) == "done" and isinstance(message.get("request_id"), str)
        if done and self.on_handler_done is not None:
            self.on_handler_done(message["request_id"])


def _reason(status: int) -> str:
    return {413: "too_large", 415: "unsupported_media_type"}.get(status, "invalid")


class _LineProtocol(asyncio.Protocol):
    """Splits a byte stream into lines without copying more than needed."""

    def __init__(self, ingest: Ingest, limit: int) -> None:
        self.ingest = ingest
        self.limit = limit
        self.pending = bytearray()
        self.discarding = False

    def data_received(self, data: bytes) -> None:
        self.pending += data
        start = 0
        records: list[dict[str, Any]] = []
        while True:
            end = self.pending.find(b"\n", start)
            if end < 0:
                break
            if self.discarding:
                self.discarding = False
            elif end > start:
                record = self.ingest.parse_line(bytes(self.pending[start:end]))
                if record is not None:
                    records.append(record)
            start = end + 1
        del self.pending[:start]
        if records:  # one spool write per read, not per line
            self.ingest.accept(records)
        if len(self.pending) > self.limit:
            # An endless line: refuse it and skip to the next newline instead of growing forever.
            self.ingest.ledger.rejected["too_large"] += 1
            self.pending.clear()
            self.discarding = True

    def eof_received(self) -> bool | None:
        if self.pending and not self.discarding:
            self.ingest.ledger.rejected["truncated"] += 1
        self.pending.clear()
        return None


async def start_socket_server(ingest: Ingest, path: str) -> asyncio.AbstractServer:
    """Listen on a Unix stream socket readable and writable by this user only."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    loop = asyncio.get_running_loop()
    old_umask = os.umask(0o177)
    try:
        server = await loop.create_unix_server(lambda: _LineProtocol(ingest, ingest.max_record_bytes + 1), path)
    finally:
        os.umask(old_umask)
    return server
