"""Histories: generated from a seed, run on virtual time, checked, and shrunk when they fail."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import tempfile
import traceback
from dataclasses import dataclass
from typing import Any

import orjson

from capture_ext.core.http11 import Request
from tests.sim.clock import VirtualClock, VirtualLoop, patched_time
from tests.sim.model import Model, ModelSink, uid_of
from tests.sim.process import Config, SimProcess
from tests.sim.world import SimKill

ID_POOL = ("dup-a", "dup-b", "dup-c")
SINKS = (("s3", "s3"), ("logs", "log"))
MAX_PROCESSES = 3


@dataclass(frozen=True)
class Op:
    kind: str
    target: int = 0
    seed: int = 0

    def __str__(self) -> str:
        return f"{self.kind}(target={self.target}, seed={self.seed})"


@dataclass
class Outcome:
    seed: int
    ops: list[Op]
    violations: list[str]
    steps: int = 0
    #: What the sinks hold at the end: equal for equal seeds (the run is deterministic).
    fingerprint: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations


def make_config(rng: random.Random) -> Config:
    spool = rng.choice((4096, 16384, 65536, 1 << 20))
    return Config(
        spool_max_bytes=spool,
        buffer_max_bytes=rng.choice((2048, 8192, 1 << 20)),
        flush_max_records=rng.choice((1, 4, 20, 100)),
        flush_max_bytes=rng.choice((600, 4096, 1 << 20)),
        max_record_bytes=rng.choice((2048, 8192)),
        fsync=rng.choice(("never", "flush", "always")),
        redact=rng.choice(("", "input.secret:hash", "input.secret,metadata.user")),
        max_attempts=rng.choice((1, 3, 5)),
    )


def make_history(seed: int, length: int | None = None) -> list[Op]:
    rng = random.Random(seed)
    kinds = {
        "socket": 30,
        "http": 12,
        "flush": 25,
        "advance": 10,
        "crash": 4,
        "tear": 3,
        "start": 4,
        "shutdown": 4,
    }
    names = list(kinds)
    weights = [kinds[n] for n in names]
    count = length if length is not None else rng.randrange(8, 40)
    return [
        Op(rng.choices(names, weights)[0], rng.randrange(MAX_PROCESSES), rng.randrange(2**31)) for _ in range(count)
    ]


def deep_json(levels: int) -> bytes:
    """A JSON value nested ``levels`` deep (deeper than orjson will serialise)."""
    return b'{"d":' * levels + b'"bottom"' + b"}" * levels


class Simulation:
    def __init__(self, seed: int, ops: list[Op]) -> None:
        self.seed = seed
        self.ops = ops
        self.rng = random.Random(seed)
        self.config = make_config(self.rng)
        self.clock = VirtualClock()
        self.model = Model()
        self.sinks = {name: ModelSink(name, kind, self.model, "sim-fn") for name, kind in SINKS}
        self.processes: list[SimProcess] = []
        self.started = 0
        self.next_uid = 1
        self.directory = ""
        self.loop: VirtualLoop | None = None

    # -- running -----------------------------------------------------------------------------
    def run(self) -> Outcome:
        self.directory = tempfile.mkdtemp(prefix="capture-sim-", dir=_scratch())
        self.loop = VirtualLoop(self.clock)
        steps = 0
        try:
            with patched_time(self.clock):
                for op in self.ops:
                    steps += 1
                    self.step(op)
                    self.check_counts(str(op))
                    if self.model.violations:
                        break
                if not self.model.violations:
                    self.finish()
        except Exception as exc:
            self.model.violate(f"simulation error {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}")
        finally:
            for process in self.processes:
                if process.alive:
                    process.kill()
            self._reap()
            self.loop.close()
            shutil.rmtree(self.directory, ignore_errors=True)
        return Outcome(self.seed, self.ops, list(self.model.violations), steps, self.fingerprint())

    def fingerprint(self) -> str:
        import hashlib

        digest = hashlib.sha256()
        for name, sink in sorted(self.sinks.items()):
            digest.update(repr((name, sorted(sink.objects.items()), sorted(sink.appended), sink.writes)).encode())
        digest.update(repr((sorted(self.model.acknowledged), self.clock.now)).encode())
        return digest.hexdigest()[:16]

    def live(self) -> list[SimProcess]:
        return [p for p in self.processes if p.alive]

    def target(self, index: int) -> SimProcess:
        live = self.live()
        if not live:
            return self.start_process()
        return live[index % len(live)]

    def start_process(self) -> SimProcess:
        self.started += 1
        process = SimProcess.start(
            f"s{self.seed}p{self.started:02d}",
            self.directory,
            self.config,
            self.sinks,
            self.seed * 1000 + self.started,
        )
        self.processes.append(process)
        return process

    def step(self, op: Op) -> None:
        rng = random.Random(op.seed)
        if op.kind == "start":
            if len(self.live()) < MAX_PROCESSES:
                self.start_process()
        elif op.kind == "socket":
            self.socket(self.target(op.target), rng)
        elif op.kind == "http":
            self.http(self.target(op.target), rng)
        elif op.kind == "advance":
            if rng.random() < 0.5:  # to just before an hour boundary: the next batch spans two partitions
                self.clock.advance(3600.0 - self.clock.wall() % 3600.0 - rng.uniform(0.1, 3.0))
            else:
                self.clock.advance(rng.choice((0.5, 7.0, 30.0, 1800.0, 3600.0 * rng.randrange(1, 30))))
        elif op.kind == "flush":
            process = self.target(op.target)
            self.plan_sinks(rng)
            budget = rng.choice((0.05, 0.3, 2.0, 10.0))
            self.run_process(process, process.flush(self.clock.now + budget), rng)
        elif op.kind == "crash":
            live = self.live()
            if live:
                live[op.target % len(live)].kill()
                self._reap()
        elif op.kind == "tear":  # one of the next few spool writes is cut short by the kill
            spool = self.target(op.target).spool
            spool.tear_next, spool.tear_skip = rng, rng.randrange(4)
        elif op.kind == "shutdown":
            live = self.live()
            if live:
                process = live[op.target % len(live)]
                self.plan_sinks(rng)
                budget = rng.choice((0.05, 0.5, 2.0))
                self.run_process(process, process.shutdown(self.clock.now + budget), rng)
        else:  # pragma: no cover - a typo in a replayed history
            raise ValueError(f"unknown op {op.kind!r}")

    def plan_sinks(self, rng: random.Random) -> None:
        for sink in self.sinks.values():
            sink.plan(rng.choice(("healthy", "flaky", "flaky", "down")), rng.randrange(2**31), rng.random() < 0.5)

    def run_process(self, process: SimProcess, coro: Any, rng: random.Random, crash: bool = True) -> None:
        """Run one of ``process``'s coroutines; maybe kill it at a random await point."""
        assert self.loop is not None
        task = self.loop.create_task(coro)
        if crash and rng.random() < 0.2:
            if rng.random() < 0.5:
                self.loop.call_later(rng.uniform(0, 3.0), self._kill_task, process, task)
            else:
                self._kill_after_iterations(process, task, rng.randrange(1, 60))
        try:
            self.loop.run_until_complete(task)
        except asyncio.CancelledError:
            pass
        except SimKill:
            process.kill()
        self._reap()

    def _kill_task(self, process: SimProcess, task: asyncio.Task[Any]) -> None:
        if not task.done():
            process.kill()
            task.cancel()

    def _kill_after_iterations(self, process: SimProcess, task: asyncio.Task[Any], count: int) -> None:
        assert self.loop is not None
        if count <= 0:
            self._kill_task(process, task)
        elif not task.done():
            self.loop.call_soon(self._kill_after_iterations, process, task, count - 1)

    def _reap(self) -> None:
        """Cancel what dead processes left running (a killed process runs nothing more)."""
        assert self.loop is not None
        leftovers = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            with contextlib.suppress(BaseException):
                self.loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))

    # -- ingest ------------------------------------------------------------------------------
    def new_uid(self) -> int:
        uid, self.next_uid = self.next_uid, self.next_uid + 1
        return uid

    def valid_record(self, rng: random.Random) -> dict[str, Any]:
        uid = self.new_uid()
        body: dict[str, Any] = {"uid": uid, "q": "q" * rng.choice((1, 40, 300))}
        if rng.random() < 0.3:
            body["secret"] = {"token": rng.randrange(1000)}
        record: dict[str, Any] = {}
        shape = rng.random()
        if shape < 0.1:
            record["output"] = body
        else:
            record["input"] = body
            if shape < 0.8:
                record["output"] = {"answer": "a", "score": rng.random()}
        if rng.random() < 0.85:
            record["inference_id"] = rng.choice(ID_POOL) if rng.random() < 0.7 else f"id-{uid}"
        stamp = rng.random()
        if stamp < 0.3:
            record["timestamp"] = int(self.clock.wall() * 1000)
        elif stamp < 0.5:
            record["timestamp"] = "2026-11-22T05:59:59.999+02:00"
        if rng.random() < 0.2:
            record["metadata"] = {"user": {"email": "a@example.com"}}
        if rng.random() < 0.1:
            record["tenant"] = "t1"
        if rng.random() < 0.03:
            body["boom"] = True
            self.model.excuse(uid, None)
        return record

    def hostile_line(self, rng: random.Random) -> bytes:
        uid = self.new_uid()
        choice = rng.randrange(10)
        if choice == 0:
            return b"{not json"
        if choice == 1:
            return b"[1,2]"
        if choice == 2:
            return orjson.dumps({"unrelated": uid})
        if choice == 3:
            return orjson.dumps({"input": {"uid": uid}, "timestamp": True})
        if choice == 4:
            return orjson.dumps({"input": {"uid": uid}, "timestamp": "0001-01-01T00:00:00+01:00"})
        if choice == 5:
            return b'{"input":{"uid":%d,"secret":' % uid + deep_json(300) + b"}}"
        if choice == 6:
            return b'{"input":"' + b"a" * self.config.max_record_bytes + b'"}'
        if choice == 7:
            return b'{"input": "\xff\xfe"}'
        if choice == 8:
            return orjson.dumps({"input": {"uid": uid}, "inference_id": 5})
        return orjson.dumps({"input": {"uid": uid}, "timestamp": "9999-12-31T23:59:59-01:00"})

    def near_hour_edge(self, rng: random.Random) -> None:
        """Sometimes move to just before an hour boundary: the next batch spans two partitions."""
        if rng.random() < 0.5:
            self.clock.advance(3600.0 - self.clock.wall() % 3600.0 - rng.uniform(0.1, 2.0))
        else:
            self.clock.advance(rng.choice((0.0, 0.5, 2.0)))

    def socket(self, process: SimProcess, rng: random.Random) -> None:
        self.near_hour_edge(rng)
        lines: list[tuple[bytes, int | None, bool]] = []  # (line, uid, is a record line)
        for _ in range(rng.randrange(1, 12)):
            roll = rng.random()
            if roll < 0.12:
                lines.append((self.hostile_line(rng), None, True))
            elif roll < 0.2:
                lines.append((orjson.dumps({"_capture_ext": "done", "request_id": "r"}), None, False))
            else:
                record = self.valid_record(rng)
                lines.append((orjson.dumps(record), uid_of(record), True))
        stream = b"".join(line + b"\n" for line, _, _ in lines)
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randrange(0, 6))))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        fed = 0
        start = self._counts(process)
        for chunk in chunks:
            before = self._counts(process)
            ended = stream.count(b"\n", 0, fed + len(chunk)) - stream.count(b"\n", 0, fed)
            first_line = stream.count(b"\n", 0, fed)
            done = lines[first_line : first_line + ended]
            self.clock.advance(rng.choice((0.0, 0.0, 1.0)))
            try:
                process.protocol.data_received(chunk)
            except SimKill:
                process.kill()
                return
            except Exception as exc:
                self.model.violate(f"socket ingest raised {type(exc).__name__}: {exc}")
                return
            fed += len(chunk)
            self._acknowledge(process, before, done)
        received, rejected, _ = self._counts(process)
        records = sum(1 for _, _, is_record in lines if is_record)
        if (received - start[0]) + (rejected - start[1]) != records:
            # A line too long is refused when the limit is passed, before its newline arrives:
            # the count is checked per connection read-out, not per chunk.
            self.model.violate(
                f"socket: {records} record lines read but {received - start[0]} received "
                f"+ {rejected - start[1]} rejected"
            )

    def _counts(self, process: SimProcess) -> tuple[int, int, int]:
        ledger = process.ledger
        return ledger.received, sum(ledger.rejected.values()), ledger.dropped["spool_full"]

    def _acknowledge(
        self, process: SimProcess, before: tuple[int, int, int], done: list[tuple[bytes, int | None, bool]]
    ) -> None:
        """Lines the extension has read are acknowledged (the socket cannot answer)."""
        _, _, full = self._counts(process)
        uids = [uid for _, uid, _ in done if uid is not None]
        for uid in uids:
            self.model.acknowledged.add(uid)
            if full > before[2]:
                self.model.excuse(uid, None)

    def http(self, process: SimProcess, rng: random.Random) -> None:
        self.near_hour_edge(rng)
        records = [self.valid_record(rng) for _ in range(rng.randrange(1, 5))]
        hostile = rng.random() < 0.25
        control = rng.random() < 0.1
        fmt = rng.choice(("array", "ndjson", "object")) if len(records) == 1 else rng.choice(("array", "ndjson"))
        items: list[bytes] = [orjson.dumps(r) for r in records]
        if hostile:
            bad = self.hostile_line(rng)
            items.insert(rng.randrange(len(items) + 1), bad)
        if control and fmt == "ndjson":
            items.append(orjson.dumps({"_capture_ext": "done", "request_id": "r"}))
        if fmt == "ndjson":
            body, content_type = b"\n".join(items) + b"\n", "application/x-ndjson"
        elif fmt == "array" or len(items) > 1:
            body, content_type = b"[" + b",".join(items) + b"]", "application/json"
        else:
            body, content_type = items[0], "application/json"
        request = Request("POST", "/v1/records", {"content-type": content_type}, body)
        before = self._counts(process)
        assert self.loop is not None
        try:
            response = self.loop.run_until_complete(process.ingest.handle_http(request))
        except SimKill:
            process.kill()
            self._reap()
            return
        except Exception as exc:
            self.model.violate(f"HTTP ingest raised {type(exc).__name__} (a 500): {exc}")
            return
        uids = [uid for r in records for uid in [uid_of(r)] if uid is not None]
        if response.status == 202:
            for uid in uids:
                self.model.acknowledged.add(uid)
        elif response.status == 503:
            pass
        elif not hostile:
            self.model.violate(f"HTTP: a request of valid records got {response.status}: {response.body[:200]!r}")
        if response.status >= 500 and response.status != 503:
            self.model.violate(f"HTTP answered {response.status}")
        del before

    # -- checks ------------------------------------------------------------------------------
    def check_counts(self, where: str) -> None:
        for process in self.live():
            for name, counts in process.health()["sinks"].items():
                if not counts["reconciled"]:
                    self.model.violate(f"after {where}: {process.environment_id}/{name} not reconciled: {counts}")

    def finish(self) -> None:
        """Heal every sink, end every process, then let fresh processes deliver what is left."""
        for sink in self.sinks.values():
            sink.plan("healthy", 0, True)
        for process in self.live():
            self.run_process(process, process.shutdown(self.clock.now + 3600.0), random.Random(0), crash=False)
        # A process adopts at most one spool bound of dead processes' segments; the rest waits for
        # the next start. Start fresh processes until one finds nothing left (and one more, idle).
        for _ in range(12):
            if not any(n.endswith(".seg") for n in _listdir(self.directory)):
                break
            process = self.start_process()
            for _ in range(50):
                if not process.pending():
                    break
                self.clock.advance(400.0)  # past any breaker
                self.run_process(process, process.flush(self.clock.now + 3600.0, True), random.Random(0), crash=False)
            self.check_counts("the final drain")
            self.run_process(process, process.shutdown(self.clock.now + 3600.0), random.Random(0), crash=False)
        for name, sink in self.sinks.items():
            delivered = sink.delivered()
            missing = sorted(
                uid for uid in self.model.acknowledged if uid not in delivered and not self.model.is_excused(uid, name)
            )
            if missing:
                self.model.violate(f"{name}: {len(missing)} acknowledged records never delivered: {missing[:10]}")
        leftovers = sorted(n for n in _listdir(self.directory) if n.endswith(".seg"))
        if leftovers:
            self.model.violate(f"spool segments left after everything was delivered: {leftovers[:5]}")


