"""``cloudwatch``: one JSON log event per record via PutLogEvents.

Group ``CAPTURE_LOG_GROUP``, stream ``YYYY/MM/DD/<function>/<environment_id>`` (the day of
each record's ``captured_at``). Every request keeps the documented PutLogEvents limits, so a
large or odd batch is split instead of rejected:

- at most 10,000 events and 1,048,576 bytes, counting UTF-8 message bytes + 26 per event;
- events in chronological order, spanning less than 24 hours;
- each event at most 256 KiB including its 26 bytes (the long-standing limit; newer accounts
  accept 1 MiB, but 256 KiB is accepted everywhere); bigger records are replaced by a visibly
  truncated stand-in (``"truncated": true``), never dropped;
- timestamps more than 14 days old or 2 hours ahead would be rejected, so they are clamped into
  the window (the message keeps the true ``captured_at``).

Events CloudWatch still rejects (``rejectedLogEventsInfo``) are counted and reported as failed
ids, so the dispatcher retries them and counts them as dropped if they never get in.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from capture_ext.hookspecs import hookimpl
from capture_ext.models import Batch, Outcome, Record, SinkContext, SinkRegistrar, WriteResult
from capture_ext.sinks._aws import AwsSink, ErrorReporter, LazyClient, error_code
from capture_ext.sinks._layout import captured_at, epoch_ms, stream_name
from capture_ext.sinks._serialize import dumps, fit
from capture_ext.variables import EnvConfig, boolean, setting

NAME = "cloudwatch"
MAX_EVENTS_PER_REQUEST = 10_000
MAX_REQUEST_BYTES = 1_048_576
EVENT_OVERHEAD_BYTES = 26
MAX_EVENT_BYTES = 256 * 1024
MAX_MESSAGE_BYTES = MAX_EVENT_BYTES - EVENT_OVERHEAD_BYTES
#: A request must span less than 24 h from its first to its last event.
MAX_SPAN_MS = 24 * 3600 * 1000 - 1
MAX_AGE_MS = 14 * 24 * 3600 * 1000
MAX_AHEAD_MS = 2 * 3600 * 1000
#: Clamped timestamps stay this far inside the accepted window, for clock skew.
CLAMP_MARGIN_MS = 5 * 60 * 1000


@dataclass(frozen=True, slots=True)
class CloudWatchConfig(EnvConfig):
    """The ``cloudwatch`` sink's settings."""

    log_group: str = setting(
        "CAPTURE_LOG_GROUP",
        "",
        "CloudWatch Logs group the `cloudwatch` sink writes to.",
        default_doc="`/aws/capture-ext/<function>`",
    )
    create_group: bool = setting(
        "CAPTURE_LOG_GROUP_CREATE",
        "1",
        "`1`: create the log group when it is missing (needs `logs:CreateLogGroup`).",
        boolean,
    )

    def group_for(self, function_name: str) -> str:
        """The configured group, or the default one of ``function_name``."""
        return self.log_group or f"/aws/capture-ext/{function_name}"


@dataclass(frozen=True, slots=True)
class LogEvent:
    timestamp: int
    message: str
    size: int  # UTF-8 bytes of ``message`` + the 26-byte overhead
    record: Record


def to_events(records: Sequence[Record], now_ms: int, restamp: Collection[str] = ()) -> tuple[list[LogEvent], int, int]:
    """Records → chronologically sorted events; also returns (truncated, clamped) counts.

    ``restamp`` holds ids CloudWatch rejected before (for example older than the group's
    retention): they get the current time, or they would be rejected on every retry.
    """
    events: list[LogEvent] = []
    truncated = clamped = 0
    low, high = now_ms - MAX_AGE_MS + CLAMP_MARGIN_MS, now_ms + MAX_AHEAD_MS - CLAMP_MARGIN_MS
    for record in records:
        data, cut = fit(record, dumps(record), MAX_MESSAGE_BYTES)
        truncated += cut
        ts = epoch_ms(captured_at(record))
        if restamp and record.get("inference_id") in restamp:
            ts = now_ms
            clamped += 1
        elif not low <= ts <= high:
            ts = min(max(ts, low), high)
            clamped += 1
        events.append(LogEvent(ts, data.decode(), len(data) + EVENT_OVERHEAD_BYTES, record))
    events.sort(key=lambda e: e.timestamp)  # stable: equal timestamps keep batch order
    return events, truncated, clamped


