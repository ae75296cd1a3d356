"""RuntimeDoneTracker: what a delivery marks, and how long each kind of wait waits (issue 21's gaps)."""

from __future__ import annotations

import asyncio
import json
import logging

from capture_ext.core import telemetry
from capture_ext.core.http11 import Request
from capture_ext.core.telemetry import REMEMBERED, RuntimeDoneTracker


def _event(kind: str, record: object) -> dict:
    return {"time": "2026-01-01T00:00:00Z", "type": kind, "record": record}


async def by_platform(tracker: RuntimeDoneTracker, request_id: str) -> bool:
    """Whether the platform's own runtimeDone of ``request_id`` was seen (no waiting)."""
    return await tracker.wait_platform(request_id, 0.0)


async def test_a_delivery_marks_only_well_formed_runtime_done_records_and_tells_the_lifecycle() -> None:
    tracker = RuntimeDoneTracker()
    told: list[str] = []
    tracker.on_runtime_done = told.append
    body = json.dumps(
        [
            "not an event",
            _event("platform.runtimeDone", "not a record"),
            _event("platform.runtimeDone", {"requestId": 42}),
            _event("platform.runtimeDone", {"requestId": "r1", "status": "timeout"}),
            _event("platform.start", {"requestId": "r2"}),
        ]
    ).encode()
    assert tracker.deliver("POST", body) == (200, b"")
    assert told == ["r1"]
    assert await by_platform(tracker, "r1") and not tracker.is_done("r2") and not tracker.is_done("42")


async def test_a_single_event_object_is_taken_as_a_one_event_delivery() -> None:
    tracker = RuntimeDoneTracker()
    body = json.dumps(_event("platform.runtimeDone", {"requestId": "solo"})).encode()
    assert tracker.deliver("POST", body) == (200, b"")
    assert await by_platform(tracker, "solo")


def test_dropped_telemetry_is_reported_with_the_platforms_count(caplog) -> None:
    tracker = RuntimeDoneTracker()
    body = json.dumps([_event("platform.logsDropped", {"droppedRecords": 17, "reason": "slow"})]).encode()
    assert tracker.deliver("POST", body) == (200, b"")
    assert "Lambda dropped 17 telemetry records" in caplog.text


async def test_the_http_face_answers_as_deliver_does() -> None:
    tracker = RuntimeDoneTracker()
    answer = await tracker.handle_http(Request("PUT", "/telemetry", {}, b"[]"))
    assert (answer.status, answer.body) == (405, b'{"error":"POST only"}')
    body = json.dumps([_event("platform.runtimeDone", {"requestId": "h"})]).encode()
    answer = await tracker.handle_http(Request("POST", "/telemetry", {}, body))
    assert answer.status == 200 and tracker.is_done("h")


def test_only_the_most_recent_requests_are_remembered() -> None:
    tracker = RuntimeDoneTracker()
    for i in range(REMEMBERED + 10):
        tracker.mark_done(f"r{i}")
    assert not tracker.is_done("r0") and not tracker.is_done("r9")
    assert tracker.is_done("r10") and tracker.is_done(f"r{REMEMBERED + 9}")


async def test_a_wait_ends_when_the_request_is_marked_done() -> None:
    tracker = RuntimeDoneTracker()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, tracker.mark_started, "r")  # a start wakes the waiter, which waits on
    loop.call_later(0.1, tracker.mark_done, "r", "success", True)
    assert await tracker.wait("r", timeout=5.0) is True
    assert tracker.client_signals and tracker.is_done("r") and not await by_platform(tracker, "r")
    assert tracker._waiters == {}  # nothing left behind


async def test_a_wait_that_times_out_says_so_and_a_spent_budget_does_not_wait() -> None:
    tracker = RuntimeDoneTracker()
    assert await tracker.wait("never", timeout=0.05) is False
    assert await tracker.wait_platform("never", timeout=-1.0) is False
    tracker.mark_done("already")
    assert await tracker.wait("already", timeout=0.0) is True


async def test_with_a_client_grace_the_platforms_event_is_awaited_a_little_longer(caplog) -> None:
    caplog.set_level(logging.WARNING, logger=telemetry.__name__)
    tracker = RuntimeDoneTracker()
    loop = asyncio.get_running_loop()
    # The client says done, the platform's event follows within the grace: no warning.
    tracker.mark_done("a", from_client=True)
    loop.call_later(0.05, tracker.mark_done, "a")
    assert await tracker.wait("a", timeout=5.0, client_grace=5.0) is True
    assert await by_platform(tracker, "a") and "no runtimeDone" not in caplog.text
    # The platform's event never comes: after the grace the client's word is taken, and said so.
    tracker.mark_done("b", from_client=True)
    assert await tracker.wait("b", timeout=5.0, client_grace=0.05) is True
    assert "no runtimeDone for b; going by the client's handler-done line" in caplog.text
    # Neither ever comes: False, with no grace spent.
    assert await tracker.wait("c", timeout=0.05, client_grace=5.0) is False
    # The platform's event alone needs no grace.
    tracker.mark_done("d")
    assert await tracker.wait("d", timeout=0.0, client_grace=5.0) is True


async def test_waiting_for_the_start_accepts_a_handler_that_already_returned() -> None:
    tracker = RuntimeDoneTracker()
    assert await tracker.wait_started("s", timeout=0.05) is False
    tracker.mark_done("s", from_client=True)
    assert await tracker.wait_started("s", timeout=0.0) is True
    tracker.mark_started("t")
    assert await tracker.wait_started("t", timeout=0.0) is True
