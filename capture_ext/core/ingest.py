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
from typing import TYPE_CHECKING, Any

import orjson

from capture_ext.core.http11 import Request, Response
from capture_ext.core.ledger import Ledger
from capture_ext.core.records import Enricher, RecordError, loads_exact, normalize, parse_body
from capture_ext.core.redact import Redactor
from capture_ext.core.store import Store
from capture_ext.wire import CONTROL_DONE, CONTROL_KEY, CONTROL_START, PARTIAL_QUERY

if TYPE_CHECKING:
    from capture_ext.core.sink_setup import PrepareHook

logger = logging.getLogger(__name__)

#: Records are left in the kernel's socket buffer during the handler only while an invoke brings
#: less than this (Linux gives a Unix stream socket about 208 KiB): a function that captures more
#: would otherwise find the buffer full and its capture calls waiting.
HOLD_MAX_BYTES = 64 * 1024


def _json(status: int, payload: dict[str, Any]) -> Response:
    return Response(status, orjson.dumps(payload))


class _HookRaised(Exception):
    """A ``capture_prepare_record`` hook raised: the record is dropped and counted as such."""


class Ingest:
    """Accepts records into the store (memory and spool), counting each one.

    Order for every record: redaction, ``capture_prepare_record`` hooks, enrichment, one
    serialisation (the bytes are both the spool line and the memory cost), then the store. The
    HTTP answer is sent only after the store returned, i.e. after the spool ``write``.
    """

    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        enricher: Enricher,
        max_record_bytes: int,
        prepare: PrepareHook | None = None,
        on_handler_done: Callable[[str], None] | None = None,
        health: Callable[[], dict[str, Any]] | None = None,
        redactor: Redactor | None = None,
        on_handler_started: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.buffer = store.buffer
        self.redactor = redactor if redactor else None
        self.ledger = ledger
        self.enricher = enricher
        self.max_record_bytes = max_record_bytes
        self.prepare = prepare
        self.on_handler_done = on_handler_done
        self.on_handler_started = on_handler_started
        self.health = health
        self._warnings = 0
        #: Open socket connections, so that reading them can be held while the handler runs.
        self.connections: set[_LineProtocol] = set()
        self.held = False
        #: Reading was released since the last hold(): what the kernel held may not be read yet.
        self.unread = False
        #: Bytes read from the socket since the last INVOKE's hold() (about one invoke's worth).
        self.bytes_read = 0

    # -- holding the socket while the handler runs -----------------------------------------------
    def hold(self) -> bool:
        """Leave socket records in the kernel until :meth:`release` (the handler is running).

        Nothing is lost or acknowledged early: a line is acknowledged when it is read, and it is
        read (and spooled) right after the runtime is done. Not held when the last invoke brought
        ``HOLD_MAX_BYTES`` or more, so a function that captures a lot never finds the socket full.
        """
        recent, self.bytes_read = self.bytes_read, 0
        if self.held or recent >= HOLD_MAX_BYTES:
            return False
        self.held = True
        self.unread = False
        for connection in self.connections:
            connection.pause()
        return True

    def release(self) -> None:
        """Read the socket again (the runtime is done, or its end cannot be waited for)."""
        if not self.held:
            return
        self.held = False
        self.unread = True
        for connection in self.connections:
            connection.resume()

    # -- the shared path -----------------------------------------------------------------------
    def accept(self, records: list[dict[str, Any]], whole: bool = False, answered: bool = False) -> int:
        """Store already-normalised records; returns how many were kept.

        Every record ends up counted: kept (``received``), dropped by a hook (``prepare_error``)
        or by a full store, or refused (``rejected``). A record that cannot be redacted, enriched
        or serialised is refused alone; ``whole`` (one HTTP request) refuses the whole call
        instead, with a RecordError naming the record, before anything is counted or kept.

        ``answered`` (HTTP): a full store refuses the records with a 503 the client sees, so they
        are ``rejected`` (not acknowledged), not received and dropped.
        """
        return self._accept(records, whole, answered)[0]

    def _accept(self, records: list[dict[str, Any]], whole: bool, answered: bool) -> tuple[int, int]:
        """:meth:`accept`, also saying how many records a full store refused.

        An HTTP answer is a 503 only for those: records a hook dropped or that could not be
        stored are gone whatever the client does, and a retry would duplicate the ones kept.
        """
        items: list[tuple[dict[str, Any], bytes]] = []
        hook_drops = 0
        for index, record in enumerate(records):
            try:
                data = self._ready(record)
            except _HookRaised:
                hook_drops += 1
                continue
            except Exception as exc:  # this record's problem alone, never the connection's
                where = f"record {index}: " if len(records) > 1 else ""
                message = f"{where}cannot be stored ({type(exc).__name__}: {str(exc)[:120]})"
                if whole:
                    raise RecordError(message) from None
                self.ledger.rejected["invalid"] += 1
                self._warn("socket record refused: %s", message)
                continue
            items.append((record, data))
        kept_count, reason = self.store.add(items) if items else (0, "")
        refused = len(items) - kept_count
        if answered and refused:
            self.ledger.rejected[reason] += refused
            self.ledger.received += kept_count + hook_drops
        else:
            self.ledger.received += len(items) + hook_drops
            if refused:
                self.ledger.dropped[reason] += refused
        if hook_drops:
            self.ledger.dropped["prepare_error"] += hook_drops
        return kept_count, refused

    def _ready(self, record: dict[str, Any]) -> bytes:
        """Redact, run the hooks, enrich and serialise one record: the bytes the sinks get."""
        if self.redactor is not None:
            self.redactor.apply(record)
        if self.prepare is not None:
            try:
                self.prepare(record)
            except Exception as exc:
                logger.warning("capture_prepare_record raised %s; record dropped", type(exc).__name__)
                raise _HookRaised from None
        self.enricher.enrich(record)
        return orjson.dumps(record, default=str)

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
            if self.held:  # count every line sent before this request: read the held ones first
                self.release()
                for _ in range(2):
                    await asyncio.sleep(0)
            return _json(200, self.health() if self.health else {"status": "ok"})
        return _json(404, {"error": f"no route {path!r}: use POST /v1/records or GET /v1/health"})

    def _post_records(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "application/json")
        if _query_flag(request.path, PARTIAL_QUERY.split("=", 1)[0]):
            return self._post_lines(request.body)
        try:
            parsed = parse_body(request.body, content_type, self.max_record_bytes)
            raw = [item for item in parsed if not self._is_control(item)]
            records = [normalize(item, index if len(raw) > 1 else None) for index, item in enumerate(raw)]
            accepted, refused = self._accept(records, whole=True, answered=True) if records else (0, 0)
        except RecordError as exc:
            self.ledger.rejected[_reason(exc.status)] += 1
            return _json(exc.status, {"error": str(exc)})
        except Exception as exc:  # a bug must cost this request a clear answer, not a 500
            logger.exception("records request refused")
            self.ledger.rejected["invalid"] += 1
            return _json(400, {"error": f"records could not be read ({type(exc).__name__})"})
        if refused:
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

    def _post_lines(self, body: bytes) -> Response:
        """``?partial=1``: NDJSON whose lines stand alone, as on the socket (the client's fallback).

        Valid lines are kept, invalid ones refused and counted, control lines obeyed; the answer
        is 202 with the counts, or 503 when the store is full (then nothing was kept, and the
        client keeps the lines for a later try).
        """
        rejected_before = sum(self.ledger.rejected.values())
        records = [record for line in body.split(b"\n") if line.strip() for record in [self.parse_line(line)] if record]
        accepted, full_store = self._accept(records, whole=False, answered=True) if records else (0, 0)
        if full_store:  # the store is all or nothing: nothing of this request was kept
            full = "spool" if self.store.durable else "buffer"
            return _json(503, {"error": f"capture {full} is full; records were not kept", "accepted": 0})
        refused = sum(self.ledger.rejected.values()) - rejected_before
        return _json(202, {"accepted": accepted, "rejected": refused})

    # -- Unix socket ---------------------------------------------------------------------------
    def parse_line(self, line: bytes) -> dict[str, Any] | None:
        """A normalised record, or None for a control message or a refused line (counted)."""
        if len(line) > self.max_record_bytes:
            self.ledger.rejected["too_large"] += 1
            self._warn("socket record of %d bytes is over CAPTURE_MAX_RECORD_BYTES; refused", len(line))
            return None
        try:
            raw = loads_exact(line)
            if self._is_control(raw):
                return None
            if not isinstance(raw, dict):
                raise RecordError(f"expected a JSON object, got {type(raw).__name__}")
            return normalize(raw)
        except (orjson.JSONDecodeError, RecordError) as exc:
            self.ledger.rejected["invalid"] += 1
            self._warn("socket record refused: %s", exc)
            return None
        except Exception as exc:  # never let one line cost the connection (and its other lines)
            self.ledger.rejected["invalid"] += 1
            self._warn("socket record refused: could not be read (%s)", type(exc).__name__)
            return None

    def _warn(self, message: str, *args: Any) -> None:
        """Log the first refusals, then one in a thousand: hostile input must not flood the logs."""
        self._warnings += 1
        if self._warnings <= 10 or self._warnings % 1000 == 0:
            logger.warning("%s (%d refused so far)", message % args, self._warnings)

    def _is_control(self, item: Any) -> bool:
        """Obey a control line (``{"_capture_ext": "start"|"done", "request_id": ...}``); True if it was one."""
        if not isinstance(item, dict) or CONTROL_KEY not in item:
            return False
        request_id = item.get("request_id")
        if isinstance(request_id, str) and request_id:
            kind = item.get(CONTROL_KEY)
            if kind == CONTROL_DONE and self.on_handler_done is not None:
                self.on_handler_done(request_id)
            elif kind == CONTROL_START and self.on_handler_started is not None:
                self.on_handler_started(request_id)
        return True