def plan_requests(events: Sequence[LogEvent]) -> list[list[LogEvent]]:
    """Split sorted events into PutLogEvents requests that each respect every limit."""
    requests: list[list[LogEvent]] = []
    current: list[LogEvent] = []
    size = 0
    for event in events:
        if current and (
            len(current) >= MAX_EVENTS_PER_REQUEST
            or size + event.size > MAX_REQUEST_BYTES
            or event.timestamp - current[0].timestamp > MAX_SPAN_MS
        ):
            requests.append(current)
            current, size = [], 0
        current.append(event)
        size += event.size
    if current:
        requests.append(current)
    return requests


def rejected_indices(info: dict[str, Any] | None, count: int) -> set[int]:
    """Indices of a request's events that ``rejectedLogEventsInfo`` says were not stored."""
    if not info:
        return set()
    rejected: set[int] = set()
    if "tooNewLogEventStartIndex" in info:
        rejected.update(range(int(info["tooNewLogEventStartIndex"]), count))
    # The API reference: tooNewLogEventStartIndex is inclusive, tooOldLogEventEndIndex is
    # exclusive; expiredLogEventEndIndex says neither, so it is read as inclusive (a needless
    # resend is a duplicate; the wrong guess the other way would lose an event).
    if "tooOldLogEventEndIndex" in info:
        rejected.update(range(int(info["tooOldLogEventEndIndex"])))
    if "expiredLogEventEndIndex" in info:
        rejected.update(range(int(info["expiredLogEventEndIndex"]) + 1))
    return rejected


