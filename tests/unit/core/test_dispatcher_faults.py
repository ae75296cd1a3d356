"""Dispatcher paths the happy tests never take: sinks that fail to start, cold batches that cannot
be read back, answers that are not answers, deadlines, breakers, and adopted batches for sinks
this process does not have."""

import asyncio
import logging
import random
import re
import time

import orjson
import pytest

from capture_ext.core import dispatcher as dispatcher_module
from capture_ext.core.buffer import MemoryBudget, RecordBuffer
from capture_ext.core.dispatcher import BREAKER_BASE_S, Dispatcher, failed_part
from capture_ext.core.ledger import Ledger
from capture_ext.core.spool import Spool
from capture_ext.core.store import Store
from capture_ext.models import Batch, Outcome, WriteResult
from tests.fakes.sinks import ScriptedSink
from tests.unit.core.test_dispatcher import reconciled, setup


class FailingStart(ScriptedSink):
    def __init__(self, name, failures=1):
        super().__init__(name)
        self.failures = failures

    async def start(self):
        self.started += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("endpoint unreachable")


def damage(location):
    """The records' bytes are damaged on disk: a line that is no longer JSON."""
    with open(location.segment.path, "r+b") as handle:
        handle.seek(location.start)
        handle.write(b"{not json" + b" " * (location.end - location.start - 10) + b"\n")


def parse_error(location):
    """What parsing the (damaged) line at ``location`` says."""
    with open(location.segment.path, "rb") as handle:
        handle.seek(location.start)
        line = handle.readline()
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return str(exc)
    raise AssertionError("the line is valid JSON")


def blank(location):
    """The records' bytes are overwritten with blanks: no line of the range is a record any more."""
    with open(location.segment.path, "r+b") as handle:
        handle.seek(location.start)
        handle.write(b" " * (location.end - location.start - 1) + b"\n")


def cold_setup(tmp_path, sinks, records=10):
    """A store whose first batch has been moved to disk only (a cold batch)."""
    ledger = Ledger()
    budget = MemoryBudget(600)
    spool = Spool(str(tmp_path / "spool"), 10_000_000, "never", "env")
    spool.open()
    store = Store(RecordBuffer("env", budget, 5, 100_000), budget, spool, sinks=[s.name for s in sinks])
    dispatcher = Dispatcher({s.name: s for s in sinks}, ledger, store, 3, random.Random(1))
    for n in range(records):
        data = {"inference_id": f"r{n}", "pad": "x" * 60}
        ledger.received += 1
        assert store.add([(data, orjson.dumps(data))]) == (1, "")
        if n % 5 == 4:
            store.seal()
    return dispatcher, ledger, store


async def test_a_sink_that_fails_to_start_opens_its_breaker_and_starts_on_a_later_flush(caplog):
    sink = FailingStart("a")
    dispatcher, ledger, _ = setup([sink])
    with caplog.at_level(logging.ERROR, "capture_ext.core.dispatcher"):
        await dispatcher.flush(time.monotonic() + 5)
    state = dispatcher.states["a"]
    assert not state.started and state.last_error == "start failed: ConnectionError: endpoint unreachable"
    assert dispatcher.states_by_name() == {"a": "open"} and sink.seen == []
    assert state.retry_at - time.monotonic() > BREAKER_BASE_S / 2
    await dispatcher.flush(time.monotonic() + 5)  # the breaker is open: not even tried
    assert sink.started == 1
    await dispatcher.flush(time.monotonic() + 5, ignore_breakers=True)
    assert sink.started == 2 and sink.delivered == ["r0", "r1", "r2", "r3"]
    assert dispatcher.states["a"].started and reconciled(ledger, dispatcher)


async def test_warm_up_starts_only_the_sinks_not_yet_started():
    a, b = ScriptedSink("a"), FailingStart("b")
    dispatcher, _, _ = setup([a, b])
    await dispatcher.warm_up(time.monotonic() + 5)
    assert (a.started, b.started) == (1, 1)
    assert dispatcher.states["a"].started and not dispatcher.states["b"].started
    await dispatcher.warm_up(time.monotonic() + 5)
    assert (a.started, b.started) == (1, 2)


