"""Virtual time: an asyncio loop whose clock only moves when nothing is ready to run.

A timer that would make the loop sleep advances the clock to that timer instead, so a history
with multi-second backoffs, hung sinks and hour-long gaps runs in milliseconds and always the same
way. The core modules read ``time.monotonic()``/``time.time()``; :func:`patched_time` points their
``time`` name at this clock for the duration of a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import sys
import time as real_time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

#: 2026-11-22T04:59:50Z: the virtual wall clock starts ten seconds before an hour boundary.
WALL_EPOCH = 1_795_323_590.0


class Stalled(RuntimeError):
    """The loop would wait for ever: nothing is ready and no timer is set."""


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL_EPOCH + self.now

    def advance(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready:
            return ready
        if timeout is None:
            raise Stalled("the simulated process waits for something that never happens")
        self.clock.advance(timeout)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_VirtualSelector(clock))
        self.clock = clock

    def time(self) -> float:
        return self.clock.now


class _TimeShim(ModuleType):
    """Stands in for the ``time`` module inside the simulated modules."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__("time")
        self._clock = clock

    def monotonic(self) -> float:
        return self._clock.now

    def perf_counter(self) -> float:
        return self._clock.now

    def time(self) -> float:
        return self._clock.wall()

    def time_ns(self) -> int:
        return int(self._clock.wall() * 1e9)

    def __getattr__(self, name: str) -> Any:
        return getattr(real_time, name)


class _InlineAsyncio(ModuleType):
    """``asyncio`` with ``to_thread`` run inline: threads would make a history depend on timing."""

    def __init__(self) -> None:
        super().__init__("asyncio")

    async def to_thread(self, func: Any, /, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


#: Modules of the delivery core that read the clock (or start threads) directly.
CORE_MODULES = (
    "capture_ext.core.buffer",
    "capture_ext.core.dispatcher",
    "capture_ext.core.ingest",
    "capture_ext.core.records",
    "capture_ext.core.store",
    "capture_ext.core.spool",
    "capture_ext.core.pipeline",
    "capture_ext.core.telemetry",
)


@contextlib.contextmanager
def patched_time(clock: VirtualClock) -> Iterator[None]:
    shim, inline = _TimeShim(clock), _InlineAsyncio()
    saved: list[tuple[ModuleType, str, Any]] = []
    for name in CORE_MODULES:
        module = sys.modules.get(name)
        if module is None:
            with contextlib.suppress(ImportError):
                module = __import__(name, fromlist=["_"])
        if module is None:
            continue
        for attr, value in (("time", shim), ("asyncio", inline)):
            if isinstance(getattr(module, attr, None), ModuleType):
                saved.append((module, attr, getattr(module, attr)))
                setattr(module, attr, value)
    try:
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)
