"""Telemetry API (2022-07-01) and Logs API (2020-08-15): subscriptions, buffering, HTTP delivery.

AWS's own emulator answers these APIs with 202 *NotSupported* and never delivers an event, so an
extension that waits for ``platform.runtimeDone`` cannot be tried locally. This hub delivers the
real thing: each subscriber gets JSON arrays POSTed to its listener, batched by its
``maxItems``/``maxBytes``/``timeoutMs``, retried with backoff, and a slow consumer loses records
that are then reported as ``platform.logsDropped``. ``mode="stub"`` behaves like AWS's emulator.
Delivery pauses while the sandbox is frozen, as it does on Lambda.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

log = logging.getLogger(__name__)

TELEMETRY_SCHEMAS = frozenset({"2022-07-01", "2022-12-13", "2025-01-29"})
LOGS_SCHEMAS = frozenset({"2020-08-15", "2021-03-18"})
TYPES = frozenset({"platform", "function", "extension"})
HOSTS = frozenset({"sandbox.localdomain", "sandbox"})
RANGES = {"maxItems": (1_000, 10_000), "maxBytes": (262_144, 1_048_576), "timeoutMs": (25, 30_000)}
DEFAULTS = {"maxItems": 10_000, "maxBytes": 262_144, "timeoutMs": 1_000}
RETRY_DELAYS_S = (0.05, 0.2, 0.5)
POST_TIMEOUT_S = 2.0
DROP_REASON = "Consumer seems to have fallen behind as it has not acknowledged receipt of logs."


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SubscriptionError(Exception):
    """A refused subscription: carries the HTTP status and the Lambda error body."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"errorType": error_type, "errorMessage": message}


@dataclass(frozen=True)
class Delivery:
    """One POST the platform made to a subscriber (kept for tests and the demo)."""

    subscriber: str
    events: tuple[dict[str, Any], ...]
    status: int | None
    attempt: int
    at: float


@dataclass
class Faults:
    """Ways the telemetry side can misbehave, for tests of the consumer."""

    delay_ms: int = 0  # every delivery waits this long first: a slow platform/consumer
    blackhole: bool = False  # subscriptions succeed but nothing is ever delivered: an absent consumer


def _category(event_type: str) -> str:
    return "platform" if event_type.startswith("platform.") else event_type


def _as_logs_api(event: dict[str, Any], schema: str) -> list[dict[str, Any]]:
    """The same fact as the superseded Logs API would have shaped it."""
    t, rec, at = event["type"], event["record"], event["time"]
    if not t.startswith("platform."):
        return [event]
    if t == "platform.start":
        return [{"time": at, "type": t, "record": {"requestId": rec["requestId"], "version": rec.get("version")}}]
    if t == "platform.runtimeDone":
        out = [{"time": at, "type": "platform.end", "record": {"requestId": rec["requestId"]}}]
        if schema == "2021-03-18":
            out.insert(0, {"time": at, "type": t, "record": {"requestId": rec["requestId"], "status": rec["status"]}})
        return out
    if t == "platform.report":
        return [{"time": at, "type": t, "record": {"requestId": rec["requestId"], "metrics": rec["metrics"]}}]
    if t == "platform.telemetrySubscription":
        return [{"time": at, "type": "platform.logsSubscription", "record": rec}]
    if t in {"platform.extension", "platform.logsDropped"}:
        return [event]
    return []


