"""Counting every record by outcome, so that nothing can go missing unnoticed.

Per sink, at every read: ``received = delivered + buffered + spooled + dropped``. Records refused
before they were acknowledged (bad requests) are ``rejected`` and are not part of that sum.

``buffered`` records are in memory (and, with the spool on, also on disk); ``spooled`` ones are
on disk only. A sink's ``received`` also counts the records this process adopted for it from
the spool of an earlier process (``replayed``), so the sum holds across restarts too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class SinkLedger:
    delivered: int = 0
    retried: int = 0
    spooled: int = 0
    #: Records adopted from an earlier process's spool that this sink still needed.
    adopted: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    #: Calls into the sink's own code that raised, hung past their deadline or blocked.
    faults: int = 0


@dataclass(slots=True)
class Ledger:
    received: int = 0
    #: Accepted records that no sink will get (e.g. memory full, a prepare hook raised).
    dropped: Counter[str] = field(default_factory=Counter)
    #: Records refused at the door, never acknowledged (bad JSON, too large …).
    rejected: Counter[str] = field(default_factory=Counter)
    sinks: dict[str, SinkLedger] = field(default_factory=dict)
    flushes: int = 0
    #: Records adopted from the spool left by an earlier process (not part of ``received``).
    replayed: int = 0

    def sink(self, name: str) -> SinkLedger:
        ledger = self.sinks.get(name)
        if ledger is None:
            ledger = self.sinks[name] = SinkLedger()
        return ledger

    def health(
        self,
        unsealed: int,
        backlog: dict[str, int],
        spooled: dict[str, int] | None = None,
        states: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The ``/v1/health`` body: global counters plus a reconciled view per sink."""
        spooled = spooled or {}
        states = states or {}
        sinks: dict[str, Any] = {}
        for name, ledger in self.sinks.items():
            dropped = Counter(self.dropped)
            dropped.update(ledger.dropped)
            buffered = unsealed + backlog.get(name, 0)
            on_disk = spooled.get(name, ledger.spooled)
            total = ledger.delivered + buffered + on_disk + sum(dropped.values())
            received = self.received + ledger.adopted
            sinks[name] = {
                "state": states.get(name, "ok"),
                "received": received,
                "delivered": ledger.delivered,
                "buffered": buffered,
                "spooled": on_disk,
                "dropped": dict(dropped),
                "retried": ledger.retried,
                "faults": ledger.faults,
                "reconciled": total == received,
            }
        return {
            "received": self.received,
            "buffered": unsealed,
            "delivered": {name: s["delivered"] for name, s in sinks.items()},
            "dropped": dict(self.dropped),
            "rejected": dict(self.rejected),
            "retried": {name: s["retried"] for name, s in sinks.items()},
            "spooled": {name: s["spooled"] for name, s in sinks.items()},
            "replayed": self.replayed,
            "flushes": self.flushes,
            "sinks": sinks,
        }
