"""Dispatcher behaviour with in-memory test sinks (the contract, not a stand-in for AWS)."""

import asyncio
import random
import time

import pytest

from capture_ext.core.buffer import MemoryBudget, RecordBuffer
from capture_ext.core.dispatcher import Dispatcher
from capture_ext.core.ledger import Ledger
from capture_ext.core.store import Store
from capture_ext.models import Batch, WriteResult
from tests.fakes.sinks import ScriptedSink


def setup(sinks, records=4, max_attempts=5):
    ledger = Ledger()
    budget = MemoryBudget(10_000)
    buffer = RecordBuffer("env", budget, 100, 10_000)
    for i in range(records):
        ledger.received += 1
        buffer.add({"inference_id": f"r{i}"}, 10)
    store = Store(buffer, budget, sinks=[s.name for s in sinks])
    dispatcher = Dispatcher({s.name: s for s in sinks}, ledger, store, max_attempts, random.Random(1))
    store.seal()
    return dispatcher, ledger, budget


def reconciled(ledger, dispatcher):
    return all(s["reconciled"] for s in ledger.health(0, dispatcher.backlog())["sinks"].values())


async def test_every_sink_gets_every_record_and_memory_is_released():
    a, b = ScriptedSink("a"), ScriptedSink("b")
    dispatcher, ledger, budget = setup([a, b])
    report = await dispatcher.flush(time.monotonic() + 5)
    assert a.delivered == b.delivered == ["r0", "r1", "r2", "r3"]
    assert report.delivered == {"a": 4, "b": 4}
    assert a.started == 1 and budget.used == 0
    assert reconciled(ledger, dispatcher)


async def test_only_failed_records_are_retried_with_the_same_batch_id():
    sink = ScriptedSink("a", [WriteResult.retryable("throttled", failed_ids=["r1", "r3"])])
    dispatcher, ledger, _ = setup([sink])
    await dispatcher.flush(time.monotonic() + 5)
    assert [len(b) for b in sink.seen] == [4, 2]
    assert {b.batch_id for b in sink.seen} == {"env-00000001"}
    assert [b.attempt for b in sink.seen] == [1, 2]
    assert sorted(sink.delivered) == ["r0", "r1", "r2", "r3"]
    assert ledger.sinks["a"].retried == 2 and ledger.sinks["a"].delivered == 4
    assert reconciled(ledger, dispatcher)


async def test_a_failing_sink_does_not_hold_up_the_others_and_keeps_its_records():
    slow_fail = ScriptedSink("bad", [WriteResult.retryable("503")] * 10)
    good = ScriptedSink("good")
    dispatcher, ledger, budget = setup([slow_fail, good], max_attempts=3)
    await dispatcher.flush(time.monotonic() + 5)
    assert good.delivered == ["r0", "r1", "r2", "r3"]
    assert dispatcher.backlog() == {"bad": 4, "good": 0}
    assert dispatcher.states_by_name()["bad"] == "open"
    assert budget.used == 40  # still held for the failing sink
    assert not dispatcher.has_work()  # the breaker keeps ordinary flushes away
    assert dispatcher.has_work(ignore_breakers=True)
    assert reconciled(ledger, dispatcher)
    slow_fail.script = []
    await dispatcher.flush(time.monotonic() + 5, ignore_breakers=True)
    assert slow_fail.delivered == ["r0", "r1", "r2", "r3"] and budget.used == 0
    assert reconciled(ledger, dispatcher)


async def test_fatal_drops_and_counts_and_exceptions_are_retryable():
    sink = ScriptedSink("a", [RuntimeError("boom"), WriteResult.fatal("AccessDenied")])
    dispatcher, ledger, _ = setup([sink])
    await dispatcher.flush(time.monotonic() + 5)
    assert len(sink.seen) == 2
    assert ledger.sinks["a"].dropped == {"fatal": 4}
    assert reconciled(ledger, dispatcher)


async def test_retries_stop_at_the_deadline():
    sink = ScriptedSink("a", [WriteResult.retryable("slow down", retry_after_s=10)])
    dispatcher, _, _ = setup([sink])
    started = time.monotonic()
    await dispatcher.flush(started + 0.5)
    assert time.monotonic() - started < 0.5
    assert len(sink.seen) == 1 and dispatcher.backlog() == {"a": 4}


async def test_a_hanging_write_is_cut_at_the_deadline():
    sink = ScriptedSink("a", delay=30)
    dispatcher, _, _ = setup([sink])
    started = time.monotonic()
    await dispatcher.flush(started + 0.2)
    assert time.monotonic() - started < 1
    assert dispatcher.backlog() == {"a": 4}


async def test_close_reaches_every_sink():
    a, b = ScriptedSink("a"), ScriptedSink("b")
    dispatcher, _, _ = setup([a, b])
    await dispatcher.close(1.0)
    assert a.closed and b.closed


