from capture_ext.core.buffer import MemoryBudget, RecordBuffer


def make(max_records=3, max_bytes=100, limit=1000):
    return RecordBuffer("env", MemoryBudget(limit), max_records, max_bytes)


def test_seal_cuts_batches_by_count_and_bytes_with_stable_ids():
    buffer = make(max_records=3, max_bytes=25)
    for i in range(7):
        assert buffer.add({"inference_id": str(i)}, 10)
    sealed = buffer.seal()
    assert [len(s.batch) for s in sealed] == [2, 2, 2, 1]  # 25 bytes hold two 10-byte records
    assert [s.batch.batch_id for s in sealed] == [f"env-{n:08d}" for n in range(1, 5)]
    assert [r["inference_id"] for s in sealed for r in s.batch.records] == [str(i) for i in range(7)]
    assert len(buffer) == 0 and buffer.bytes == 0
    buffer.add({"inference_id": "x"}, 1)
    assert buffer.seal()[0].batch.sequence == 5  # sequences never repeat within a process


def test_memory_bound_refuses_records_and_release_makes_room():
    budget = MemoryBudget(25)
    buffer = RecordBuffer("env", budget, 10, 100)
    assert buffer.add({"inference_id": "a"}, 10)
    assert buffer.add({"inference_id": "b"}, 10)
    assert not buffer.add({"inference_id": "c"}, 10)
    assert len(buffer) == 2
    sealed = buffer.seal()
    assert budget.used == 20  # sealed batches still hold memory until the sinks are done
    budget.release(sealed[0].size)
    assert buffer.add({"inference_id": "c"}, 10)


def test_size_and_age_triggers():
    buffer = make(max_records=2, max_bytes=1000)
    assert not buffer.size_due() and buffer.age_s() == 0
    buffer.add({"inference_id": "a"}, 1)
    assert not buffer.size_due()
    assert buffer.age_s(now=buffer._oldest + 5) == 5
    buffer.add({"inference_id": "b"}, 1)
    assert buffer.size_due()


def test_the_bounds_are_inclusive_to_the_byte():
    budget = MemoryBudget(20)
    assert budget.reserve(20) and not budget.reserve(1)  # an exact fit is kept, one byte more is not
    budget.release(50)
    assert budget.used == 0  # never below zero
    buffer = make(max_records=10, max_bytes=20)
    buffer.add({"inference_id": "a"}, 10)
    buffer.add({"inference_id": "b"}, 9)
    assert buffer.bytes == 19 and not buffer.size_due()
    buffer.add({"inference_id": "c"}, 1)
    assert buffer.bytes == 20 and buffer.size_due()  # exactly max_bytes is due


def test_batches_are_cut_at_exactly_max_records_and_at_exactly_max_bytes():
    by_count = make(max_records=2, max_bytes=1000)
    for i in range(5):
        by_count.add({"inference_id": str(i)}, 10)
    assert [len(s.batch) for s in by_count.seal()] == [2, 2, 1]
    by_bytes = make(max_records=10, max_bytes=30)
    for i in range(7):
        by_bytes.add({"inference_id": str(i)}, 10)
    sealed = by_bytes.seal()
    assert [len(s.batch) for s in sealed] == [3, 3, 1]  # 30 bytes fill a batch exactly
    assert [s.size for s in sealed] == [30, 30, 10]


def test_a_sealed_batch_carries_its_identity_and_its_byte_range():
    buffer = make(max_records=10, max_bytes=1000)
    buffer.add_spooled({"inference_id": "a"}, 10, 20)  # after a 9-byte header: bytes 9..19, newline at 19
    buffer.add_spooled({"inference_id": "b"}, 10, 31)
    (sealed,) = buffer.seal()
    assert (sealed.start, sealed.end) == (9, 31)
    assert (sealed.batch_id, sealed.environment_id, sealed.sequence, sealed.count) == ("env-00000001", "env", 1, 2)
    assert sealed.batch.environment_id == "env"
    buffer.add({"inference_id": "c"}, 10)  # memory only: not in the spool
    (memory_only,) = buffer.seal()
    assert (memory_only.start, memory_only.end) == (-1, -1)


def test_a_sealed_batch_keeps_an_identity_it_was_given():
    from capture_ext.core.buffer import SealedBatch

    cold = SealedBatch(batch=None, size=0)  # read back later: no records in memory yet
    assert cold.batch_id == "" and cold.count == 0
    buffer = make()
    buffer.add({"inference_id": "a"}, 1)
    (sealed,) = buffer.seal()
    renamed = SealedBatch(batch=sealed.batch, size=1, batch_id="given", sequence=7)
    assert (renamed.batch_id, renamed.sequence, renamed.count) == ("given", 7, 0)


def test_age_counts_from_the_oldest_record_on_the_monotonic_clock():
    buffer = make()
    buffer.add({"inference_id": "a"}, 1)
    assert 0 <= buffer.age_s() < 60
    first = buffer._oldest
    buffer.add({"inference_id": "b"}, 1)
    assert buffer._oldest == first  # the second record does not reset the age