async def test_a_cold_batch_is_read_back_for_the_sink_that_needs_it(tmp_path):
    sink = ScriptedSink("a")
    dispatcher, ledger, store = cold_setup(tmp_path, [sink])
    hot, cold = dispatcher.backlog_split()
    assert cold == {"a": 5} and hot == {"a": 5}
    await dispatcher.flush(time.monotonic() + 5)
    assert sink.delivered == [f"r{n}" for n in range(10)] and store.loaded >= 1
    assert [b.batch_id for b in sink.seen] == ["env-00000001", "env-00000002"]
    assert reconciled(ledger, dispatcher)


async def flush_past_a_spoiled_cold_batch(tmp_path, caplog, spoil):
    """One cold batch (records r0-r4, on disk only) and one hot: ``spoil`` the cold one's bytes
    on disk, then flush with errors logged."""
    sink = ScriptedSink("a")
    dispatcher, ledger, _ = cold_setup(tmp_path, [sink])
    assert dispatcher.backlog() == {"a": 10}
    (cold,) = [p.sealed for p in dispatcher.states["a"].backlog if p.cold]
    spoil(cold.location)
    with caplog.at_level(logging.ERROR, "capture_ext.core.dispatcher"):
        await dispatcher.flush(time.monotonic() + 5)
    return sink, dispatcher, ledger, cold


async def test_a_cold_batch_that_cannot_be_read_is_dropped_and_counted_and_the_rest_goes_on(tmp_path, caplog):
    sink, dispatcher, ledger, cold = await flush_past_a_spoiled_cold_batch(tmp_path, caplog, damage)
    assert ledger.sinks["a"].dropped == {"spool_lost": 5}
    (message,) = [r.getMessage() for r in caplog.records if "read back" in r.getMessage()]
    assert message == f"sink a: batch env-00000001 cannot be read back from the spool ({parse_error(cold.location)})"
    assert sink.delivered == [f"r{n}" for n in range(5, 10)]  # the hot batch still went
    assert dispatcher.backlog() == {"a": 0} and reconciled(ledger, dispatcher)


async def test_a_read_back_cut_by_the_deadline_leaves_the_batch_waiting_without_a_failure(tmp_path, monkeypatch):
    sink = ScriptedSink("a")
    dispatcher, ledger, store = cold_setup(tmp_path, [sink])

    real_load = store.load

    async def slow_load(sealed):
        await asyncio.sleep(0.8)  # past this flush's deadline, within a second
        return await real_load(sealed)

    monkeypatch.setattr(store, "load", slow_load)
    await dispatcher.flush(time.monotonic() + 0.2)
    assert sink.seen == [] and dispatcher.backlog() == {"a": 10} and store.loaded == 0
    state = dispatcher.states["a"]
    assert state.consecutive_failures == 0 and state.retry_at == 0 and not ledger.sinks["a"].dropped


async def test_a_write_cut_short_by_a_small_budget_is_not_the_sinks_failure(caplog):
    sink = ScriptedSink("a", delay=5)
    dispatcher, ledger, _ = setup([sink])
    with caplog.at_level(logging.INFO, "capture_ext.core.dispatcher"):
        await dispatcher.flush(time.monotonic() + 0.2)  # under fair_budget_s (2 s)
    (line,) = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(
        r"sink a: batch env-00000001 cut short by the flush deadline after [1-9]\d{0,2} ms; "
        r"it waits for the next flush",
        line,
    ), line
    state = dispatcher.states["a"]
    assert len(sink.seen) == 1 and dispatcher.backlog() == {"a": 4}
    assert state.consecutive_failures == 0 and state.retry_at == 0 and ledger.sinks["a"].retried == 0


async def test_a_write_that_times_out_with_a_fair_budget_is_a_retryable_failure():
    sink = ScriptedSink("a", delay=5)
    dispatcher, ledger, _ = setup([sink], max_attempts=1)
    dispatcher.fair_budget_s = 0.1
    await dispatcher.flush(time.monotonic() + 0.3)
    state = dispatcher.states["a"]
    assert re.fullmatch(r"write did not finish within [1-9]\d{0,2} ms", state.last_error), state.last_error
    assert state.consecutive_failures == 1 and dispatcher.states_by_name() == {"a": "open"}
    assert ledger.sinks["a"].retried == 4 and dispatcher.backlog() == {"a": 4}