class Subscription:
    """One extension's subscription and its delivery loop."""

    def __init__(self, hub: TelemetryHub, name: str, api: str, body: dict[str, Any]) -> None:
        self.hub, self.name, self.api = hub, name, api
        self.configure(body)
        self.pending: deque[tuple[dict[str, Any], int]] = deque()
        self.pending_bytes = 0
        self.first_at: float | None = None
        self.dropped_records = 0
        self.dropped_bytes = 0
        self.delivered = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def configure(self, body: dict[str, Any]) -> None:
        self.schema = body["schemaVersion"]
        self.types = frozenset(body["types"])
        buffering = {**DEFAULTS, **(body.get("buffering") or {})}
        self.max_items, self.max_bytes, self.timeout_ms = (
            buffering["maxItems"],
            buffering["maxBytes"],
            buffering["timeoutMs"],
        )
        uri = urlsplit(body["destination"]["URI"])
        self.port, self.path = uri.port, uri.path or "/"

    def add(self, event: dict[str, Any]) -> None:
        if _category(event["type"]) not in self.types:
            return
        shaped = [event] if self.api == "telemetry" else _as_logs_api(event, self.schema)
        for item in shaped:
            size = len(json.dumps(item))
            # The platform keeps at most two buffers' worth for a consumer that does not keep up.
            while self.pending and (
                len(self.pending) >= 2 * self.max_items or self.pending_bytes + size > 2 * self.max_bytes
            ):
                _, old = self.pending.popleft()
                self.pending_bytes -= old
                self.dropped_records += 1
                self.dropped_bytes += old
            self.pending.append((item, size))
            self.pending_bytes += size
        if self.first_at is None and self.pending:
            self.first_at = time.monotonic()
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"telemetry->{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _due_in(self) -> float:
        if len(self.pending) >= self.max_items or self.pending_bytes >= self.max_bytes or self.hub.flushing:
            return 0.0
        assert self.first_at is not None
        return max(0.0, self.first_at + self.timeout_ms / 1000 - time.monotonic())

    async def _run(self) -> None:
        while True:
            await self.hub.running.wait()
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            due_in = self._due_in()
            if due_in > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), due_in)
                continue
            batch = self._take()
            await self._deliver(batch)

    def _take(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        if self.dropped_records:
            record = {"droppedBytes": self.dropped_bytes, "droppedRecords": self.dropped_records, "reason": DROP_REASON}
            batch.append({"time": iso_now(), "type": "platform.logsDropped", "record": record})
            self.hub.record_event(batch[0])
            self.dropped_records = self.dropped_bytes = 0
        size = 0
        while self.pending and len(batch) < self.max_items and size < self.max_bytes:
            item, n = self.pending.popleft()
            self.pending_bytes -= n
            size += n
            batch.append(item)
        self.first_at = time.monotonic() if self.pending else None
        return batch

    async def _deliver(self, batch: list[dict[str, Any]]) -> None:
        faults = self.hub.faults
        if faults.blackhole:
            return
        if faults.delay_ms:
            await asyncio.sleep(faults.delay_ms / 1000)
        url = f"http://127.0.0.1:{self.port}{self.path}"
        for attempt, delay in enumerate((*RETRY_DELAYS_S, None), start=1):
            await self.hub.running.wait()
            status: int | None = None
            async with self.hub.inflight:
                try:
                    session = self.hub.session()
                    async with session.post(url, json=batch, timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S)) as r:
                        status = r.status
                        await r.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    log.debug("telemetry POST to %s failed: %r", self.name, exc)
            self.hub.deliveries.append(Delivery(self.name, tuple(batch), status, attempt, time.monotonic()))
            if status is not None and status < 300:
                self.delivered += len(batch)
                return
            if delay is None:
                break
            await asyncio.sleep(delay)
        log.warning("telemetry: gave up delivering %d events to %s", len(batch), self.name)
        self.dropped_records += len(batch)
        self.dropped_bytes += sum(len(json.dumps(e)) for e in batch)


