"""The contract kit catches the mistakes it claims to catch, and passes a correct sink.

A correct in-memory sink and one subclass per classic mistake run in a separate pytest process
(in pytest-asyncio's *strict* mode, the default a plugin author gets); each mistake must fail
exactly the contract test named for it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest

SINKS = '''
import asyncio

import pytest

from capture_ext import Batch, Outcome, WriteResult
from capture_ext.testing.contract import SinkContract

STORE: dict[str, list[dict]] = {}


class MemorySink:
    """Correct: keyed by batch_id, so a retry replaces instead of duplicating."""

    name = "memory"

    def __init__(self):
        self.closed = False
        self.broken = False

    async def start(self):
        pass

    async def write_batch(self, batch: Batch) -> WriteResult:
        if self.closed:
            return WriteResult.fatal("closed")
        if self.broken:
            return WriteResult.retryable("backend unavailable")
        await asyncio.sleep(0)
        STORE[batch.batch_id] = [dict(r) for r in batch.records]
        return WriteResult.ok()

    async def close(self, timeout_s):
        self.closed = True


class Duplicating(MemorySink):
    async def write_batch(self, batch):
        if self.closed:
            return WriteResult.fatal("closed")
        STORE.setdefault(batch.batch_id + str(batch.attempt), []).extend(batch.records)
        return WriteResult.ok()


class Restamping(MemorySink):
    """Keyed correctly, but a retry changes the stored content."""

    async def write_batch(self, batch):
        if self.closed:
            return WriteResult.fatal("closed")
        STORE[batch.batch_id] = [dict(r, written_at_attempt=batch.attempt) for r in batch.records]
        return WriteResult.ok()


class RaisingAfterClose(MemorySink):
    async def write_batch(self, batch):
        if self.closed:
            raise RuntimeError("closed")
        return await super().write_batch(batch)


class SwallowingCancel(MemorySink):
    async def write_batch(self, batch):
        try:
            await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            return WriteResult.retryable("cancelled")
        return await super().write_batch(batch)


class Mutating(MemorySink):
    async def write_batch(self, batch):
        for record in batch.records:
            record.pop("metadata", None)
        return await super().write_batch(batch)


class RaisingOnFailure(MemorySink):
    async def write_batch(self, batch):
        if self.broken:
            raise ConnectionError("backend unavailable")
        return await super().write_batch(batch)


class Base(SinkContract):
    sink_class = MemorySink
    breakages = ("unavailable",)

    @pytest.fixture(autouse=True)
    def _store(self):
        STORE.clear()
        self.sinks = []

    def make_sink(self):
        sink = self.sink_class()
        self.sinks.append(sink)
        return sink

    async def read_back(self):
        return [r for records in STORE.values() for r in records]

    async def break_sink(self, breakage):
        for sink in self.sinks:
            sink.broken = True
        return Outcome.RETRYABLE

    async def heal_sink(self, breakage):
        for sink in self.sinks:
            sink.broken = False


class TestCorrect(Base):
    pass


class TestDuplicating(Base):
    sink_class = Duplicating


class TestRestamping(Base):
    sink_class = Restamping


class TestRaisingAfterClose(Base):
    sink_class = RaisingAfterClose


class TestSwallowingCancel(Base):
    sink_class = SwallowingCancel


class TestMutating(Base):
    sink_class = Mutating


class TestRaisingOnFailure(Base):
    sink_class = RaisingOnFailure
'''


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """test id -> passed/failed/skipped for the sinks above."""
    root = tmp_path_factory.mktemp("kit")
    (root / "test_memory_sinks.py").write_text(textwrap.dedent(SINKS))
    report = root / "report.xml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "capture_ext.testing.pytest_plugin",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=strict",
            f"--junitxml={report}",
            f"--rootdir={root}",
            "-c",
            "/dev/null",
            str(root / "test_memory_sinks.py"),
        ],
        cwd=root,
        capture_output=True,
        timeout=120,
        check=False,
    )
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        state = "passed"
        for child in case:
            if child.tag in {"failure", "error"}:
                state = "failed"
            elif child.tag == "skipped":
                state = "skipped"
        results[f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"] = state
    return results


def failed(outcomes: dict[str, str], cls: str) -> set[str]:
    return {
        name.split("::")[1].split("[")[0]
        for name, state in outcomes.items()
        if name.startswith(f"{cls}::") and state == "failed"
    }


def test_a_correct_sink_passes_everything(outcomes: dict[str, str]) -> None:
    correct = {name: state for name, state in outcomes.items() if name.startswith("TestCorrect::")}
    assert len(correct) >= 11, outcomes
    assert set(correct.values()) <= {"passed", "skipped"}, correct
    assert correct["TestCorrect::test_failures_are_classified_not_raised[unavailable]"] == "passed"


@pytest.mark.parametrize(
    "cls, expected",
    [
        ("TestDuplicating", {"test_same_batch_twice_is_stored_once"}),
        ("TestRestamping", {"test_same_batch_twice_is_stored_once"}),
        ("TestRaisingAfterClose", {"test_close_is_idempotent_and_write_after_close_is_fatal"}),
        ("TestSwallowingCancel", {"test_deadline_cancellation_leaves_the_sink_usable"}),
        ("TestMutating", {"test_does_not_mutate_records"}),
        ("TestRaisingOnFailure", {"test_failures_are_classified_not_raised"}),
    ],
)
def test_each_mistake_fails_its_contract_test(outcomes: dict[str, str], cls: str, expected: set[str]) -> None:
    assert expected <= failed(outcomes, cls), {k: v for k, v in outcomes.items() if k.startswith(cls)}


def test_kit_is_importable_without_aws_or_plugins() -> None:
    code = (
        "import sys, capture_ext.testing.contract; "
        "print(sorted(m for m in ('aioboto3', 'pyarrow', 'aiohttp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