async def test_an_answer_that_is_not_a_write_result_is_retried():
    sink = ScriptedSink("a", [lambda batch: None])
    dispatcher, ledger, _ = setup([sink])
    await dispatcher.flush(time.monotonic() + 5)
    assert len(sink.seen) == 2 and sink.delivered == ["r0", "r1", "r2", "r3"]
    assert ledger.sinks["a"].retried == 4 and ledger.sinks["a"].delivered == 4
    assert [b.attempt for b in sink.seen] == [1, 2]


async def test_no_write_starts_with_less_than_the_minimum_time_left():
    sink = ScriptedSink("a")
    dispatcher, _, _ = setup([sink])
    dispatcher.states["a"].started = True
    await dispatcher.flush(time.monotonic() + dispatcher_module.MIN_WRITE_S / 2)
    assert sink.seen == [] and dispatcher.backlog() == {"a": 4}


async def test_the_breaker_doubles_up_to_its_cap_and_honours_a_longer_hint_within_it():
    sink = ScriptedSink("a")
    dispatcher, _, _ = setup([sink])
    dispatcher.breaker_max_s = 5.0
    state = dispatcher.states["a"]
    pauses = []
    for _ in range(5):
        dispatcher._open_breaker(state)
        pauses.append(round(state.retry_at - time.monotonic()))
    assert pauses == [1, 2, 4, 5, 5]
    state.consecutive_failures = 0
    dispatcher._open_breaker(state, hint=3.0)
    assert round(state.retry_at - time.monotonic()) == 3
    dispatcher._open_breaker(state, hint=60.0)  # a hint past the cap is capped too
    assert round(state.retry_at - time.monotonic()) == 5


async def test_retries_give_up_after_max_attempts_and_keep_the_records():
    sink = ScriptedSink("a", [WriteResult.retryable("503")] * 3)
    dispatcher, ledger, _ = setup([sink], max_attempts=3)
    await dispatcher.flush(time.monotonic() + 30)
    assert len(sink.seen) == 3 and [b.attempt for b in sink.seen] == [1, 2, 3]
    assert dispatcher.backlog() == {"a": 4} and dispatcher.states["a"].consecutive_failures == 1
    assert ledger.sinks["a"].retried == 12 and reconciled(ledger, dispatcher)


async def test_a_success_after_failures_closes_the_breaker_state():
    sink = ScriptedSink("a", [WriteResult.retryable("503")])
    dispatcher, _, _ = setup([sink], max_attempts=1)
    await dispatcher.flush(time.monotonic() + 5)
    assert dispatcher.states["a"].consecutive_failures == 1
    await dispatcher.flush(time.monotonic() + 5, ignore_breakers=True)
    assert dispatcher.states["a"].consecutive_failures == 0 and dispatcher.backlog() == {"a": 0}


async def test_partial_failures_pin_the_batch_until_this_sink_is_done(tmp_path):
    sink = ScriptedSink("a", [WriteResult.retryable("x", failed_indices=(1,))] * 2)
    dispatcher, _, budget = setup([sink], max_attempts=2)
    await dispatcher.flush(time.monotonic() + 5)
    pending = dispatcher.states["a"].backlog[0]
    assert pending.subset is not None and len(pending.subset) == 1 and pending.sealed.busy == 1
    assert budget.used == 40  # pinned: the retry subset needs the records in memory
    await dispatcher.flush(time.monotonic() + 5, ignore_breakers=True)
    assert pending.sealed.busy == 0 and budget.used == 0


async def test_an_adopted_batch_for_a_sink_this_process_does_not_have_is_let_go(tmp_path):
    from capture_ext.core.buffer import SealedBatch

    ledger = Ledger()
    budget = MemoryBudget(10_000)
    store = Store(RecordBuffer("env", budget, 100, 10_000), budget, sinks=["a"])
    sink = ScriptedSink("a")
    dispatcher = Dispatcher({"a": sink}, ledger, store, 3, random.Random(1))
    batch = Batch("old-00000001", "old", 1, ({"inference_id": "x"},))
    sealed = SealedBatch(batch=batch, size=10, waiting={"a", "gone"})
    store._new.append(sealed)
    assert dispatcher.backlog() == {"a": 1}
    assert sealed.waiting == {"a"}  # the unknown sink was marked done straight away
    await dispatcher.flush(time.monotonic() + 5)
    assert sink.delivered == ["x"] and sealed.waiting == set()