def _listdir(path: str) -> list[str]:
    import os

    return os.listdir(path)


def _scratch() -> str | None:
    import os

    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def run(seed: int, ops: list[Op] | None = None) -> Outcome:
    logging.disable(logging.CRITICAL)
    try:
        return Simulation(seed, make_history(seed) if ops is None else ops).run()
    finally:
        logging.disable(logging.NOTSET)


def signature(outcome: Outcome) -> str:
    """What kind of failure this is, stable across shrinking (the first violation's words)."""
    first = outcome.violations[0]
    return first.split(":", 1)[0] if ":" in first else first


def shrink(outcome: Outcome, budget: int = 300) -> Outcome:
    """Remove ops while the same kind of failure remains (greedy, chunks then single ops)."""
    best = outcome
    kind = signature(outcome)
    tries = 0
    chunk = max(len(best.ops) // 2, 1)
    while chunk >= 1 and tries < budget:
        index = 0
        while index < len(best.ops) and tries < budget:
            candidate = best.ops[:index] + best.ops[index + chunk :]
            tries += 1
            result = run(best.seed, candidate)
            if not result.ok and signature(result) == kind:
                best = result
            else:
                index += chunk
        chunk //= 2
    return best


def describe(outcome: Outcome) -> str:
    lines = [f"seed {outcome.seed}: {len(outcome.violations)} violation(s)"]
    lines += [f"  - {v}" for v in outcome.violations[:5]]
    lines.append(f"  history ({len(outcome.ops)} ops; replay: make sim SEED={outcome.seed}):")
    lines += [f"    {op}" for op in outcome.ops]
    return "\n".join(lines)
