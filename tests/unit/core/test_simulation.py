"""The delivery-core simulation (tests/sim) as part of every ``make test``.

``CAPTURE_SIM_SEEDS`` sets how many seeds run here (default 1,000); ``make sim SEEDS=N`` runs any
number outside pytest, and a failure prints its seed and a shrunk history that replays.
"""

from __future__ import annotations

import os

import orjson
import pytest

from capture_ext.core import dispatcher as dispatcher_module
from capture_ext.core import spool as spool_module
from capture_ext.models import Batch, WriteResult
from tests.sim.history import describe, run, shrink

SEEDS = int(os.environ.get("CAPTURE_SIM_SEEDS", "1000"))
CHUNK = 100


@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK))
def test_every_seeded_history_keeps_every_promise(first: int) -> None:
    for seed in range(first, min(first + CHUNK, SEEDS)):
        outcome = run(seed)
        if not outcome.ok:
            pytest.fail(describe(shrink(outcome)), pytrace=False)


def test_a_seed_replays_the_same_history() -> None:
    for seed in (3, 17, 256):
        first, second = run(seed), run(seed)
        assert first.ok and second.ok
        assert first.fingerprint == second.fingerprint and first.steps == second.steps


def first_failing_seed(limit: int = 400) -> int | None:
    for seed in range(limit):
        if not run(seed).ok:
            return seed
    return None


# -- the simulation has teeth: each defect it was built to find, put back, is found ------------
def _per_segment_batch_ids(self: spool_module.Spool, scan: spool_module.Scan) -> None:
    """The recovery as it was: the dead process's next id after the seals *of that segment*."""
    for segment, run_ in scan.runs:
        sealed = [s["q"] for s in scan.seals.values() if s["segment"] is segment]
        sequence = max(sealed, default=0) + 1
        batch_id = f"{segment.environment_id}-{sequence:08d}"
        seal = {"b": batch_id, "e": segment.environment_id, "q": sequence, "n": len(run_)}
        seal.update(s=run_[0][0], t=run_[-1][1])
        line = spool_module.SEAL + orjson.dumps(seal) + b"\n"
        with open(segment.path, "ab") as handle:
            handle.write(line)
        segment.size += len(line)
        scan.seals[batch_id] = {**seal, "segment": segment}


def _sealed_up_to_the_last_seal_line(segment: spool_module.Segment, scan: spool_module.Scan) -> None:
    """The scan as it was: every record before the last seal line counts as sealed."""
    data = open(segment.path, "rb").read()  # noqa: SIM115 - a mutant, kept short
    position, run_ = 0, []
    while (end := data.find(b"\n", position)) >= 0:
        line = data[position:end]
        if line[:1] == b"{":
            run_.append((position, end + 1))
        elif line[:1] == spool_module.SEAL:
            seal = {**orjson.loads(line[1:]), "segment": segment}
            scan.seals[seal["b"]] = seal
            scan.saw_sequence(seal["e"], int(seal["q"]))
            run_ = []
        elif line[:1] == spool_module.ACK:
            ack = orjson.loads(line[1:])
            scan.acks.setdefault(ack["b"], set()).add(ack["s"])
        elif line[:1] == spool_module.HEADER:
            scan.saw_sequence(segment.environment_id, int(orjson.loads(line[1:])["q"]))
        position = end + 1
    segment.size = position
    if position < len(data):
        os.truncate(segment.path, position)
    if run_:
        scan.runs.append((segment, run_))


def _retry_by_shared_ids(batch: Batch, result: WriteResult) -> Batch:
    if result.failed_indices:
        ids = {batch.records[i].get("inference_id") for i in result.failed_indices}
        kept = tuple(r for r in batch.records if r.get("inference_id") in ids)
        return Batch(batch.batch_id, batch.environment_id, batch.sequence, kept, batch.attempt + 1)
    return original_failed_part(batch, result)


original_failed_part = dispatcher_module.failed_part


@pytest.mark.parametrize(
    ("target", "name", "mutant"),
    [
        (spool_module.Spool, "_seal_runs", _per_segment_batch_ids),
        (dispatcher_module, "failed_part", _retry_by_shared_ids),
        (spool_module, "scan_segment", _sealed_up_to_the_last_seal_line),
    ],
    ids=["recovered-batch-id-reuse", "retry-by-shared-client-id", "kill-between-two-seal-lines"],
)
def test_the_simulation_finds_a_defect_put_back(monkeypatch: pytest.MonkeyPatch, target, name, mutant) -> None:
    monkeypatch.setattr(target, name, mutant)
    assert first_failing_seed() is not None, f"the simulation did not notice {name} being broken"


def test_the_simulation_finds_an_exception_escaping_ingest(monkeypatch: pytest.MonkeyPatch) -> None:
    from capture_ext.core.ingest import Ingest

    real = Ingest.accept

    def accept_without_isolation(self: Ingest, records: list, whole: bool = False) -> int:
        for record in records:
            if isinstance(record.get("input"), dict) and "secret" in record["input"]:
                self._ready(record)  # raises, as the unguarded path did
        return real(self, records, whole)

    monkeypatch.setattr(Ingest, "accept", accept_without_isolation)
    assert first_failing_seed() is not None
