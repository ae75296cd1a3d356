"""A sink's failure of any kind is its own: BaseExceptions, blocked loops, mutated records."""

import asyncio
import logging
import time

import pytest

from capture_ext.core.isolation import IsolatedSink, copy_records
from capture_ext.testing.contract import make_record
from tests.fakes.sinks import ScriptedSink
from tests.unit.core.test_dispatcher import setup


class Raising(ScriptedSink):
    def __init__(self, name, exc):
        super().__init__(name)
        self.exc = exc

    async def write_batch(self, batch):
        raise self.exc


class Blocking(ScriptedSink):
    async def write_batch(self, batch):
        time.sleep(0.8)  # noqa: ASYNC251 - the fault under test
        return await super().write_batch(batch)


@pytest.mark.parametrize("exc", [SystemExit(2), KeyboardInterrupt(), asyncio.CancelledError()], ids=repr)
async def test_an_inline_sink_raising_a_base_exception_fails_alone(exc, caplog):
    good = ScriptedSink("good")
    bad = Raising("bad", exc)
    dispatcher, ledger, _ = setup([good, bad], max_attempts=2)
    await dispatcher.flush(time.monotonic() + 1.0)
    assert len(good.delivered) == 4
    assert ledger.sink("bad").faults >= 1 and ledger.sink("good").faults == 0
    assert any("sink bad raised from write_batch()" in r.getMessage() for r in caplog.records)
    assert dispatcher.backlog()["bad"] == 4  # kept for a later flush, not lost


async def test_a_real_cancellation_of_the_flush_still_propagates():
    sink = ScriptedSink("slow", delay=5.0)
    dispatcher, _, _ = setup([sink])
    task = asyncio.create_task(dispatcher.flush(time.monotonic() + 10.0))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_watchdog_names_the_sink_that_blocks_the_loop(caplog):
    caplog.set_level(logging.ERROR, "capture_ext.core.isolation")
    good = ScriptedSink("good")
    dispatcher, _, _ = setup([good, Blocking("sleepy")])
    await dispatcher.flush(time.monotonic() + 5.0)
    blocked = [r.getMessage() for r in caplog.records if "event loop has been blocked" in r.getMessage()]
    assert blocked and "by sink sleepy" in blocked[0], blocked
    assert dispatcher.watchdog.blocked == {"sink sleepy": 1}


async def test_an_isolated_sink_gets_its_own_copy_of_the_records():
    class Mutating(ScriptedSink):
        async def write_batch(self, batch):
            for record in batch.records:
                record["inference_id"] = "hijacked"
            return await super().write_batch(batch)

    good = ScriptedSink("good")
    evil = IsolatedSink.build("evil", lambda _context: Mutating("evil"), None)
    dispatcher, _, _ = setup([evil, good])
    await dispatcher.flush(time.monotonic() + 2.0)
    assert sorted(good.delivered) == ["r0", "r1", "r2", "r3"]
    assert getattr(evil.inner, "delivered", None) == ["hijacked"] * 4
    await dispatcher.close(1.0)


def test_copies_are_deep_and_equal():
    records = (make_record(), make_record(input={"deep": [[{"x": 1}]]}))
    copied = copy_records(records)
    assert copied == records
    copied[1]["input"]["deep"][0][0]["x"] = 2
    assert records[1]["input"]["deep"][0][0]["x"] == 1


@pytest.mark.parametrize("exc", [SystemExit, KeyboardInterrupt, asyncio.CancelledError])
def test_a_prepare_hook_raising_a_base_exception_is_an_ordinary_error(exc):
    from capture_ext import hookimpl
    from capture_ext.core.plugins import PluginError, get_plugin_manager

    class Hook:
        @hookimpl
        def capture_prepare_record(self, record):
            raise exc

    plugins = get_plugin_manager(load_entrypoints=False)
    assert plugins.register(Hook(), "hook")
    with pytest.raises(PluginError, match=exc.__name__):
        plugins.prepare_record({"inference_id": "x"})
