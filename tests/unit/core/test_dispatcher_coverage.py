"""Dispatcher paths issue 21's branch coverage found untaken: a start() that hangs with a fair
budget, and a sink raising a BaseException of its own (inline or isolated in its thread).
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from capture_ext.core.isolation import IsolatedSink
from tests.fakes.sinks import ScriptedSink
from tests.unit.core.test_dispatcher import reconciled, setup


class Weird(BaseException):
    """Neither an Exception nor one of the interpreter's own BaseExceptions: a plugin's invention."""


class RaisesWeird(ScriptedSink):
    async def write_batch(self, batch):
        self.seen.append(batch)
        raise Weird("a sink's own BaseException")


async def test_a_start_that_hangs_with_a_fair_budget_is_the_sinks_fault(caplog) -> None:
    class Hangs(ScriptedSink):
        async def start(self):
            self.started += 1
            await asyncio.sleep(10)

    sink = Hangs("hangs")
    dispatcher, ledger, _ = setup([sink])
    dispatcher.fair_budget_s = 0.1  # 0.3 s of budget is fair: the sink had its chance
    with caplog.at_level(logging.ERROR, "capture_ext.core.dispatcher"):
        await dispatcher.flush(time.monotonic() + 0.3)
    state = dispatcher.states["hangs"]
    assert not state.started and state.last_error.startswith("start() did not finish within")
    assert ledger.sink("hangs").faults == 1 and dispatcher.states_by_name() == {"hangs": "open"}
    assert dispatcher.backlog()["hangs"] == 4  # kept for a later flush, not lost


@pytest.mark.parametrize("isolated", [False, True], ids=["inline", "isolated"])
async def test_a_sink_raising_its_own_base_exception_fails_alone(isolated: bool, caplog) -> None:
    """Regression (found by the coverage work): only SystemExit, KeyboardInterrupt, GeneratorExit and
    a stray CancelledError were the sink's failure; any other BaseException escaped the flush and
    stopped the extension's loop, breaking "a sink's faults are its own" (docs/plugins.md)."""
    good = ScriptedSink("good")
    bad = IsolatedSink.build("bad", lambda _context: RaisesWeird("bad"), None) if isolated else RaisesWeird("bad")
    dispatcher, ledger, _ = setup([good, bad], max_attempts=2)
    with caplog.at_level(logging.ERROR, "capture_ext.core.dispatcher"):
        await dispatcher.flush(time.monotonic() + 2.0)
    assert good.delivered == ["r0", "r1", "r2", "r3"]
    assert ledger.sink("bad").faults >= 1 and ledger.sink("good").faults == 0
    assert "sink bad raised from write_batch(), counted as its failure: Weird: a sink's own BaseException" in (
        caplog.text
    )
    assert dispatcher.backlog()["bad"] == 4 and reconciled(ledger, dispatcher)
    await dispatcher.close(1.0)
