"""The model the simulation checks against, and the sinks it delivers to.

Every record the simulation generates carries a unique ``uid`` (inside ``input``, or ``output``
when it has no input), while its ``inference_id`` is often shared with other records, as client
ids are. The model remembers which uids were acknowledged, which were excused for a sink (a
``fatal`` answer, a full spool, a ``capture_prepare_record`` hook that raised), and what every
sink holds; a violation is recorded the moment it is seen.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from capture_ext.models import Batch, WriteResult
from capture_ext.sinks._layout import group_by_partition, object_key

#: Kinds of answers a faulty sink gives (weights are per fault profile).
ANSWERS = ("ok", "retryable", "partial", "fatal", "raise", "hang", "applied_then_hang", "retry_after")
PROFILES: dict[str, dict[str, float]] = {
    "healthy": {"ok": 1.0},
    "flaky": {
        "ok": 4,
        "retryable": 1,
        "partial": 2,
        "fatal": 0.3,
        "raise": 0.5,
        "hang": 0.5,
        "applied_then_hang": 0.5,
        "retry_after": 0.5,
    },
    "down": {"retryable": 3, "raise": 1, "hang": 1, "retry_after": 1},
}


def uid_of(record: dict[str, Any]) -> int | None:
    for part in ("input", "output"):
        value = record.get(part)
        if isinstance(value, dict) and isinstance(value.get("uid"), int):
            return int(value["uid"])
    return None


@dataclass
class Model:
    acknowledged: set[int] = field(default_factory=set)
    #: uid -> sinks for which it may legitimately be missing (None: every sink).
    excused: dict[int, set[str] | None] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def excuse(self, uid: int, sink: str | None) -> None:
        if sink is None:
            self.excused[uid] = None
            return
        current = self.excused.setdefault(uid, set())
        if current is not None:
            current.add(sink)

    def is_excused(self, uid: int, sink: str) -> bool:
        if uid not in self.excused:
            return False
        sinks = self.excused[uid]
        return sinks is None or sink in sinks

    def violate(self, message: str) -> None:
        if message not in self.violations:
            self.violations.append(message)


class ModelSink:
    """A sink whose answers come from a seeded fault plan; shared by all simulated processes.

    ``kind="s3"`` stores one object per (partition, batch id) key, overwriting on retries, as the
    S3 sinks do; ``kind="log"`` appends, as CloudWatch Logs and Firehose do.
    """

    def __init__(self, name: str, kind: str, model: Model, function_name: str) -> None:
        self.name = name
        self.kind = kind
        self.model = model
        self.function_name = function_name
        self.objects: dict[str, list[int]] = {}
        self.appended: list[int] = []
        self.profile = "healthy"
        self.rng = random.Random(0)
        self.use_indices = True
        self.writes = 0

    def plan(self, profile: str, seed: int, use_indices: bool) -> None:
        self.profile, self.rng, self.use_indices = profile, random.Random(seed), use_indices

    def delivered(self) -> set[int]:
        if self.kind == "s3":
            return {uid for uids in self.objects.values() for uid in uids}
        return set(self.appended)

    def _answer(self) -> str:
        weights = PROFILES[self.profile]
        names = list(weights)
        return self.rng.choices(names, [weights[n] for n in names])[0]

    # The dead flag is checked by the per-process proxy (see world.SinkProxy).
    async def write(self, batch: Batch, alive: Any) -> WriteResult:
        self.writes += 1
        answer = self._answer()
        if (
            self.kind == "s3"
            and self.profile != "healthy"
            and len(group_by_partition(batch.records, self.function_name)) > 1
            and self.rng.random() < 0.5
        ):
            answer = "partial"  # per-prefix throttling (503 SlowDown) fails one partition's PUT
        latency = self.rng.choice((0.0, 0.0, 0.001, 0.02, 0.2))
        if latency:
            await asyncio.sleep(latency)
        if not alive():
            await asyncio.Event().wait()  # a dead process's write never lands
        records = list(batch.records)
        if answer in ("ok", "applied_then_hang"):
            self._apply(batch, records)
            if answer == "applied_then_hang":
                await asyncio.sleep(10_000)
            return WriteResult.ok()
        if answer == "retryable":
            return WriteResult.retryable("model: retryable")
        if answer == "retry_after":
            return WriteResult.retryable("model: throttled", retry_after_s=self.rng.choice((0.5, 3.0, 30.0)))
        if answer == "fatal":
            for record in records:
                uid = uid_of(record)
                if uid is not None:
                    self.model.excuse(uid, self.name)
            return WriteResult.fatal("model: fatal")
        if answer == "raise":
            raise RuntimeError("model: the sink raised")
        if answer == "hang":
            await asyncio.sleep(10_000)
            return WriteResult.ok()
        return self._partial(batch, records)

    def _partial(self, batch: Batch, records: list[dict[str, Any]]) -> WriteResult:
        if self.kind == "s3":
            groups = group_by_partition(records, self.function_name)
            failed_positions: list[int] = []
            position_of = {id(record): index for index, record in enumerate(records)}
            for partition, members in groups.items():
                if self.rng.random() < 0.5:
                    failed_positions += [position_of[id(r)] for r in members]
                else:
                    self._put(object_key("", "x", partition, batch.batch_id, "x"), members)
        else:
            failed_positions = [i for i in range(len(records)) if self.rng.random() < 0.5]
            self.appended += [
                uid
                for i, r in enumerate(records)
                if i not in set(failed_positions)
                for uid in [uid_of(r)]
                if uid is not None
            ]
        if not failed_positions:
            return WriteResult.ok()
        return _failed(records, sorted(failed_positions), self.use_indices)

    def _apply(self, batch: Batch, records: Sequence[dict[str, Any]]) -> None:
        if self.kind == "s3":
            for partition, members in group_by_partition(records, self.function_name).items():
                self._put(object_key("", "x", partition, batch.batch_id, "x"), members)
        else:
            self.appended += [uid for r in records for uid in [uid_of(r)] if uid is not None]

    def _put(self, key: str, members: Sequence[dict[str, Any]]) -> None:
        uids = [uid for r in members for uid in [uid_of(r)] if uid is not None]
        before = self.objects.get(key)
        if before is not None and not set(before) <= set(uids):
            lost = sorted(set(before) - set(uids))
            self.model.violate(f"{self.name}: object {key} rewritten without {len(lost)} records it held {lost[:5]}")
        self.objects[key] = uids


def _failed(records: list[dict[str, Any]], positions: list[int], use_indices: bool) -> WriteResult:
    if use_indices and "failed_indices" in WriteResult.__dataclass_fields__:
        return WriteResult.retryable("model: partial", failed_indices=positions)
    ids = [str(records[i].get("inference_id")) for i in positions]
    return WriteResult.retryable("model: partial", ids)
