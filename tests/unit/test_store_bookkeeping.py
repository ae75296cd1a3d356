"""The store's bookkeeping on its own: hand-over, idempotent completion, eviction, read-back, adoption."""

import logging
import os

import orjson

from capture_ext.core.buffer import MemoryBudget, RecordBuffer
from capture_ext.core.spool import Spool
from capture_ext.core.store import Store


def record(n, pad=0):
    return {"inference_id": f"r{n}", "n": n, "pad": "x" * pad}


def items(first, count, pad=0):
    return [(record(n, pad), orjson.dumps(record(n, pad))) for n in range(first, first + count)]


def build(tmp_path, sinks=("a", "b"), memory=100_000, spool=True, env="env", max_records=100):
    budget = MemoryBudget(memory)
    buffer = RecordBuffer(env, budget, max_records, 1_000_000)
    disk = None
    if spool:
        disk = Spool(str(tmp_path / "spool"), 10_000_000, "never", env)
        disk.open()
    return Store(buffer, budget, disk, sinks=sinks)


def test_a_batch_is_released_only_when_the_last_sink_is_done_and_done_is_idempotent(tmp_path):
    store = build(tmp_path)
    assert store.add(items(0, 3)) == (3, "")
    (sealed,) = store.seal()
    assert store.has_new() and store.take_new() == [sealed] and not store.has_new()
    used = store.budget.used
    assert used > 0 and sealed.location is not None and sealed.location.segment.open_batches == 1
    store.done(sealed, "a")
    store.done(sealed, "a")  # a second report for the same sink changes nothing
    assert sealed.waiting == {"b"} and store.budget.used == used
    store.done(sealed, "b")
    assert store.budget.used == 0 and sealed.location.segment.open_batches == 0
    with open(sealed.location.segment.path, "rb") as handle:
        acks = [orjson.loads(x[1:]) for x in handle.read().splitlines() if x.startswith(b"A")]
    assert acks == [{"b": "env-00000001", "s": "a"}, {"b": "env-00000001", "s": "b"}]


def test_without_sinks_a_sealed_batch_is_released_at_once(tmp_path):
    store = build(tmp_path, sinks=())
    store.add(items(0, 2))
    (sealed,) = store.seal()
    assert not store.has_new() and store.budget.used == 0
    assert sealed.location is not None and sealed.location.segment.open_batches == 0


def test_a_broken_spool_falls_back_to_memory_and_the_bound(tmp_path):
    store = build(tmp_path, memory=200)
    assert store.durable
    store.spool._break("test: disk gone")
    assert not store.durable
    kept, reason = store.add(items(0, 10))
    assert 0 < kept < 10 and reason == "buffer_full"
    (sealed,) = store.seal()
    assert sealed.location is None  # nothing of it on disk


def test_pressure_moves_the_newest_idle_batches_to_disk_and_keeps_busy_ones(tmp_path):
    store = build(tmp_path, memory=2000, max_records=5)
    store.add(items(0, 5, pad=40))
    (old,) = store.seal()
    store.add(items(5, 5, pad=40))
    (new,) = store.seal()
    store.checkout(new)  # a sink is writing the newest one right now
    store.add(items(10, 20, pad=40))  # past the bound: relieve() moves batches to disk
    assert new.batch is not None  # busy: never dropped from memory
    assert old.batch is None and store.evicted >= 1
    assert store.budget.used <= store.budget.limit
    store.checkin(new)
    assert new.busy == 0


def test_a_pinned_batch_stays_in_memory_until_unpinned(tmp_path):
    store = build(tmp_path, memory=1200, max_records=5)
    store.add(items(0, 5, pad=40))
    (pinned,) = store.seal()
    store.pin(pinned)
    store.add(items(5, 20, pad=40))
    assert pinned.batch is not None
    store.unpin(pinned)
    store.add(items(25, 10, pad=40))
    assert pinned.batch is None  # idle again: it may go to disk like any other


async def test_reading_back_a_cold_batch_restores_it_once_even_when_two_sinks_ask(tmp_path):
    store = build(tmp_path, memory=1500, max_records=5)
    store.add(items(0, 5, pad=40))
    (cold,) = store.seal()
    store.add(items(5, 20, pad=40))
    assert cold.batch is None
    first = await store.load(cold)
    second = await store.load(cold)  # already back in memory: not counted twice
    assert [r["n"] for r in first.records] == [0, 1, 2, 3, 4] and first.batch_id == "env-00000001"
    assert second.records == first.records and store.loaded == 1 and cold.batch is first


async def test_a_batch_every_sink_finished_while_it_was_read_is_not_put_back(tmp_path):
    store = build(tmp_path, memory=1500, max_records=5)
    store.add(items(0, 5, pad=40))
    (cold,) = store.seal()
    store.add(items(5, 20, pad=40))
    assert cold.batch is None
    store.done(cold, "a")
    store.done(cold, "b")
    used = store.budget.used
    batch = await store.load(cold)
    assert len(batch) == 5 and cold.batch is None and store.budget.used == used and store.loaded == 0


def test_adoption_queues_what_a_dead_process_left_for_the_sinks_that_still_need_it(tmp_path, caplog):
    dead = build(tmp_path, env="dead")
    dead.add(items(0, 2))
    (first,) = dead.seal()
    dead.add(items(2, 3))
    (second,) = dead.seal()
    dead.done(first, "a")
    dead.done(first, "b")
    dead.done(second, "a")
    dead.add(items(5, 1))  # never sealed
    for fd in dead.spool._locks.values():
        os.close(fd)
    dead.spool._locks.clear()

    heir = build(tmp_path, env="heir")
    with caplog.at_level(logging.INFO, "capture_ext.core.store"):
        adopted = heir.adopt()
    assert adopted == {"a": 1, "b": 4}
    queued = heir.take_new()
    assert [(s.batch_id, s.waiting, s.count, s.batch) for s in queued] == [
        ("dead-00000002", {"b"}, 3, None),
        ("dead-00000003", {"a", "b"}, 1, None),
    ]
    assert heir.replayed == 4
    assert "replaying 2 batches" in caplog.text
    for sealed in queued:
        for sink in sorted(sealed.waiting):
            heir.done(sealed, sink)
    assert [s.environment_id for s in heir.spool.segments] == ["heir"]  # the dead process's files went


def test_adoption_without_a_spool_or_with_an_unreadable_one_adopts_nothing(tmp_path, monkeypatch, caplog):
    assert build(tmp_path, spool=False).adopt() == {"a": 0, "b": 0}
    store = build(tmp_path)

    def unreadable():
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store.spool, "adopt", unreadable)
    with caplog.at_level(logging.ERROR, "capture_ext.core.store"):
        assert store.adopt() == {"a": 0, "b": 0}
    assert "could not adopt earlier processes' records" in caplog.text


def test_close_keeps_unsealed_records_on_disk_and_describe_reports_both_tiers(tmp_path):
    store = build(tmp_path)
    store.add(items(0, 2))
    info = store.describe()
    assert info["memory_bytes"] == store.budget.used > 0 and info["memory_limit"] == 100_000
    assert info["spool"]["segments"] == 1 and info["evicted"] == 0 and info["loaded"] == 0
    store.close()
    assert len(os.listdir(tmp_path / "spool")) == 2  # segment and lock: the records wait for the next process
    memory_only = build(tmp_path / "m", spool=False)
    memory_only.close()
    assert memory_only.describe() == {"memory_bytes": 0, "memory_limit": 100_000}