@dataclass
class TelemetryHub:
    """All telemetry of one execution environment."""

    mode: str = "on"  # "on" | "stub"
    faults: Faults = field(default_factory=Faults)
    on_event: Callable[[dict[str, Any]], None] | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    backlog: list[dict[str, Any]] = field(default_factory=list)
    closed_for_subscriptions: bool = False
    flushing: bool = False

    def __post_init__(self) -> None:
        self.running = asyncio.Event()
        self.running.set()
        self.inflight = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def record_event(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def emit(self, event_type: str, record: Any) -> dict[str, Any]:
        event = {"time": iso_now(), "type": event_type, "record": record}
        self.record_event(event)
        self.backlog.append(event)
        for sub in self.subscriptions.values():
            sub.add(event)
        return event

    def subscribe(self, agent_id: str, name: str, api: str, raw: bytes) -> tuple[int, Any]:
        """Validate and apply a subscription; returns (status, body) for the HTTP answer."""
        prefix = "Telemetry" if api == "telemetry" else "Logs"
        if self.mode == "stub":
            return 202, {"errorMessage": f"{prefix} API is not supported", "errorType": f"{prefix}.NotSupported"}
        if self.closed_for_subscriptions:
            raise SubscriptionError(403, f"{prefix}.SubscriptionClosed", "subscriptions are closed after init")
        body = self._validate(api, raw)
        existing = self.subscriptions.get(agent_id)
        if existing is not None and existing.api != api:
            raise SubscriptionError(
                400, "ValidationError" if api == "telemetry" else "Logs.ValidationError",
                "the Logs API and the Telemetry API are mutually exclusive for one extension",
            )  # fmt: skip
        if existing is not None:
            existing.configure(body)  # subscribing again is idempotent
        else:
            sub = Subscription(self, name, api, body)
            for event in self.backlog:  # init-phase events reach subscribers that register during init
                sub.add(event)
            self.subscriptions[agent_id] = sub
            sub.start()
        record = {"name": name, "state": "Subscribed", "types": sorted(body["types"])}
        self.emit("platform.telemetrySubscription", record)
        return 200, "OK"

    @staticmethod
    def _validate(api: str, raw: bytes) -> dict[str, Any]:
        err = "ValidationError" if api == "telemetry" else "Logs.ValidationError"

        def fail(message: str) -> SubscriptionError:
            return SubscriptionError(400, err, message)

        try:
            body = json.loads(raw or b"null")
        except ValueError as exc:
            raise fail(f"body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise fail("body must be a JSON object")
        schemas = TELEMETRY_SCHEMAS if api == "telemetry" else LOGS_SCHEMAS
        body.setdefault("schemaVersion", "2020-08-15" if api == "logs" else None)
        if not isinstance(body["schemaVersion"], str | None) or body["schemaVersion"] not in schemas:
            raise fail(f"schemaVersion must be one of {sorted(schemas)}, got {body['schemaVersion']!r}")
        types = body.get("types")
        if (
            not isinstance(types, list)
            or not types
            or not all(isinstance(t, str) for t in types)
            or not set(types) <= TYPES
        ):
            raise fail(f"types must be a non-empty subset of {sorted(TYPES)}, got {types!r}")
        dest = body.get("destination")
        if not isinstance(dest, dict) or dest.get("protocol") != "HTTP" or not isinstance(dest.get("URI"), str):
            raise fail('destination must be {"protocol": "HTTP", "URI": "http://sandbox.localdomain:PORT/PATH"}')
        uri = urlsplit(dest["URI"])
        try:
            port = uri.port
        except ValueError:
            port = None
        if uri.scheme != "http" or uri.hostname not in HOSTS or port is None:
            raise fail(f"destination URI must be http://sandbox.localdomain:PORT[/PATH], got {dest['URI']!r}")
        if port == 9001:
            raise fail("destination port 9001 is reserved")
        buffering = body.get("buffering") or {}
        if not isinstance(buffering, dict):
            raise fail("buffering must be an object")
        for key, value in buffering.items():
            if key not in RANGES:
                raise fail(f"unknown buffering field {key!r}")
            low, high = RANGES[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise fail(f"buffering.{key} must be an integer in [{low}, {high}], got {value!r}")
        return body

    async def pause(self, wait_s: float = 1.0) -> None:
        """Stop delivering before a freeze; a POST already on the wire is allowed to finish."""
        self.running.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s), self.inflight:
                pass

    def resume(self) -> None:
        self.running.set()

    async def close(self) -> None:
        for sub in list(self.subscriptions.values()):
            await sub.stop()
        self.subscriptions.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