def test_failed_indices_pick_exactly_those_records():
    from capture_ext.core.dispatcher import failed_part

    batch = Batch("env-1", "env", 1, tuple({"inference_id": "same", "n": n} for n in range(5)))
    retry = failed_part(batch, WriteResult.retryable("x", failed_indices=[3, 1, 3]))
    assert [r["n"] for r in retry.records] == [1, 3] and retry.attempt == 2


def test_failed_ids_shared_by_several_records_retry_the_whole_batch():
    """Regression: a retry by a shared id also picked records of parts that had succeeded."""
    from capture_ext.core.dispatcher import failed_part

    records = ({"inference_id": "a", "n": 0}, {"inference_id": "b", "n": 1}, {"inference_id": "a", "n": 2})
    batch = Batch("env-1", "env", 1, records)
    assert len(failed_part(batch, WriteResult.retryable("x", failed_ids=["a"]))) == 3
    assert [r["n"] for r in failed_part(batch, WriteResult.retryable("x", failed_ids=["b"])).records] == [1]
    assert len(failed_part(batch, WriteResult.retryable("x", failed_indices=[7]))) == 3  # out of range: all


async def test_a_sink_that_always_hangs_opens_its_breaker():
    """Regression (hostile review): every write saw a little less than the flush timeout left, so a
    hang always looked "cut short by the deadline", the breaker never opened and every invoke paid
    the whole flush budget."""
    sink = ScriptedSink("a", delay=3600)
    dispatcher, _, _ = setup([sink])
    dispatcher.fair_budget_s = 0.3
    await dispatcher.flush(time.monotonic() + 0.3)
    assert dispatcher.states_by_name() == {"a": "open"}
    assert dispatcher.states["a"].consecutive_failures == 1


async def test_a_write_that_starts_with_little_time_left_is_not_a_failure():
    sink = ScriptedSink("a", delay=3600)
    dispatcher, _, _ = setup([sink])
    dispatcher.fair_budget_s = 2.0
    await dispatcher.flush(time.monotonic() + 0.2)  # a tenth of a fair budget: cut short, not failed
    assert dispatcher.states_by_name() == {"a": "ok"}


@pytest.mark.parametrize(
    "answer",
    [
        WriteResult.retryable("x", failed_indices=["1"]),  # type: ignore[list-item]
        WriteResult.retryable("x", failed_indices=[1.0]),  # type: ignore[list-item]
        WriteResult.retryable("x", failed_indices=[True]),
        WriteResult.retryable("x", failed_ids=[3]),  # type: ignore[list-item]
        WriteResult.retryable("x", retry_after_s=float("nan")),
        WriteResult.retryable("x", retry_after_s="soon"),  # type: ignore[arg-type]
    ],
)
async def test_a_malformed_partial_answer_retries_the_whole_batch_and_never_raises(answer):
    """Regression (hostile review): failed_indices=("1",) raised TypeError out of the flush, the
    extension exited, and the replayed batch crashed every new environment the same way."""
    sink = ScriptedSink("a", [answer])
    dispatcher, ledger, _ = setup([sink])
    await dispatcher.flush(time.monotonic() + 5)
    assert [len(b) for b in sink.seen] == [4, 4]
    assert ledger.sinks["a"].delivered == 4


