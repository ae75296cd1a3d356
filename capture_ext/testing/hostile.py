"""Sinks that break every rule, for proving that a bad plugin costs only itself.

Each :class:`HostileSink` misbehaves in one way, named by its ``mode``: it raises what an
``except Exception`` does not catch (``SystemExit``, ``KeyboardInterrupt``, a ``CancelledError``
nobody asked for), blocks the event loop, swallows the cancellation of its deadline, or mutates
the records it is given. :class:`capture_ext.testing.contract.SinkContract` runs every sink beside
all of them; the module is also a plugin (entry point value ``capture_ext.testing.hostile``)
that registers one sink ``hostile_<mode>`` per mode, for tests of a whole extension process.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from typing import NoReturn

from capture_ext.hookspecs import hookimpl
from capture_ext.models import Batch, Sink, SinkContext, SinkRegistrar, WriteResult
from capture_ext.variables import Variable, non_negative

BLOCK_S = Variable(
    "CAPTURE_HOSTILE_BLOCK_S",
    "3",
    "Seconds the `*_block`, `*_swallow` and `*_hang` hostile sinks block the loop, ignore cancellation or hang.",
    non_negative,
)

#: Factories that never return a sink.
FACTORY_MODES = ("factory_exit", "factory_interrupt", "factory_cancel", "factory_hang")
#: Sinks that are built, then misbehave in one call.
SINK_MODES = (
    "start_exit",
    "start_interrupt",
    "start_cancel",
    "start_hang",
    "write_exit",
    "write_interrupt",
    "write_cancel",
    "write_block",
    "write_swallow",
    "write_mutate",
    "close_exit",
    "close_swallow",
    "close_block",
)
MODES = FACTORY_MODES + SINK_MODES
#: Value the mutating sink writes over every record's ``inference_id``.
HIJACKED = "hijacked-by-a-hostile-sink"


def _raise(kind: str) -> NoReturn:
    if kind == "exit":
        raise SystemExit(3)
    if kind == "interrupt":
        raise KeyboardInterrupt
    raise asyncio.CancelledError


async def _swallow(seconds: float) -> None:
    """Ignore every cancellation for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            await asyncio.sleep(end - time.monotonic())
        except asyncio.CancelledError:
            continue


class HostileSink:
    """One sink, one way of breaking the contract (``mode``)."""

    def __init__(self, mode: str, block_s: float = 3.0) -> None:
        if mode not in SINK_MODES:
            raise ValueError(f"unknown hostile mode {mode!r}")
        self.mode = mode
        self.name = f"hostile_{mode}"
        self.block_s = block_s
        self.when, _, self.how = mode.partition("_")
        self.written = 0

    async def _misbehave(self, when: str) -> None:
        if self.when != when:
            return
        if self.how in ("exit", "interrupt", "cancel"):
            _raise(self.how)
        if self.how == "block":
            time.sleep(self.block_s)  # noqa: ASYNC251 - forbidden to sinks: this one blocks its loop on purpose
        elif self.how in ("swallow", "hang"):
            await _swallow(self.block_s)

    async def start(self) -> None:
        await self._misbehave("start")

    async def write_batch(self, batch: Batch) -> WriteResult:
        await self._misbehave("write")
        if self.mode == "write_mutate":
            for record in batch.records:
                record["inference_id"] = HIJACKED
                record.setdefault("input", {})
                if isinstance(record["input"], dict):
                    record["input"]["question"] = HIJACKED
        self.written += len(batch)
        return WriteResult.ok()

    async def close(self, timeout_s: float) -> None:
        await self._misbehave("close")


def make_hostile(mode: str, block_s: float = 3.0) -> object:
    """What a factory of ``mode`` does: misbehave (factory modes) or build a :class:`HostileSink`."""
    if mode == "factory_hang":
        time.sleep(block_s * 20)
    elif mode in FACTORY_MODES:
        _raise(mode.partition("_")[2])
    return HostileSink(mode, block_s)


def hostile_factory(mode: str, block_s: float, context: SinkContext | None) -> Sink:
    """A sink factory of ``mode`` (bind the first two arguments with ``functools.partial``)."""
    sink = make_hostile(mode, block_s)
    assert isinstance(sink, HostileSink)
    return sink


@hookimpl
def capture_register_sinks(register: SinkRegistrar) -> None:
    block_s = BLOCK_S.read(os.environ)
    for mode in MODES:
        register(f"hostile_{mode}", functools.partial(hostile_factory, mode, block_s), variables=(BLOCK_S,))
