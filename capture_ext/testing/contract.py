"""The sink contract test kit: one pytest base class every sink runs to prove it plays by the rules.

Subclass :class:`SinkContract` in a module named ``test_*.py`` and tell it how to build your
sink and how to read back what it wrote; it contributes the tests::

    from capture_ext.testing.contract import SinkContract

    class TestMySink(SinkContract):
        sink_name = "my_sink"            # checks the entry point too

        @pytest.fixture(autouse=True)
        def _backend(self, tmp_path):    # any fixtures you need; pytest gives each test a new instance
            self.path = tmp_path / "out.db"

        def make_sink(self):
            return MySink(self.context(), config=MySinkConfig(path=str(self.path)))  # an argument wins over ctx.env

        async def read_back(self):
            return [...]                 # every record the backend holds, as dicts with "inference_id"

What is checked, and why the dispatcher depends on it: a sink satisfies the ``Sink`` protocol;
``start``/``write_batch``/``close`` work in order; ``close`` is idempotent (also before
``start``) and a later ``write_batch`` answers ``FATAL`` instead of raising; the same batch
written twice, by the same or a new instance, is stored once when the sink is idempotent
(``idempotent = False`` relaxes this to at-least-once); a ``write_batch`` cancelled by the
dispatcher's deadline (``asyncio.timeout``) neither swallows the cancellation nor leaves the
sink unusable; odd, empty and large batches are handled; records are never mutated (every sink
sees the same dicts); and failures caused by ``break_sink()`` are classified, not raised.

Negative tests prove isolation, not only good behaviour: the sink is flushed by the real
dispatcher beside every sink of :mod:`capture_ext.testing.hostile` at once (sinks that raise
``SystemExit``/``KeyboardInterrupt``/``CancelledError``, block the loop, swallow cancellation or
mutate records), isolated as the extension isolates plugins, and must still store every record
unchanged, twice in a row, while each hostile sink is counted as faulty; and a hostile factory
(raising or hanging) must come back as an ordinary error, in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import functools
import inspect
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, ClassVar

import pytest

from capture_ext.models import Batch, Outcome, Record, Sink, SinkContext, WriteResult
from capture_ext.testing import hostile
from capture_ext.testing.records import make_batch, make_record, odd_records

__all__ = ["SinkContract", "make_batch", "make_record", "odd_records"]


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class SinkContract:
    """Base class of the sink contract tests; subclasses supply the sink (see module docstring)."""

    #: Writing the same batch twice leaves one copy (keys derived from ``batch_id``, upserts).
    idempotent: ClassVar[bool] = True
    #: Record fields :meth:`read_back` must return unchanged, besides ``inference_id``.
    round_trip_fields: ClassVar[tuple[str, ...]] = ("input", "output")
    #: Records in the large-batch test; above common per-request limits (Firehose: 500).
    large_batch_size: ClassVar[int] = 600
    #: Failures :meth:`break_sink` can cause; each runs the classification test once.
    breakages: ClassVar[tuple[str, ...]] = ()
    #: When set, the sink must be registered under this name through the installed entry points.
    sink_name: ClassVar[str | None] = None
    #: Deadlines (seconds) at which the deadline test cancels ``write_batch``.
    deadlines_s: ClassVar[tuple[float, ...]] = (0.0, 0.001, 0.01, 0.05)
    #: ``timeout_s`` given to ``close()``.
    close_timeout_s: ClassVar[float] = 5.0

    # -- what a subclass provides ---------------------------------------------------------
    def make_sink(self) -> Sink:
        """A new, unstarted sink instance writing to the test's backend (may be async)."""
        raise NotImplementedError("SinkContract subclasses implement make_sink()")

    async def read_back(self) -> list[Record]:
        """Every record the backend holds, as dicts with at least ``inference_id`` (may be sync).

        Return one dict per stored copy (duplicates included): that is what the idempotency
        tests count. Records of other tests may be included; only this test's ids are looked at.
        """
        raise NotImplementedError("SinkContract subclasses implement read_back()")

    async def break_sink(self, breakage: str) -> Outcome:
        """Make the backend fail in the way named ``breakage``; return the outcome the sink must report."""
        raise NotImplementedError

    async def heal_sink(self, breakage: str) -> None:
        """Undo :meth:`break_sink`."""

    # -- helpers for subclasses --------------------------------------------------------------
    def context(self, name: str | None = None, env: dict[str, str] | None = None, **overrides: Any) -> SinkContext:
        """The :class:`SinkContext` the extension would build from ``env`` (``overrides`` win)."""
        from capture_ext.core.config import Settings
        from capture_ext.core.sink_setup import sink_context

        env = {"AWS_LAMBDA_FUNCTION_NAME": "contract-fn", **(env or {})}
        context = sink_context(name or self.sink_name or "contract", Settings.from_env(env), env, self.environment_id)
        return dataclasses.replace(context, **overrides) if overrides else context

    @property
    def environment_id(self) -> str:
        """Unique per test, so batch ids never collide on a backend shared between tests."""
        env_id: str | None = getattr(self, "_contract_environment_id", None)
        if env_id is None:
            env_id = f"ct{uuid.uuid4().hex[:10]}"
            self._contract_environment_id = env_id
        return env_id

    def records(self, n: int, **fields: Any) -> list[Record]:
        return [make_record(self.environment_id, i, **fields) for i in range(n)]

    def batch(self, records: Sequence[Record], sequence: int = 1, attempt: int = 1) -> Batch:
        return make_batch(records, self.environment_id, sequence, attempt)

    @contextlib.asynccontextmanager
    async def started_sink(self) -> AsyncIterator[Sink]:
        """``make_sink()`` + ``start()``; closed on the way out whatever happens."""
        sink = await _maybe_await(self.make_sink())
        await sink.start()
        try:
            yield sink
        finally:
            await sink.close(self.close_timeout_s)

    async def write_ok(self, sink: Sink, batch: Batch) -> None:
        result = await sink.write_batch(batch)
        assert isinstance(result, WriteResult), f"write_batch returned {result!r}, not a WriteResult"
        assert result.outcome is Outcome.OK, f"{sink.name}: expected OK, got {result}"

    async def stored_counts(self, expected: Iterable[Record]) -> Counter[str]:
        """How many copies of each expected record the backend holds."""
        wanted = {r["inference_id"] for r in expected}
        stored = await _maybe_await(self.read_back())
        return Counter(r.get("inference_id") for r in stored if r.get("inference_id") in wanted)

    async def stored(self, expected: Iterable[Record]) -> list[Record]:
        """The stored copies of ``expected`` in a canonical order, for before/after comparisons."""
        wanted = {r["inference_id"] for r in expected}
        stored = [r for r in await _maybe_await(self.read_back()) if r.get("inference_id") in wanted]
        return sorted(stored, key=lambda r: json.dumps(r, sort_keys=True, default=str))

    async def assert_stored(self, expected: Sequence[Record], *, exactly_once: bool = True) -> None:
        counts = await self.stored_counts(expected)
        missing = [r["inference_id"] for r in expected if counts[r["inference_id"]] == 0]
        assert not missing, f"{len(missing)} of {len(expected)} records were not stored: {missing[:5]}"
        if exactly_once:
            dupes = {k: v for k, v in counts.items() if v > 1}
            assert not dupes, f"records stored more than once: {dict(list(dupes.items())[:5])}"

    async def assert_round_trip(self, expected: Sequence[Record]) -> None:
        by_id = {r.get("inference_id"): r for r in await _maybe_await(self.read_back())}
        for record in expected:
            got = by_id[record["inference_id"]]
            for name in self.round_trip_fields:
                assert got.get(name) == record[name], (
                    f"field {name!r} of {record['inference_id']} came back as {got.get(name)!r:.200}, "
                    f"expected {record[name]!r:.200}"
                )

    # -- pytest wiring --------------------------------------------------------------------------
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "breakage" in metafunc.fixturenames:
            params: list[Any] = list(self.breakages) or [
                pytest.param("", marks=pytest.mark.skip(reason="no breakages declared (set `breakages`)"))
            ]
            metafunc.parametrize("breakage", params)

    # -- the contract ---------------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_satisfies_the_sink_protocol(self) -> None:
        sink = await _maybe_await(self.make_sink())
        try:
            assert isinstance(sink, Sink), f"{sink!r} lacks start/write_batch/close or name"
            assert isinstance(sink.name, str) and sink.name, "sink.name must be a non-empty str"
            for method in ("start", "write_batch", "close"):
                assert inspect.iscoroutinefunction(getattr(sink, method)), f"{method} must be `async def`"
        finally:
            await sink.close(self.close_timeout_s)

    @pytest.mark.asyncio
    async def test_writes_and_reads_back(self) -> None:
        records = self.records(3)
        async with self.started_sink() as sink:
            await self.write_ok(sink, self.batch(records))
        await self.assert_stored(records)
        await self.assert_round_trip(records)

    @pytest.mark.asyncio
    async def test_does_not_mutate_records(self) -> None:
        records = self.records(3)
        before = copy.deepcopy(records)
        async with self.started_sink() as sink:
            await self.write_ok(sink, self.batch(records))
        assert records == before, "write_batch mutated the records (other sinks share them)"

    @pytest.mark.asyncio
    async def test_close_is_idempotent_and_write_after_close_is_fatal(self) -> None:
        sink = await _maybe_await(self.make_sink())
        await sink.close(self.close_timeout_s)  # before start: the dispatcher closes sinks whose start failed
        sink = await _maybe_await(self.make_sink())
        await sink.start()
        await self.write_ok(sink, self.batch(self.records(1)))
        await sink.close(self.close_timeout_s)
        await sink.close(self.close_timeout_s)
        result = await sink.write_batch(self.batch(self.records(1), sequence=2))
        assert isinstance(result, WriteResult), f"write_batch after close returned {result!r}"
        assert result.outcome is Outcome.FATAL, f"write_batch after close must be FATAL, got {result}"
        assert result.error, "a FATAL result must say why"

    @pytest.mark.asyncio
    async def test_same_batch_twice_is_stored_once(self) -> None:
        records = self.records(4)
        async with self.started_sink() as sink:
            await self.write_ok(sink, self.batch(records))
            first = await self.stored(records)
            await self.write_ok(sink, self.batch(records, attempt=2))  # a retry after a lost answer
        await self.assert_stored(records, exactly_once=self.idempotent)
        await self.assert_round_trip(records)
        if self.idempotent:
            assert await self.stored(records) == first, "writing the same batch again changed what is stored"

    @pytest.mark.asyncio
    async def test_same_batch_from_a_new_instance_is_stored_once(self) -> None:
        # An extension restarted from its spool replays batches with their original ids.
        records = self.records(2)
        for attempt in (1, 2):
            async with self.started_sink() as sink:
                await self.write_ok(sink, self.batch(records, attempt=attempt))
        await self.assert_stored(records, exactly_once=self.idempotent)

    @pytest.mark.asyncio
    async def test_empty_batch_is_ok(self) -> None:
        async with self.started_sink() as sink:
            await self.write_ok(sink, self.batch([]))
            records = self.records(1)
            await self.write_ok(sink, self.batch(records, sequence=2))
        await self.assert_stored(records)

    @pytest.mark.asyncio
    async def test_odd_records_are_stored(self) -> None:
        records = odd_records(self.environment_id)
        async with self.started_sink() as sink:
            await self.write_ok(sink, self.batch(records))
        await self.assert_stored(records)
        await self.assert_round_trip(records)

    @pytest.mark.asyncio
    async def test_large_batch_is_stored(self) -> None:
        records = self.records(self.large_batch_size)
        async with self.started_sink() as sink:
            await self.write_ok(sink, self.batch(records))
        await self.assert_stored(records)

    @pytest.mark.asyncio
    async def test_deadline_cancellation_leaves_the_sink_usable(self) -> None:
        written: list[Record] = []
        async with self.started_sink() as sink:
            for sequence, deadline in enumerate(self.deadlines_s, start=1):
                records = self.records(5)
                batch = self.batch(records, sequence=sequence)
                timed_out = False
                try:
                    async with asyncio.timeout(deadline) as cm:
                        await sink.write_batch(batch)
                except TimeoutError:
                    timed_out = True
                assert timed_out or not cm.expired(), (
                    f"write_batch swallowed the deadline's CancelledError (deadline {deadline}s): "
                    "let it propagate so the dispatcher knows the write did not finish"
                )
                # The dispatcher retries the same batch: the sink must still work.
                await self.write_ok(sink, self.batch(records, sequence=sequence, attempt=2))
                written += records
        await self.assert_stored(written, exactly_once=self.idempotent)

    @pytest.mark.asyncio
    async def test_failures_are_classified_not_raised(self, breakage: str) -> None:
        records = self.records(3)
        async with self.started_sink() as sink:
            await self.write_ok(sink, self.batch(self.records(1), sequence=1))  # warm clients up first
            expected = await self.break_sink(breakage)
            try:
                result = await sink.write_batch(self.batch(records, sequence=2))
            finally:
                await _maybe_await(self.heal_sink(breakage))
            assert isinstance(result, WriteResult), f"{breakage}: write_batch returned {result!r}"
            assert result.outcome is expected, f"{breakage}: expected {expected.name}, got {result}"
            assert result.error, f"{breakage}: a failed WriteResult must say why"
            ids = {r["inference_id"] for r in records}
            assert set(result.failed_ids) <= ids, f"{breakage}: failed_ids names records not in the batch"
            assert all(0 <= i < len(records) for i in result.failed_indices), (
                f"{breakage}: failed_indices {result.failed_indices} are not positions in the batch"
            )
            await self.write_ok(sink, self.batch(records, sequence=2, attempt=2))
        await self.assert_stored(records, exactly_once=self.idempotent)

    @pytest.mark.asyncio
    async def test_is_discoverable_through_its_entry_point(self) -> None:
        if not self.sink_name:
            pytest.skip("set `sink_name` to check the installed entry point")
        from capture_ext.core.plugins import get_plugin_manager

        plugins = get_plugin_manager()
        factories = plugins.sink_factories()
        owner_errors = [e for e in plugins.errors if repr(self.sink_name) in e]
        assert self.sink_name in factories, (
            f"no installed plugin registers sink {self.sink_name!r} (is the package installed, with an "
            f"entry point in group 'capture_ext'?); plugin errors: {plugins.errors}"
        )
        assert not owner_errors, owner_errors

    # -- isolation: the negative tests ------------------------------------------------------------
    #: How long the blocking and cancellation-swallowing hostile sinks hold on (seconds): longer
    #: than the test, in threads it abandons, so they are still stuck at the second flush.
    hostile_block_s: ClassVar[float] = 60.0
    #: The deadline of the first flush, which the stuck hostile sinks overrun (seconds).
    isolation_deadline_s: ClassVar[float] = 0.5
    #: The deadline of the second flush: time enough for every sink that can finish (seconds).
    second_flush_deadline_s: ClassVar[float] = 5.0

    @pytest.mark.asyncio
    async def test_keeps_working_beside_hostile_sinks(self) -> None:
        import random

        from capture_ext.core.buffer import MemoryBudget, RecordBuffer
        from capture_ext.core.dispatcher import Dispatcher
        from capture_ext.core.isolation import IsolatedSink
        from capture_ext.core.ledger import Ledger
        from capture_ext.core.store import Store

        mine = await _maybe_await(self.make_sink())
        # Warm it up first (clients opened, SDKs imported): the flushes below have short deadlines.
        await mine.start()
        await self.write_ok(mine, self.batch(self.records(1), sequence=99))
        sinks: dict[str, Sink] = {"mine": mine}
        for mode in hostile.SINK_MODES:
            name = f"hostile_{mode}"
            factory = functools.partial(hostile.hostile_factory, mode, self.hostile_block_s)
            sinks[name] = IsolatedSink.build(name, factory, None)
        ledger = Ledger()
        budget = MemoryBudget(64 * 1024 * 1024)
        buffer = RecordBuffer(self.environment_id, budget, 1000, 64 * 1024 * 1024)
        store = Store(buffer, budget, sinks=list(sinks))
        dispatcher = Dispatcher(sinks, ledger, store, 3, random.Random(0))
        dispatcher.states["mine"].started = True
        expected: list[Record] = []
        try:
            # The second flush meets sinks still stuck in the first one's calls; its longer deadline
            # lets every other call run to its end however slow the machine, so the counts below
            # do not depend on timing.
            for deadline_s in (self.isolation_deadline_s, self.second_flush_deadline_s):
                records = self.records(3)
                expected += copy.deepcopy(records)
                for record in records:
                    ledger.received += 1
                    buffer.add(record, len(json.dumps(record, default=str)))
                store.seal()
                await dispatcher.flush(time.monotonic() + deadline_s, ignore_breakers=True)
        finally:
            await dispatcher.close(self.isolation_deadline_s)
        await self.assert_stored(expected, exactly_once=self.idempotent)
        await self.assert_round_trip(expected)
        assert ledger.sink("mine").delivered == len(expected), ledger.health(0, {})
        assert ledger.sink("mine").faults == 0
        hijacked = [r for r in await _maybe_await(self.read_back()) if r.get("inference_id") == hostile.HIJACKED]
        assert not hijacked, "a hostile sink's mutation reached this sink's records"
        faulty = {name for name, state in ledger.sinks.items() if state.faults}
        expected_faulty = {f"hostile_{m}" for m in hostile.SINK_MODES if m != "write_mutate"}
        assert faulty == expected_faulty, f"faults not counted for {sorted(expected_faulty - faulty)}"

    def test_hostile_factories_are_ordinary_errors(self) -> None:
        from capture_ext.core.isolation import IsolatedSink

        for mode in hostile.FACTORY_MODES:
            with pytest.raises(Exception) as caught:  # never SystemExit, KeyboardInterrupt or CancelledError
                IsolatedSink.build(mode, functools.partial(hostile.hostile_factory, mode, 0.05), None, 0.2)
            assert isinstance(caught.value, Exception), mode