async def test_close_survives_a_sink_that_raises_or_hangs_and_passes_its_budget_on(caplog):
    budgets: list[float] = []

    class Raising(ScriptedSink):
        async def close(self, timeout_s):
            raise RuntimeError("close failed")

    class Slow(ScriptedSink):
        async def close(self, timeout_s):
            budgets.append(timeout_s)
            await asyncio.sleep(0.5)  # longer than the budget: abandoned before it ends
            self.closed = True

    good, raising, slow = ScriptedSink("good"), Raising("raising"), Slow("slow")
    dispatcher, _, _ = setup([good, raising, slow])
    with caplog.at_level(logging.WARNING, "capture_ext.core.dispatcher"):
        await dispatcher.close(0.2)
    assert good.closed and not slow.closed and budgets == [0.2]
    assert sorted(r.getMessage() for r in caplog.records) == [
        "sink raising raised from close(), counted as its failure: RuntimeError: close failed",
        "sink slow: close() did not finish within 200 ms; abandoned",
    ]


def test_a_sink_state_reads_ok_then_open_then_retrying_then_ok():
    sink = ScriptedSink("a")
    dispatcher, _, _ = setup([sink])
    state = dispatcher.states["a"]
    assert state.state(100.0) == "ok"
    state.consecutive_failures, state.retry_at = 1, 110.0
    assert state.state(100.0) == "open"
    assert state.state(110.0) == "retrying"  # the pause is over at retry_at exactly
    assert state.state(120.0) == "retrying"
    state.consecutive_failures = 0
    assert state.state(120.0) == "ok"


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (WriteResult.retryable("x", failed_indices=(4, 0)), [0, 4]),
        (WriteResult.retryable("x", failed_indices=(-1,)), [0, 1, 2, 3, 4]),
        (WriteResult.retryable("x", failed_indices=(5,)), [0, 1, 2, 3, 4]),
        (WriteResult.retryable("x", failed_ids=("r2", "r3")), [2, 3]),
        (WriteResult.retryable("x", failed_ids=("nobody",)), [0, 1, 2, 3, 4]),
        (WriteResult.retryable("x"), [0, 1, 2, 3, 4]),
    ],
)
def test_failed_part_resends_exactly_the_named_records_or_everything(result, expected):
    batch = Batch("env-1", "env", 1, tuple({"inference_id": f"r{n}", "n": n} for n in range(5)), attempt=3)
    retry = failed_part(batch, result)
    assert [r["n"] for r in retry.records] == expected
    assert (retry.batch_id, retry.environment_id, retry.sequence, retry.attempt) == ("env-1", "env", 1, 4)


async def test_a_cold_batch_whose_bytes_were_blanked_is_counted_as_lost_not_delivered_empty(tmp_path):
    sink = ScriptedSink("a")
    dispatcher, ledger, _ = cold_setup(tmp_path, [sink])
    assert dispatcher.backlog() == {"a": 10}
    (cold,) = [p.sealed for p in dispatcher.states["a"].backlog if p.cold]
    blank(cold.location)
    await dispatcher.flush(time.monotonic() + 5)
    assert ledger.sinks["a"].dropped == {"spool_lost": 5}
    assert reconciled(ledger, dispatcher)


def test_has_work_honours_the_time_it_is_given_and_the_breaker_ends_at_retry_at():
    sink = ScriptedSink("a")
    dispatcher, _, _ = setup([sink])
    state = dispatcher.states["a"]
    state.consecutive_failures, state.retry_at = 1, time.monotonic() + 3600
    assert not dispatcher.has_work()
    assert dispatcher.has_work(now=state.retry_at)  # due again at retry_at exactly
    assert not dispatcher.has_work(now=state.retry_at - 1)
    assert dispatcher.has_work(ignore_breakers=True)


def test_backoff_doubles_from_50_ms_to_its_2_s_cap_with_jitter_and_honours_a_longer_hint():
    sink = ScriptedSink("a")
    dispatcher, _, _ = setup([sink])
    for attempt, ceiling in enumerate([0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0], start=1):
        delays = [dispatcher._backoff(attempt, None) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) > ceiling * 0.9  # the full jitter range, not a constant
    assert dispatcher._backoff(1, 7.5) == 7.5  # the service's hint wins when it is longer


def test_opening_the_breaker_says_which_sink_how_many_records_and_why(caplog):
    sink = ScriptedSink("a")
    dispatcher, _, _ = setup([sink])
    assert dispatcher.backlog() == {"a": 4}
    state = dispatcher.states["a"]
    state.last_error = "503 SlowDown"
    with caplog.at_level(logging.WARNING, "capture_ext.core.dispatcher"):
        dispatcher._open_breaker(state)
    assert [r.getMessage() for r in caplog.records] == [
        "sink a: 4 records kept for a later flush (503 SlowDown); next attempt in 1 s"
    ]


