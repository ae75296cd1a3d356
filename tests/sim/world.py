"""Simulated extension processes: the real delivery core wired as the extension wires it.

What is simulated is only what a real run gets from outside: the sinks (model sinks with fault
plans), time (virtual) and death. A process dies the way SIGKILL kills one: its tasks stop at
whatever await they were in, it never writes to the spool again, and the kernel closes its files
(releasing its locks). A spool write can also be cut short by the kill (a torn write).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from capture_ext.core.spool import Spool
from capture_ext.models import Batch, WriteResult
from tests.sim.model import ModelSink


class SimKill(BaseException):
    """Raised out of a spool write that the kill cut short (never caught by the core)."""


class SimSpool(Spool):
    """The real spool, plus a kill switch and torn writes."""

    dead = False
    #: When set, a coming write (after ``tear_skip`` more) writes only a prefix and the process dies.
    tear_next: random.Random | None = None
    tear_skip = 0

    def _write(self, segment: Any, payload: bytes) -> bool:
        if self.dead:
            return False
        if self.tear_next is not None and len(payload) > 1 and self.tear_skip > 0:
            self.tear_skip -= 1
        elif self.tear_next is not None and len(payload) > 1:
            rng, self.tear_next = self.tear_next, None
            cut = rng.randrange(1, len(payload))
            os.write(segment.fd, payload[:cut])
            self.kill()
            raise SimKill("killed in the middle of a spool write")
        return bool(super()._write(segment, payload))

    def _sync(self, segment: Any) -> None:
        if not self.dead:
            super()._sync(segment)

    def _delete(self, segment: Any) -> None:
        if not self.dead:
            super()._delete(segment)

    def _forget(self, environment_id: str) -> None:
        if not self.dead:
            super()._forget(environment_id)

    def _rotate(self) -> None:
        if not self.dead:
            super()._rotate()

    def kill(self) -> None:
        """What the kernel does at SIGKILL: close every file (the locks go with them)."""
        self.dead = True
        for segment in self.segments:
            if segment.fd >= 0:
                os.close(segment.fd)
                segment.fd = -1
        for environment_id in list(self._locks):
            os.close(self._locks.pop(environment_id))


@dataclass
class SinkProxy:
    """One process's handle on a shared model sink: a dead process's writes never land."""

    name: str
    target: ModelSink
    alive: Callable[[], bool]

    async def start(self) -> None:
        return None

    async def write_batch(self, batch: Batch) -> WriteResult:
        return await self.target.write(batch, self.alive)

    async def close(self, timeout_s: float) -> None:
        return None


class Stop(Exception):
    pass


def run_task(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return loop.run_until_complete(coro)
