"""Memory as a cache of the spool: long outages, catch-up, overload and throttling hints."""

import random
import time

from capture_ext.core.buffer import MemoryBudget, RecordBuffer
from capture_ext.core.dispatcher import Dispatcher
from capture_ext.core.ingest import Ingest
from capture_ext.core.ledger import Ledger
from capture_ext.core.records import Enricher, normalize
from capture_ext.core.spool import Spool
from capture_ext.core.store import Store
from tests.fakes.sinks import ScriptedSink as Sink


def build(tmp_path, sinks, memory=4000, spool_bytes=10_000_000, env="env"):
    ledger = Ledger()
    budget = MemoryBudget(memory)
    buffer = RecordBuffer(env, budget, 5, 2000)
    spool = Spool(str(tmp_path / "spool"), spool_bytes, "never", env) if spool_bytes else None
    if spool:
        spool.open()
    store = Store(buffer, budget, spool, sinks=[s.name for s in sinks])
    dispatcher = Dispatcher({s.name: s for s in sinks}, ledger, store, 2, random.Random(0))
    ingest = Ingest(store, ledger, Enricher("f", "1", env), 100_000)
    return ingest, store, dispatcher, ledger


def reconciled(ingest, dispatcher, ledger):
    hot, cold = dispatcher.backlog_split()
    sinks = ledger.health(len(ingest.buffer), hot, cold)["sinks"]
    return all(s["reconciled"] for s in sinks.values()), sinks


async def flush(store, dispatcher, ignore_breakers=True):
    store.seal()
    await dispatcher.flush(time.monotonic() + 5, ignore_breakers=ignore_breakers)


async def test_a_long_outage_is_held_on_disk_and_caught_up_without_touching_the_other_sink(tmp_path):
    down, healthy = Sink("down"), Sink("healthy")
    ingest, store, dispatcher, ledger = build(tmp_path, [down, healthy])
    down.down = True
    sent = []
    for round_ in range(30):  # thirty "invokes" while one sink is down
        batch = [normalize({"input": "x" * 40, "inference_id": f"r{round_}-{i}"}) for i in range(7)]
        sent += [r["inference_id"] for r in batch]
        assert ingest.accept(batch) == 7
        await flush(store, dispatcher)
        assert store.budget.used <= store.budget.limit
        ok, sinks = reconciled(ingest, dispatcher, ledger)
        assert ok, sinks
    assert healthy.delivered == sent  # unaffected, in order
    assert store.evicted > 0 and sinks["down"]["spooled"] > 0  # most of the outage is on disk only
    down.down = False
    while dispatcher.has_work(ignore_breakers=True):
        await flush(store, dispatcher)
        assert store.budget.used <= store.budget.limit + 2000  # at most one batch read back past the bound
    assert sorted(down.delivered) == sorted(sent) and len(down.delivered) == len(set(down.delivered))
    assert store.loaded > 0
    ok, sinks = reconciled(ingest, dispatcher, ledger)
    assert ok and sinks["down"]["delivered"] == len(sent)
    assert store.budget.used == 0
    assert len(store.spool.segments) == 1  # everything delivered: only the active segment is left


async def test_when_the_spool_is_full_new_records_are_refused_and_counted(tmp_path):
    down = Sink("down")
    down.down = True
    ingest, store, dispatcher, ledger = build(tmp_path, [down], spool_bytes=3000)
    accepted = 0
    for i in range(100):
        accepted += ingest.accept([normalize({"input": "y" * 50, "inference_id": f"r{i}"})])
        await flush(store, dispatcher, ignore_breakers=False)
    assert 0 < accepted < 100
    assert ledger.dropped["spool_full"] == 100 - accepted
    assert store.spool.bytes <= 3000
    ok, sinks = reconciled(ingest, dispatcher, ledger)
    assert ok and sinks["down"]["received"] == 100


async def test_without_a_spool_the_memory_bound_drops_and_counts(tmp_path):
    sink = Sink("a")
    sink.down = True
    ingest, _store, dispatcher, ledger = build(tmp_path, [sink], memory=1000, spool_bytes=0)
    kept = sum(ingest.accept([normalize({"input": "z" * 50})]) for _ in range(50))
    assert kept < 50 and ledger.dropped["buffer_full"] == 50 - kept
    assert reconciled(ingest, dispatcher, ledger)[0]


async def test_a_throttling_hint_keeps_the_breaker_open_at_least_that_long(tmp_path):
    sink = Sink("a")
    sink.down, sink.retry_after_s = True, 42.0
    ingest, store, dispatcher, _ = build(tmp_path, [sink])
    ingest.accept([normalize({"input": 1})])
    store.seal()
    await dispatcher.flush(time.monotonic() + 0.5)
    state = dispatcher.states["a"]
    assert state.retry_at - time.monotonic() > 40
    assert not dispatcher.has_work()  # ordinary flushes leave it alone until then