def _query_flag(path: str, name: str) -> bool:
    _, _, query = path.partition("?")
    return any(part in (name, f"{name}=1", f"{name}=true") for part in query.split("&"))


def _reason(status: int) -> str:
    return {413: "too_large", 415: "unsupported_media_type"}.get(status, "invalid")


class _LineProtocol(asyncio.Protocol):
    """Splits a byte stream into lines without copying more than needed."""

    def __init__(self, ingest: Ingest, limit: int) -> None:
        self.ingest = ingest
        self.limit = limit
        self.pending = bytearray()
        self.discarding = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ingest.connections.add(self)
        if self.ingest.held:
            self.pause()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ingest.connections.discard(self)

    def pause(self) -> None:
        if self.transport is not None and self.transport.is_reading():
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing() and not self.transport.is_reading():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        ingest = self.ingest
        ingest.bytes_read += len(data)
        ingest.unread = False
        records: list[dict[str, Any]] = []
        if b"\n" not in data:  # the middle of a long line: keep it, nothing to parse yet
            self.pending += data
        else:
            if self.pending:  # the start of this read's first line came in an earlier read
                self.pending += data
                data = bytes(self.pending)
                self.pending.clear()
            # One split per read (not a find and two copies per line): a read brings every line
            # the handler sent since the last one, and the last piece is an incomplete line.
            lines = data.split(b"\n")
            self.pending += lines.pop()
            parse_line = ingest.parse_line
            for line in lines:
                if self.discarding:  # the rest of a line refused as too long
                    self.discarding = False
                elif line:
                    record = parse_line(line)
                    if record is not None:
                        records.append(record)
        if records:  # one spool write per read, not per line
            try:
                self.ingest.accept(records)
            except Exception:  # a bug in the core: count the records, keep the connection
                logger.exception("socket: %d records could not be stored", len(records))
                self.ingest.ledger.rejected["internal_error"] += len(records)
        if len(self.pending) > self.limit:
            # An endless line: refuse it (once) and skip to the next newline instead of growing.
            if not self.discarding:
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