async def test_a_sink_that_raises_is_logged_by_name_and_retried(caplog):
    sink = ScriptedSink("a", [RuntimeError("boom")])
    dispatcher, ledger, _ = setup([sink])
    with caplog.at_level(logging.ERROR, "capture_ext.core.dispatcher"):
        await dispatcher.flush(time.monotonic() + 5)
    assert [r.getMessage() for r in caplog.records] == [
        "sink a raised from write_batch(), counted as its failure: RuntimeError: boom"
    ]
    assert ledger.sinks["a"].delivered == 4 and ledger.sinks["a"].retried == 4


async def test_records_lost_from_the_spool_add_up_across_batches(tmp_path):
    sink = ScriptedSink("a")
    dispatcher, ledger, _ = cold_setup(tmp_path, [sink])
    ledger.sinks["a"].dropped["spool_lost"] = 3  # lost earlier in this process
    (cold,) = [p.sealed for p in dispatcher.states["a"].backlog if p.cold] if dispatcher.backlog() else []
    damage(cold.location)
    await dispatcher.flush(time.monotonic() + 5)
    assert ledger.sinks["a"].dropped == {"spool_lost": 8}


# -- sharper assertions, written where mutation testing found one that could not fail ----------


class HangsOnce(ScriptedSink):
    """Hangs on its first write (until cancelled), answers OK afterwards."""

    def __init__(self, name):
        super().__init__(name)
        self.writing = asyncio.Event()

    async def write_batch(self, batch):
        self.seen.append(batch)
        self.writing.set()
        if len(self.seen) == 1:
            await asyncio.sleep(3600)
        self.delivered += [r["inference_id"] for r in batch.records]
        return WriteResult.ok()


async def test_cancelling_the_flush_cancels_it_even_inside_a_sink_write():
    """The extension being stopped cancels the flush: that cancellation is not the sink's fault."""
    sink = HangsOnce("a")
    dispatcher, ledger, _ = setup([sink])
    task = asyncio.create_task(dispatcher.flush(time.monotonic() + 5))
    await sink.writing.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(sink.seen) == 1 and ledger.sinks["a"].faults == 0 and dispatcher.backlog() == {"a": 4}


class RaisesOnce(ScriptedSink):
    """Raises ``error`` from its first write, whatever it is (BaseException included)."""

    def __init__(self, name, error):
        super().__init__(name)
        self.error = error

    async def write_batch(self, batch):
        if not self.seen:
            self.seen.append(batch)
            raise self.error
        return await super().write_batch(batch)


async def test_a_cancellation_a_sink_raises_on_its_own_is_its_failure_not_the_flushs():
    sink = RaisesOnce("a", asyncio.CancelledError("sdk gave up"))
    dispatcher, ledger, _ = setup([sink])
    ledger.sinks["a"].faults = 2  # counted earlier in this process
    await dispatcher.flush(time.monotonic() + 5)
    assert len(sink.seen) == 2 and sink.delivered == ["r0", "r1", "r2", "r3"]
    assert ledger.sinks["a"].faults == 3 and ledger.sinks["a"].retried == 4


async def test_a_sinks_traceback_is_logged_at_debug_with_the_exception(caplog):
    error = RuntimeError("boom")
    sink = ScriptedSink("a", [error])
    dispatcher, _, _ = setup([sink])
    with caplog.at_level(logging.DEBUG, "capture_ext.core.dispatcher"):
        await dispatcher.flush(time.monotonic() + 5)
    (debug,) = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug.getMessage() == "sink a: write_batch() traceback"
    assert debug.exc_info is not None and debug.exc_info[1] is error


def answered_once(answer, max_attempts=5):
    sink = ScriptedSink("a", [answer, WriteResult.retryable("again")])
    dispatcher, ledger, _ = setup([sink], max_attempts=max_attempts)
    return sink, dispatcher, ledger


