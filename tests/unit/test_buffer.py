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
