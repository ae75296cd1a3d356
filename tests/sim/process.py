"""One simulated extension process: the delivery core as ``core/wiring.py`` wires it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from capture_ext.core.buffer import MemoryBudget, RecordBuffer
from capture_ext.core.dispatcher import Dispatcher
from capture_ext.core.ingest import Ingest, _LineProtocol
from capture_ext.core.ledger import Ledger
from capture_ext.core.records import Enricher
from capture_ext.core.redact import Redactor, parse_rules
from capture_ext.core.store import Store
from tests.sim.model import ModelSink
from tests.sim.world import SimSpool, SinkProxy

FUNCTION = "sim-fn"


@dataclass
class Config:
    spool_max_bytes: int
    buffer_max_bytes: int
    flush_max_records: int
    flush_max_bytes: int
    max_record_bytes: int
    fsync: str
    redact: str
    max_attempts: int


def prepare_hook(record: dict[str, Any]) -> None:
    """A plugin hook that raises for records that ask it to (``input.boom``)."""
    value = record.get("input")
    if isinstance(value, dict) and value.get("boom"):
        raise RuntimeError("prepare hook refused the record")


@dataclass
class SimProcess:
    environment_id: str
    spool: SimSpool
    ledger: Ledger
    buffer: RecordBuffer
    store: Store
    dispatcher: Dispatcher
    ingest: Ingest
    protocol: _LineProtocol
    alive: bool = True
    tasks: list[Any] = field(default_factory=list)

    @classmethod
    def start(
        cls, environment_id: str, directory: str, config: Config, sinks: dict[str, ModelSink], seed: int
    ) -> SimProcess:
        spool = SimSpool(directory, config.spool_max_bytes, config.fsync, environment_id)
        spool.open()
        ledger = Ledger()
        budget = MemoryBudget(config.buffer_max_bytes)
        buffer = RecordBuffer(environment_id, budget, config.flush_max_records, config.flush_max_bytes)
        store = Store(buffer, budget, spool, sinks=sorted(sinks))
        holder: list[SimProcess] = []

        def alive() -> bool:
            return bool(holder) and holder[0].alive

        proxies = {name: SinkProxy(name, sink, alive) for name, sink in sinks.items()}
        dispatcher = Dispatcher(
            proxies,  # type: ignore[arg-type]
            ledger,
            store,
            config.max_attempts,
            rng=random.Random(seed),
            breaker_max_s=60.0,
            fair_budget_s=2.0,
        )
        for name, count in store.adopt().items():
            ledger.sink(name).adopted += count
        ledger.replayed = store.replayed
        ingest = Ingest(
            store,
            ledger,
            Enricher(FUNCTION, "1", environment_id),
            config.max_record_bytes,
            prepare=prepare_hook,
            redactor=Redactor(parse_rules(config.redact)),
        )
        process = cls(
            environment_id,
            spool,
            ledger,
            buffer,
            store,
            dispatcher,
            ingest,
            _LineProtocol(ingest, config.max_record_bytes + 1),
        )
        holder.append(process)
        return process

    def kill(self) -> None:
        self.alive = False
        self.spool.kill()

    def health(self) -> dict[str, Any]:
        hot, cold = self.dispatcher.backlog_split()
        return self.ledger.health(len(self.buffer), hot, cold)

    def pending(self) -> int:
        return len(self.buffer) + sum(self.dispatcher.backlog().values())

    async def flush(self, deadline: float, ignore_breakers: bool = False) -> None:
        self.store.seal()
        if self.dispatcher.has_work(ignore_breakers=ignore_breakers):
            await self.dispatcher.flush(deadline, ignore_breakers=ignore_breakers)

    async def shutdown(self, deadline: float) -> None:
        await self.flush(deadline, ignore_breakers=True)
        await self.dispatcher.close(0.01)
        self.store.close()
        self.alive = False
