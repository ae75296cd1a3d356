"""Isolation's less travelled paths (issue 21's branch gaps): the sink thread surviving what escapes
its loop, a cooperative sink cancelled at its deadline, copies of records pickle cannot take, and
the watchdog naming code that is not a sink.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from capture_ext.core import isolation
from capture_ext.core.isolation import IsolatedSink, LoopWatchdog, SinkThread, copy_records
from capture_ext.models import Batch, Outcome, WriteResult
from capture_ext.testing.contract import make_record


def test_records_pickle_cannot_copy_are_still_copied_deeply() -> None:
    marker = lambda: None  # noqa: E731 - a value pickle refuses (a hook may leave one behind)
    records = (make_record(input={"deep": [{"x": 1}], "fn": marker}),)
    copied = copy_records(records)
    assert copied == records and copied[0] is not records[0]
    copied[0]["input"]["deep"][0]["x"] = 2
    assert records[0]["input"]["deep"][0]["x"] == 1
    assert copied[0]["input"]["fn"] is marker


def test_the_sink_thread_keeps_serving_after_a_base_exception_escapes_its_loop(caplog) -> None:
    thread = SinkThread("plugin")
    try:

        def interrupt() -> None:
            raise KeyboardInterrupt("from a callback")

        thread.loop.call_soon_threadsafe(interrupt)
        assert thread.call(lambda: 6 * 7).result(timeout=5) == 42
        assert "sink plugin: its event loop was interrupted by KeyboardInterrupt: from a callback; restarted" in (
            caplog.text
        )
    finally:
        thread.stop()


def test_a_call_cancelled_before_its_turn_never_runs() -> None:
    thread = SinkThread("queued")
    release = threading.Event()
    ran: list[str] = []
    try:
        first = thread.call(release.wait, 5)
        second = thread.call(ran.append, "second")
        assert second.cancel()  # still queued behind the first
        release.set()
        assert first.result(timeout=5) is True
        assert thread.call(ran.append, "third").result(timeout=5) is None
        assert ran == ["third"]
    finally:
        thread.stop()


class Slow:
    """A sink that waits politely (cancellable) for as long as it is told."""

    name = "polite"

    def __init__(self, context: object) -> None:
        self.seconds = 10.0
        self.written: list[str] = []

    async def start(self) -> None:
        return None

    async def write_batch(self, batch: Batch) -> WriteResult:
        await asyncio.sleep(self.seconds)
        self.written.append(batch.batch_id)
        return WriteResult.ok()

    async def close(self, timeout_s: float) -> None:
        return None


async def test_a_cooperative_sink_cancelled_at_the_deadline_is_free_for_the_next_call(caplog) -> None:
    sink = IsolatedSink.build("polite", Slow, None)
    batch = Batch("env-00000001", "env", 1, (make_record(),))
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await sink.write_batch(batch)
        assert not sink.busy  # it stopped at the deadline: nothing is abandoned
        assert "did not stop at its deadline" not in caplog.text
        sink.inner.seconds = 0.0  # type: ignore[attr-defined]
        result = await sink.write_batch(batch)
        assert result.outcome is Outcome.OK and sink.inner.written == ["env-00000001"]  # type: ignore[attr-defined]
    finally:
        await sink.close(1.0)


async def test_the_watchdog_names_the_code_blocking_the_loop_when_it_is_no_sink(caplog) -> None:
    caplog.set_level(logging.ERROR, isolation.__name__)
    watchdog = LoopWatchdog({}, threshold_s=0.1)
    async with watchdog.armed():
        time.sleep(0.4)  # noqa: ASYNC251 - the fault under test
        await asyncio.sleep(0)
    (culprit,) = watchdog.blocked
    assert culprit.startswith(__file__ + ":") and culprit.rsplit(":", 1)[1].isdigit()
    assert "blocked for" in caplog.text and culprit in caplog.text


def test_the_culprit_of_a_thread_is_its_sink_or_else_its_innermost_code() -> None:
    release = threading.Event()

    class Owner:
        def block(self) -> None:
            release.wait(5)

    owner = Owner()
    threads = [threading.Thread(target=owner.block), threading.Thread(target=release.wait, args=(5,))]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.05)
        watchdog = LoopWatchdog({"webhook": owner})
        assert watchdog.culprit(threads[0].ident or 0) == "sink webhook"
        innermost = watchdog.culprit(threads[1].ident or 0)
        assert innermost.startswith(threading.__file__ + ":")
        assert watchdog.culprit(-1) == "unknown code"  # no such thread
    finally:
        release.set()
        for thread in threads:
            thread.join()


def test_the_watchdog_thread_ends_when_its_loop_is_closed_under_it() -> None:
    loop = asyncio.new_event_loop()
    watchdog = LoopWatchdog({}, threshold_s=0.05)
    armed = watchdog.armed()
    before = {t.ident for t in threading.enumerate()}
    loop.run_until_complete(armed.__aenter__())  # armed, and never disarmed
    watchers = [t for t in threading.enumerate() if t.ident not in before and t.name == "capture-loop-watchdog"]
    assert len(watchers) == 1
    loop.close()
    watchers[0].join(timeout=5)
    assert not watchers[0].is_alive() and watchdog.blocked == {}