class FrozenClock:
    """The dispatcher's ``time``, standing still unless a test moves it: the durations it logs
    and reports are then exact. asyncio's own clock (the timeouts, the sleeps) stays real."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    from capture_ext.core import dispatcher as dispatcher_module

    frozen = FrozenClock()
    monkeypatch.setattr(dispatcher_module, "time", frozen)
    return frozen


#: Long enough for a 0.1 % error to change the rounded milliseconds (510 ms, not 511), short
#: enough for a test that really waits it out.
WAIT_S = 0.51


async def test_a_hung_write_is_reported_with_the_time_it_was_given(clock):
    sink = ScriptedSink("a", delay=3600)
    dispatcher, _, _ = setup([sink], max_attempts=1)
    dispatcher.fair_budget_s = WAIT_S
    await dispatcher.flush(clock.now + WAIT_S)
    assert dispatcher.states["a"].last_error == "write did not finish within 510 ms"


async def test_a_write_cut_short_says_how_long_it_had(clock, caplog):
    sink = ScriptedSink("a", delay=3600)
    dispatcher, _, _ = setup([sink])
    dispatcher.fair_budget_s = 4 * WAIT_S  # the write had under half of it: the deadline's doing
    with caplog.at_level("INFO", logger="capture_ext.core.dispatcher"):
        await dispatcher.flush(clock.now + WAIT_S)
    assert "cut short by the flush deadline after 510 ms" in caplog.text
    assert dispatcher.states_by_name() == {"a": "ok"}


async def test_a_hung_start_is_reported_with_the_time_it_was_given(clock):
    class HungStart(ScriptedSink):
        async def start(self) -> None:
            await asyncio.sleep(3600)

    sink = HungStart("a")
    dispatcher, _, _ = setup([sink])
    await dispatcher.flush(clock.now + WAIT_S)
    assert dispatcher.states["a"].last_error == "start() did not finish within 510 ms"
    assert sink.seen == []  # not written to, however much time its clock says is left


async def test_the_retry_log_and_the_flush_report_give_exact_durations(clock, caplog):
    def slow_then_throttled(batch: Batch) -> WriteResult:
        clock.now += 1.5  # the write took 1.5 s by the dispatcher's clock
        return WriteResult.retryable("slow down", retry_after_s=WAIT_S)

    sink = ScriptedSink("a", [slow_then_throttled])
    dispatcher, _, _ = setup([sink])
    with caplog.at_level("WARNING", logger="capture_ext.core.dispatcher"):
        report = await dispatcher.flush(clock.now + 10)
    assert "retrying 4 records in 510 ms (budget 10000 ms)" in caplog.text
    assert report.delivered == {"a": 4}
    assert report.duration_ms == 1500.0


#: Binary fractions, so that a deadline minus the clock's reading is exactly the time meant.
EXACT_S = 0.125


async def test_a_hung_write_given_exactly_half_a_fair_budget_is_the_sinks_failure(clock):
    sink = ScriptedSink("a", delay=3600)
    dispatcher, _, _ = setup([sink], max_attempts=1)
    dispatcher.fair_budget_s = 2 * EXACT_S
    await dispatcher.flush(clock.now + EXACT_S)
    assert dispatcher.states_by_name() == {"a": "open"}
    assert dispatcher.states["a"].last_error == "write did not finish within 125 ms"


async def test_a_hung_start_given_exactly_a_fair_budget_is_the_sinks_fault(clock):
    class HungStart(ScriptedSink):
        async def start(self) -> None:
            await asyncio.sleep(3600)

    dispatcher, ledger, _ = setup([HungStart("a")])
    dispatcher.fair_budget_s = EXACT_S
    await dispatcher.flush(clock.now + EXACT_S)
    assert ledger.sinks["a"].faults == 1


async def test_a_flush_at_the_instant_a_breaker_closes_writes_as_has_work_says(clock):
    sink = ScriptedSink("a", [WriteResult.retryable("503 SlowDown")])
    dispatcher, ledger, _ = setup([sink], max_attempts=1)
    await dispatcher.flush(clock.now + 10)
    assert dispatcher.states_by_name() == {"a": "open"}
    clock.now = dispatcher.states["a"].retry_at
    assert dispatcher.has_work(clock.now)
    await dispatcher.flush(clock.now + 10)
    assert ledger.sinks["a"].delivered == 4 and len(sink.seen) == 2


async def test_a_write_with_exactly_the_least_time_left_is_still_made(clock):
    from capture_ext.core.dispatcher import MIN_WRITE_S

    sink = ScriptedSink("a")
    dispatcher, ledger, _ = setup([sink])
    clock.now = 0.0
    await dispatcher.flush(MIN_WRITE_S)
    assert ledger.sinks["a"].delivered == 4


async def test_a_retry_due_exactly_at_the_deadline_is_left_to_the_breaker(clock):
    """The service's hint says come back exactly when the flush ends: no retry, the breaker opens."""
    sink = ScriptedSink("a", [WriteResult.retryable("503 SlowDown", retry_after_s=4 * EXACT_S)])
    dispatcher, ledger, _ = setup([sink])
    await dispatcher.flush(clock.now + 4 * EXACT_S)
    assert dispatcher.states_by_name() == {"a": "open"}
    assert len(sink.seen) == 1 and ledger.sinks["a"].delivered == 0


async def test_the_breaker_pause_stops_doubling_at_two_to_the_thirty_seconds(clock):
    """``CAPTURE_BREAKER_MAX_S`` has no upper bound; far above 2**30 s the doubling still stops."""
    sink = ScriptedSink("a")
    sink.down = True
    dispatcher, _, _ = setup([sink], max_attempts=1)
    dispatcher.breaker_max_s = float(2**40)
    pauses = []
    for _ in range(33):
        await dispatcher.flush(clock.now + 10)
        state = dispatcher.states["a"]
        pauses.append(state.retry_at - clock.now)
        clock.now = state.retry_at
    assert pauses == [float(2 ** min(n, 30)) for n in range(33)]


def test_the_default_attempts_are_the_settings_default():
    from capture_ext.core.config import Settings

    budget = MemoryBudget(10_000)
    store = Store(RecordBuffer("env", budget, 100, 10_000), budget, sinks=[])
    assert Dispatcher({}, Ledger(), store).max_attempts == Settings.from_env({}).retry_max_attempts
