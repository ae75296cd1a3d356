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
    assert store.add(items(0, 10)) == (0, "buffer_full")  # all or nothing, in memory too
    assert store.add(items(0, 2)) == (2, "")
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


def size_of(first, count, pad=40):
    return sum(len(data) for _, data in items(first, count, pad))


def test_pressure_moves_the_newest_batch_first_and_stops_exactly_at_the_target(tmp_path):
    store = build(tmp_path, memory=100_000, max_records=5)
    store.add(items(0, 5, pad=40))
    (old,) = store.seal()
    store.add(items(5, 5, pad=40))
    (new,) = store.seal()
    one = size_of(0, 5)
    assert store.budget.used == 2 * one
    # Set the bound so that moving the newest batch alone lands exactly on the target.
    store.headroom = 0
    store.budget.limit = one
    store.relieve()
    assert new.batch is None and old.batch is not None  # newest first, and no further than needed
    assert store.evicted == 1 and store.budget.used == one
    store.budget.limit = one - 1
    store.relieve()
    assert old.batch is None and store.evicted == 2 and store.budget.used == 0


def test_the_headroom_is_a_quarter_of_the_bound_or_one_batch_whichever_is_smaller():
    budget = MemoryBudget(1003)
    assert Store(RecordBuffer("env", budget, 10, 1_000_000), budget).headroom == 250
    assert Store(RecordBuffer("env", budget, 10, 100), budget).headroom == 100


def test_exactly_at_the_bound_nothing_is_moved_to_disk(tmp_path):
    store = build(tmp_path, memory=100_000, max_records=5)
    store.add(items(0, 5, pad=40))
    (sealed,) = store.seal()
    store.budget.limit = size_of(0, 5) + size_of(5, 3)
    store.add(items(5, 3, pad=40))  # reaches the bound exactly: nothing to relieve
    assert store.budget.used == store.budget.limit
    assert sealed.batch is not None and store.evicted == 0 and len(store.buffer) == 3


def test_a_relief_that_lands_exactly_on_the_bound_does_not_seal_the_buffer(tmp_path):
    store = build(tmp_path, memory=100_000, max_records=5)
    store.add(items(0, 5, pad=40))
    (busy,) = store.seal()
    store.add(items(5, 5, pad=40))
    (idle,) = store.seal()
    store.checkout(busy)
    store.add(items(10, 2, pad=40))
    store.headroom = 100
    store.budget.limit = size_of(0, 5) + size_of(10, 3)  # all that is left once `idle` is on disk
    store.add(items(12, 1, pad=40))
    assert idle.batch is None and busy.batch is not None
    assert store.budget.used == store.budget.limit and len(store.buffer) == 3  # not sealed


async def test_a_read_back_that_lands_exactly_on_the_bound_moves_nothing_else(tmp_path):
    store = build(tmp_path, memory=100_000, max_records=5)
    store.add(items(0, 5, pad=40))
    (hot,) = store.seal()
    store.add(items(5, 5, pad=40))
    (cold,) = store.seal()
    store.headroom = 0
    store.budget.limit = size_of(0, 5)
    store.relieve()  # the newest batch goes to disk
    assert cold.batch is None and hot.batch is not None and store.evicted == 1
    store.budget.limit = size_of(0, 10)
    store.headroom = 10  # a relief now would move a batch out
    await store.load(cold)
    assert store.budget.used == store.budget.limit and hot.batch is not None and store.evicted == 1


def test_checkout_and_pin_add_up_and_only_both_released_free_the_batch(tmp_path):
    store = build(tmp_path, memory=100_000, max_records=5)
    store.add(items(0, 5, pad=40))
    (sealed,) = store.seal()
    store.checkout(sealed)
    store.pin(sealed)
    store.checkin(sealed)
    assert sealed.busy == 1  # still pinned by the partial retry
    store.headroom = 0
    store.budget.limit = 1
    store.relieve()
    assert sealed.batch is not None and store.evicted == 0
    store.unpin(sealed)
    store.relieve()
    assert sealed.batch is None and store.evicted == 1


async def test_a_memory_only_batch_is_never_dropped_to_make_room(tmp_path):
    """After the spool broke, new batches live in memory only: pressure must never evict them."""
    store = build(tmp_path, memory=100_000, max_records=5)
    store.add(items(0, 5, pad=40))
    (cold,) = store.seal()
    store.headroom = 0
    store.budget.limit = 1
    store.relieve()
    assert cold.batch is None
    store.spool._break("test: disk gone")
    store.budget.limit = 100_000
    assert store.add(items(5, 5, pad=40)) == (5, "")
    (memory_only,) = store.seal()
    assert memory_only.location is None
    store.budget.limit = size_of(0, 5)  # reading `cold` back pushes memory past the bound
    await store.load(cold)
    assert memory_only.batch is not None  # the only copy of its records
    for sink in ("a", "b"):
        store.done(memory_only, sink)  # released without touching the broken spool
    assert memory_only.waiting == set() and store.budget.used == 0


async def test_released_batches_leave_no_trace_in_memory(tmp_path):
    store = build(tmp_path, memory=100_000, max_records=5)
    store.add(items(0, 10, pad=40))
    batches = store.seal()
    for sealed in batches:
        store.done(sealed, "a")
        store.done(sealed, "b")
    assert store.budget.used == 0 and store._hot == {}  # nothing released can be "moved to disk" later


async def test_adopted_batches_read_back_with_their_identity_and_are_accounted_apart(tmp_path, caplog):
    dead = build(tmp_path, env="dead", max_records=2)
    dead.add(items(0, 4))
    dead.seal()
    for fd in dead.spool._locks.values():
        os.close(fd)
    dead.spool._locks.clear()
    heir = build(tmp_path, env="heir")
    with caplog.at_level(logging.INFO, "capture_ext.core.store"):
        assert heir.adopt() == {"a": 4, "b": 4}
    assert [r.getMessage() for r in caplog.records] == [
        "spool: replaying 2 batches left by an earlier process ({'a': 4, 'b': 4})"
    ]
    first, second = heir.take_new()
    assert first.size == first.location.end - first.location.start == size_of(0, 2, pad=0) + 2
    batches = [await heir.load(first), await heir.load(second)]
    assert [(b.batch_id, b.environment_id, b.sequence) for b in batches] == [
        ("dead-00000001", "dead", 1),
        ("dead-00000002", "dead", 2),
    ]
    assert heir.loaded == 2 and heir.budget.used == size_of(0, 4, pad=0)
    for sealed in (first, second):
        heir.done(sealed, "a")
        heir.done(sealed, "b")
    assert heir.budget.used == 0


def test_an_unreadable_spool_is_logged_with_its_error(tmp_path, monkeypatch, caplog):
    store = build(tmp_path)

    def unreadable():
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store.spool, "adopt", unreadable)
    with caplog.at_level(logging.ERROR, "capture_ext.core.store"):
        store.adopt()
    assert [r.getMessage() for r in caplog.records] == [
        "spool: could not adopt earlier processes' records: [Errno 13] Permission denied"
    ]