@pytest.mark.parametrize(
    ("answer", "resent"),
    [
        (WriteResult.retryable("x", failed_indices=[0]), 1),  # the first position is a position
        (WriteResult.retryable("x", failed_indices=[3]), 1),  # so is the last
        (WriteResult.retryable("x", failed_indices=[1], retry_after_s=0), 1),  # "now" is a hint
        (WriteResult.retryable("x", failed_indices=[1], retry_after_s=0.02), 1),
        (WriteResult.retryable("x", failed_indices=[4]), 4),  # one past the end: malformed
        (WriteResult.retryable("x", failed_indices=[1], retry_after_s=-0.5), 4),
        (WriteResult.retryable("x", failed_indices=[1], retry_after_s=1e9), 4),
        (WriteResult.retryable("x", failed_indices=[1], retry_after_s=1e9 + 0.5), 4),
    ],
)
async def test_a_partial_answer_is_trusted_exactly_within_its_bounds(answer, resent, caplog):
    sink, dispatcher, _ = answered_once(answer, max_attempts=2)
    with caplog.at_level(logging.WARNING, "capture_ext.core.dispatcher"):
        await dispatcher.flush(time.monotonic() + 5)
    assert [len(b) for b in sink.seen] == [4, resent]
    malformed = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    expected = "sink a: a malformed WriteResult (failed_indices/failed_ids/retry_after_s); retrying it all"
    assert malformed == ([] if resent == 1 else [expected])


async def test_a_malformed_answer_keeps_the_sinks_error_text_and_its_valid_hint():
    answer = WriteResult.retryable("throttled", failed_indices=["1"], retry_after_s=3.0)  # type: ignore[list-item]
    sink, dispatcher, _ = answered_once(answer, max_attempts=1)
    await dispatcher.flush(time.monotonic() + 5)
    state = dispatcher.states["a"]
    assert len(sink.seen) == 1 and state.last_error == "throttled"
    assert round(state.retry_at - time.monotonic()) == 3  # the hint, not the 1 s first pause


@pytest.mark.parametrize("error", ["", None])
async def test_a_malformed_answer_without_an_error_text_reads_retryable_error(error):
    answer = WriteResult(Outcome.RETRYABLE, error, failed_indices=(9,))
    sink, dispatcher, _ = answered_once(answer, max_attempts=1)
    await dispatcher.flush(time.monotonic() + 5)
    assert len(sink.seen) == 1 and dispatcher.states["a"].last_error == "retryable error"


def test_well_formed_rebuilds_a_malformed_answer_with_only_its_trustworthy_parts():
    from capture_ext.core.write_results import well_formed as _well_formed

    fixed = _well_formed(WriteResult.retryable("x", failed_indices=[7], retry_after_s=2.5), 4, "a")
    assert fixed == WriteResult.retryable("x", retry_after_s=2.5)
    fixed = _well_formed(WriteResult.retryable("x", failed_indices=[1], retry_after_s=float("inf")), 4, "a")
    assert fixed == WriteResult.retryable("x")
    fixed = _well_formed(WriteResult(Outcome.RETRYABLE, None, failed_ids=(1,)), 4, "a")  # type: ignore[arg-type]
    assert fixed == WriteResult.retryable("retryable error")


async def test_an_answer_of_the_wrong_type_is_named_in_the_error():
    class AnswersAString(ScriptedSink):
        async def write_batch(self, batch):
            self.seen.append(batch)
            return "ok"

    sink = AnswersAString("a")
    dispatcher, _, _ = setup([sink], max_attempts=1)
    await dispatcher.flush(time.monotonic() + 5)
    assert dispatcher.states["a"].last_error == "write_batch returned str, not WriteResult"


async def test_a_write_timed_out_under_half_the_fair_budget_was_cut_short_not_failed():
    sink = ScriptedSink("a", delay=5)
    dispatcher, ledger, _ = setup([sink])
    dispatcher.fair_budget_s = 0.5
    await dispatcher.flush(time.monotonic() + 0.2)  # 0.2 s is under half of 0.5 s, over a third
    state = dispatcher.states["a"]
    assert state.consecutive_failures == 0 and ledger.sinks["a"].retried == 0 and dispatcher.backlog() == {"a": 4}


async def test_a_close_that_hangs_counts_one_fault_and_names_its_budget(caplog):
    class Hangs(ScriptedSink):
        async def close(self, timeout_s):
            await asyncio.sleep(3600)

    sink = Hangs("a")
    dispatcher, ledger, _ = setup([sink])
    ledger.sinks["a"].faults = 2
    with caplog.at_level(logging.ERROR, "capture_ext.core.dispatcher"):
        await dispatcher.close(0.6)
    assert ledger.sinks["a"].faults == 3
    assert [r.getMessage() for r in caplog.records] == ["sink a: close() did not finish within 600 ms; abandoned"]