class CloudWatchSink(AwsSink):
    """``start()`` opens the client only: a log stream is created by the first batch that needs it."""

    def __init__(self, ctx: SinkContext, config: CloudWatchConfig | None = None) -> None:
        self.config = config or CloudWatchConfig.from_env(ctx.env)
        self.name = ctx.name
        self.log_group = self.config.group_for(ctx.function_name)
        self.create_group = self.config.create_group
        self.function_name = ctx.function_name
        self.region = ctx.region
        self.logger = ctx.logger
        self.client = LazyClient("logs", ctx.env, self.region, "CLOUDWATCH_LOGS")
        self.errors = ErrorReporter(ctx.name, ctx.logger)
        self.stats = {"events": 0, "requests": 0, "rejected": 0, "truncated": 0, "clamped": 0, "bytes": 0}
        self._streams: set[str] = set()
        self._restamp: set[str] = set()

    async def write_batch(self, batch: Batch) -> WriteResult:
        client, early = await self._client_for(batch, action="logs:PutLogEvents", resource=self._arn())
        if early is not None:
            return early
        by_stream: dict[str, list[Record]] = {}
        for record in batch.records:
            env_id = str(record.get("environment_id") or batch.environment_id)
            stream = stream_name(self.function_name, env_id, captured_at(record))
            by_stream.setdefault(stream, []).append(record)
        now_ms = int(time.time() * 1000)
        pending = [(stream, to_events(recs, now_ms, self._restamp)) for stream, recs in sorted(by_stream.items())]
        failed: list[Record] = []
        for position, (stream, (events, truncated, clamped)) in enumerate(pending):
            self.stats["truncated"] += truncated
            self.stats["clamped"] += clamped
            result, not_stored = await self._write_stream(client, stream, events)
            failed.extend(not_stored)
            if result is not None:
                if result.is_ok:
                    continue
                if result.outcome is Outcome.FATAL:
                    return result
                # Throttled or unreachable: the streams after this one would fare no better.
                later = [e.record for _, (rest, _, _) in pending[position + 1 :] for e in rest]
                return self._retry(result.error or "PutLogEvents failed", failed + later, batch, result)
        if failed:
            return self._retry(f"CloudWatch rejected {len(failed)} events", failed, batch, None)
        return WriteResult.ok()

    def _retry(self, error: str, failed: list[Record], batch: Batch, cause: WriteResult | None) -> WriteResult:
        """Name the records that were not stored by their position in the batch (ids may repeat)."""
        hint = cause.retry_after_s if cause else None
        positions = {id(record): index for index, record in enumerate(batch.records)}
        indices = sorted({positions[id(record)] for record in failed})
        if len(indices) >= len(batch.records):
            return WriteResult.retryable(error, (), hint)
        return WriteResult.retryable(error, (), hint, failed_indices=indices)

    async def _write_stream(
        self, client: Any, stream: str, events: list[LogEvent]
    ) -> tuple[WriteResult | None, list[Record]]:
        """Send one stream's events; returns (failure or None, records not stored)."""
        failure = await self._ensure_stream(client, stream)
        if failure is not None:
            return failure, [e.record for e in events]
        not_stored: list[Record] = []
        requests = plan_requests(events)
        for index, request in enumerate(requests):
            response, failure = await self._put(client, stream, request)
            if failure is not None:
                return failure, not_stored + [e.record for r in requests[index:] for e in r]
            rejected = rejected_indices(response.get("rejectedLogEventsInfo"), len(request))
            if rejected:
                self.stats["rejected"] += len(rejected)
                self.logger.warning(
                    "%s: CloudWatch rejected %d of %d events in %s %s: %s",
                    self.name,
                    len(rejected),
                    len(request),
                    self.log_group,
                    stream,
                    response.get("rejectedLogEventsInfo"),
                )
                not_stored.extend(request[i].record for i in sorted(rejected))
                self._restamp.update(str(request[i].record.get("inference_id")) for i in rejected)
            if self._restamp:
                stored = (e.record.get("inference_id") for i, e in enumerate(request) if i not in rejected)
                self._restamp.difference_update(str(i) for i in stored)
            self.stats["requests"] += 1
            self.stats["events"] += len(request) - len(rejected)
            self.stats["bytes"] += sum(e.size for e in request)
        return None, not_stored

    async def _put(self, client: Any, stream: str, request: list[LogEvent]) -> tuple[Any, WriteResult | None]:
        """One PutLogEvents; a stream or group deleted under us is recreated and the request resent once."""
        events = [{"timestamp": e.timestamp, "message": e.message} for e in request]
        for recreated in (False, True):
            try:
                response = await client.put_log_events(
                    logGroupName=self.log_group, logStreamName=stream, logEvents=events
                )
                return response, None
            except Exception as exc:
                if error_code(exc)[0] != "ResourceNotFoundException":
                    return None, self.errors.result(exc, action="logs:PutLogEvents", resource=self._arn(stream))
                if recreated:
                    return None, WriteResult.retryable(f"{self.log_group} {stream} disappeared again after creation")
                self._streams.discard(stream)
                failure = await self._ensure_stream(client, stream)
                if failure is not None:
                    return None, failure
        raise AssertionError("unreachable")

    async def _ensure_stream(self, client: Any, stream: str, group_created: bool = False) -> WriteResult | None:
        """Create the stream (and, when allowed, the group) once per process."""
        if stream in self._streams:
            return None
        try:
            await client.create_log_stream(logGroupName=self.log_group, logStreamName=stream)
        except Exception as exc:
            code = error_code(exc)[0]
            if code == "ResourceNotFoundException" and not group_created:
                failure = await self._create_group(client)
                if failure is not None:
                    return failure
                return await self._ensure_stream(client, stream, group_created=True)
            if code != "ResourceAlreadyExistsException":
                return self.errors.result(exc, action="logs:CreateLogStream", resource=self._arn(stream))
        self._streams.add(stream)
        return None

    async def _create_group(self, client: Any) -> WriteResult | None:
        if not self.create_group:
            return self.errors.fatal(
                f"{self.name}: log group {self.log_group!r} does not exist and CAPTURE_LOG_GROUP_CREATE=0; "
                f"create it, or allow logs:CreateLogGroup on {self._arn()} and unset CAPTURE_LOG_GROUP_CREATE"
            )
        try:
            await client.create_log_group(logGroupName=self.log_group)
        except Exception as exc:
            if error_code(exc)[0] != "ResourceAlreadyExistsException":
                return self.errors.result(
                    exc,
                    action="logs:CreateLogGroup",
                    resource=self._arn(),
                    hint=f"log group {self.log_group!r} does not exist and could not be created",
                )
        self.logger.info("%s: created log group %s", self.name, self.log_group)
        return None

    def _arn(self, stream: str = "") -> str:
        base = f"arn:aws:logs:{self.region}:*:log-group:{self.log_group}"
        return f"{base}:log-stream:{stream}" if stream else f"{base}:*"


@hookimpl
def capture_register_sinks(register: SinkRegistrar) -> None:
    register(NAME, CloudWatchSink, variables=CloudWatchConfig.variables())