def add_batch(dispatcher, ledger, first, count=4):
    """Seal ``count`` more records (r<first>...) as the store's next batch."""
    for n in range(first, first + count):
        data = {"inference_id": f"r{n}"}
        ledger.received += 1
        assert dispatcher.store.add([(data, orjson.dumps(data))]) == (1, "")
    dispatcher.store.seal()


async def test_a_flush_reports_what_it_did_not_what_the_process_did_before_it():
    sink = ScriptedSink(
        "a", [WriteResult.retryable("503", failed_indices=[1, 2]), WriteResult.fatal("AccessDenied"), WriteResult.ok()]
    )
    dispatcher, ledger, _ = setup([sink])
    ledger.flushes = 5
    first = await dispatcher.flush(time.monotonic() + 5)
    assert (first.delivered, first.dropped, first.retried) == ({"a": 2}, {"a": 2}, {"a": 2})
    add_batch(dispatcher, ledger, 4)
    sink.delay = 0.1
    second = await dispatcher.flush(time.monotonic() + 5)
    assert (second.delivered, second.dropped, second.retried) == ({"a": 4}, {"a": 0}, {"a": 0})
    assert 100 <= second.duration_ms < 5000  # it slept 0.1 s, within a 5 s deadline
    assert ledger.flushes == 7 and reconciled(ledger, dispatcher)


async def test_a_fatal_answer_is_logged_with_the_sink_the_count_the_batch_and_the_reason(caplog):
    sink = ScriptedSink("a", [WriteResult.fatal("AccessDenied")])
    dispatcher, _, _ = setup([sink])
    with caplog.at_level(logging.ERROR, "capture_ext.core.dispatcher"):
        await dispatcher.flush(time.monotonic() + 5)
    assert [r.getMessage() for r in caplog.records] == [
        "sink a: dropping 4 records of batch env-00000001: AccessDenied"
    ]


async def test_a_retry_is_logged_with_its_delay_and_the_budget_left(caplog):
    sink = ScriptedSink("a", [WriteResult.retryable("503")])
    dispatcher, _, _ = setup([sink])
    with caplog.at_level(logging.WARNING, "capture_ext.core.dispatcher"):
        await dispatcher.flush(time.monotonic() + 5)
    (line,) = [r.getMessage() for r in caplog.records]
    found = re.fullmatch(
        r"sink a: batch env-00000001 attempt 1 failed \(503\); retrying 4 records in (\d+) ms \(budget (\d+) ms\)", line
    )
    assert found, line
    assert 25 <= int(found[1]) <= 50 and 4000 < int(found[2]) <= 5000  # backoff 25-50 ms; most of the 5 s left


async def test_every_batch_of_a_flush_gets_the_full_number_of_attempts():
    sink = ScriptedSink("a", [WriteResult.ok(), WriteResult.retryable("503"), WriteResult.retryable("503")])
    dispatcher, ledger, _ = setup([sink], max_attempts=3)
    add_batch(dispatcher, ledger, 4)
    await dispatcher.flush(time.monotonic() + 5)
    assert [(b.batch_id, b.attempt) for b in sink.seen] == [
        ("env-00000001", 1),
        ("env-00000002", 1),
        ("env-00000002", 2),
        ("env-00000002", 3),
    ]
    assert dispatcher.backlog() == {"a": 0} and dispatcher.states["a"].consecutive_failures == 0


class HangingStart(ScriptedSink):
    async def start(self):
        self.started += 1
        await asyncio.sleep(3600)


async def test_a_start_that_hangs_past_a_fair_budget_is_the_sinks_fault_and_opens_its_breaker(caplog):
    sink = HangingStart("a")
    dispatcher, ledger, _ = setup([sink])
    dispatcher.fair_budget_s = 0.1
    ledger.sinks["a"].faults = 2
    with caplog.at_level(logging.ERROR, "capture_ext.core.dispatcher"):
        await dispatcher.flush(time.monotonic() + 0.3)
    state = dispatcher.states["a"]
    assert re.fullmatch(r"start\(\) did not finish within [1-9]\d{0,2} ms", state.last_error), state.last_error
    assert [r.getMessage() for r in caplog.records] == [f"sink a: {state.last_error}"]
    assert ledger.sinks["a"].faults == 3 and sink.seen == [] and not state.started
    assert dispatcher.states_by_name() == {"a": "open"} and state.consecutive_failures == 1


async def test_a_start_cut_short_by_a_small_flush_budget_is_not_counted_and_ends_with_the_flush():
    sink = HangingStart("a")
    dispatcher, ledger, _ = setup([sink])  # fair budget 2 s: a 50 ms flush is not a fair start
    started = time.monotonic()
    await dispatcher.flush(started + 0.05)
    assert time.monotonic() - started < 0.9  # cut at the flush's deadline, not a second later
    assert ledger.sinks["a"].faults == 0 and sink.seen == [] and dispatcher.backlog() == {"a": 4}


async def test_a_sink_is_started_once_and_a_start_that_raises_is_named_in_the_log(caplog):
    sink = FailingStart("a")
    dispatcher, ledger, _ = setup([sink])
    with caplog.at_level(logging.ERROR, "capture_ext.core.dispatcher"):
        await dispatcher.flush(time.monotonic() + 5)
    assert [r.getMessage() for r in caplog.records] == [
        "sink a raised from start(), counted as its failure: ConnectionError: endpoint unreachable"
    ]
    assert ledger.sinks["a"].faults == 1
    await dispatcher.flush(time.monotonic() + 5, ignore_breakers=True)
    add_batch(dispatcher, ledger, 4)
    await dispatcher.flush(time.monotonic() + 5, ignore_breakers=True)
    assert sink.started == 2 and len(sink.delivered) == 8  # started again once, then never again


async def test_a_fatal_batch_does_not_hold_up_the_next_one_in_the_same_flush():
    sink = ScriptedSink("a", [WriteResult.fatal("AccessDenied")])
    dispatcher, ledger, _ = setup([sink])
    add_batch(dispatcher, ledger, 4)
    await dispatcher.flush(time.monotonic() + 5)
    assert ledger.sinks["a"].dropped == {"fatal": 4} and sink.delivered == ["r4", "r5", "r6", "r7"]


async def test_one_partial_failure_pins_the_batch_for_the_retry():
    sink = ScriptedSink("a", [WriteResult.retryable("x", failed_indices=(1,))])
    dispatcher, _, _ = setup([sink], max_attempts=1)
    await dispatcher.flush(time.monotonic() + 5)
    (pending,) = dispatcher.states["a"].backlog
    assert len(pending.subset) == 1 and pending.sealed.busy == 1


async def test_a_retryable_answer_without_an_error_text_reads_retryable_error():
    sink = ScriptedSink("a", [WriteResult(Outcome.RETRYABLE)])
    dispatcher, _, _ = setup([sink], max_attempts=1)
    await dispatcher.flush(time.monotonic() + 5)
    assert dispatcher.states["a"].last_error == "retryable error"


async def test_a_sink_that_blocks_the_loop_during_a_flush_is_named_by_the_watchdog():
    class Blocking(ScriptedSink):
        async def write_batch(self, batch):
            time.sleep(0.3)  # noqa: ASYNC251 - the fault under test: a sink that blocks the loop
            return await super().write_batch(batch)

    sink = Blocking("a")
    dispatcher, _, _ = setup([sink])
    dispatcher.watchdog.threshold_s = 0.1
    await dispatcher.flush(time.monotonic() + 5)
    assert dispatcher.watchdog.blocked == {"sink a": 1}


async def test_by_default_a_write_hanging_through_more_than_one_second_has_failed():
    """The default fair budget (2 s, what the plugin contract kit uses) halves to 1 s per write."""
    sink = ScriptedSink("a", delay=3600)
    dispatcher, _, _ = setup([sink], max_attempts=1)
    await dispatcher.flush(time.monotonic() + 1.1)
    assert dispatcher.states["a"].consecutive_failures == 1 and dispatcher.states_by_name() == {"a": "open"}


async def test_a_batch_lost_on_disk_is_logged_with_how_many_records_could_be_read(tmp_path, caplog):
    _, _, _, cold = await flush_past_a_spoiled_cold_batch(tmp_path, caplog, blank)
    assert [r.getMessage() for r in caplog.records] == [
        f"sink a: batch {cold.batch_id} cannot be read back from the spool (0 of 5 records could be read back)"
    ]
