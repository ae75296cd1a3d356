"""Benchmark 10: the extension's own CPU per invoke, split at ``platform.runtimeDone``.

On Lambda the function's vCPUs are shared with its extensions: every microsecond the extension
spends on a CPU while the handler runs is taken from the model. Wall time on this shared machine
swings by several per cent between runs; the extension's on-CPU time (``/proc/<pid>/task/*/schedstat``,
nanoseconds, every thread) does not. Per invoke the platform's part is played from here, against
the protocol-faithful fake Lambda API: INVOKE, then the "handler" sends its records over the Unix
socket with the real client (``handler_started``, N records, ``handler_done``, as
``@capture_handler`` does) and thinks for a few ms, then ``platform.runtimeDone`` (when telemetry
is on), then the extension is back in ``/next``. CPU is read at INVOKE, at runtimeDone and after
the extension has settled. The baseline is the do-nothing extension (``bench._noop_extension``:
register, then ``/next`` in a loop with urllib) under the same fake API, interleaved round by
round in the same run. No flush is due (the interval is an hour), so the figures are the cost of
being there, not of delivering.
"""

from __future__ import annotations

import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._harness import BYTECODE_ENV, PYTHON, ROOT, LoopThread, Result, Sample, kill, record_of

NAME = "extension_cpu"
#: The handler's "thinking" after its last record: long enough for the extension to take what it
#: will take during the handler window on a busy 2-core machine.
THINK_S = 0.008
NO_FLUSH = {"CAPTURE_FLUSH_INTERVAL_S": "3600", "CAPTURE_FLUSH_MAX_RECORDS": "1000000"}


def cpu_ns(pid: int) -> int:
    """On-CPU nanoseconds of every thread of a live process (first field of each task's schedstat)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return total


class Subject:
    """One extension process (capture-ext or the do-nothing one) under its own fake Lambda API."""

    def __init__(self, loop: LoopThread, kind: str, telemetry: bool, env: dict[str, str], late: bool = False) -> None:
        from capture_ext.client import CaptureClient
        from tests.fakes.lambda_api import FakeLambdaAPI

        self.kind = kind
        self.loop = loop
        #: Deliver each runtimeDone only after the next INVOKE, as Lambda does after a freeze.
        self.late = late
        self.pending = ""
        self.api = FakeLambdaAPI(telemetry=telemetry, function_name="bench-fn")
        address = loop.call(self.api.start())
        self.tmp = tempfile.TemporaryDirectory(prefix="capture-bench-cpu-")
        socket_path = os.path.join(self.tmp.name, "capture.sock")
        from bench._harness import free_port

        port = free_port()
        full_env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            **BYTECODE_ENV,
            "AWS_LAMBDA_RUNTIME_API": address,
            "CAPTURE_SOCKET": socket_path,
            "CAPTURE_PORT": str(port),
            "CAPTURE_SINKS": "file",
            "CAPTURE_FILE_DIR": os.path.join(self.tmp.name, "files"),
            "CAPTURE_SPOOL_DIR": os.path.join(self.tmp.name, "spool"),
            "CAPTURE_METRICS": "0",
            "CAPTURE_LOG_LEVEL": "WARNING",
            **NO_FLUSH,
            **env,
        }
        module = ["-m", "capture_ext"] if kind == "capture-ext" else ["-m", "bench._noop_extension", "noop"]
        self.profile_path = ""
        if kind == "capture-ext (profiled)":
            self.profile_path = os.path.join(self.tmp.name, "profile.out")
            module = ["-m", "bench._profiled_extension", self.profile_path]
        self.proc = subprocess.Popen(
            [PYTHON, *module],
            env=full_env,
            cwd=str(ROOT),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.loop.call(self.api.wait_idle(30), 35)
        self.client = CaptureClient(socket_path=socket_path, port=port)

    def invoke(self, records: list[dict[str, Any]]) -> tuple[int, int]:
        """One invoke; returns the extension's CPU ns (handler window, after runtimeDone)."""
        pid = self.proc.pid
        before = cpu_ns(pid)
        request_id = self.loop.call(self.api.invoke())
        if self.late and self.pending:  # the thaw: the last invoke's runtimeDone comes now
            self.loop.call(self.api.runtime_done(self.pending))
        self.client.handler_started(request_id)
        for record in records:
            self.client.capture(**record, request_id=request_id)
        self.client.handler_done(request_id)
        time.sleep(THINK_S)
        at_done = cpu_ns(pid)

        async def finish() -> None:
            if self.late:
                self.pending = request_id
            else:
                await self.api.runtime_done(request_id)
            await self.api.wait_idle(30)

        self.loop.call(finish())
        time.sleep(THINK_S)  # what the extension does after runtimeDone (reading, spooling)
        return at_done - before, cpu_ns(pid) - at_done

    def stop(self) -> None:
        """SHUTDOWN (if still running), then remove everything it made."""
        if self.proc.poll() is None:
            try:
                self.loop.call(self.api.shutdown(2000))
                self.proc.wait(10)
            except Exception:
                kill(self.proc)
        self.client.close()
        self.loop.call(self.api.stop())
        self.tmp.cleanup()


def _records(count: int) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        base = record_of(1024, seed=i)
        out.append({k: base[k] for k in ("input", "output", "model", "latency_ms", "metadata")})
    return out


def _measure(
    loop: LoopThread, telemetry: bool, late: bool, count: int, rounds: int, per_round: int, warm: int, option: str
) -> dict[str, dict[str, Sample]]:
    """Per-invoke CPU (µs) of both extensions, interleaved round by round."""
    records = _records(count)
    out = {kind: {"window": Sample(), "after": Sample(), "total": Sample()} for kind in ("capture-ext", "noop")}
    env = dict([option.split("=")]) if option else {}
    subjects = [Subject(loop, kind, telemetry, env, late) for kind in ("capture-ext", "noop")]
    try:
        for subject in subjects:  # warm up: first connections, first spool segment, bytecode
            for _ in range(warm):
                subject.invoke(records)
        for r in range(rounds):
            for subject in subjects if r % 2 == 0 else subjects[::-1]:
                window, after = [], []
                for _ in range(per_round):
                    w, a = subject.invoke(records)
                    window.append(w / 1000)
                    after.append(a / 1000)
                out[subject.kind]["window"].add_round(window)
                out[subject.kind]["after"].add_round(after)
                out[subject.kind]["total"].add_round([w + a for w, a in zip(window, after, strict=True)])
    finally:
        for subject in subjects:
            subject.stop()
    return out


def _profile(loop: LoopThread, invokes: int, count: int) -> list[list[str]]:
    """cProfile of capture-ext over ``invokes`` invokes (telemetry on in Lambda's order, ``count`` records)."""
    subject = Subject(loop, "capture-ext (profiled)", True, {}, late=True)
    records = _records(count)
    try:
        for _ in range(10):
            subject.invoke(records)
        subject.proc.send_signal(signal.SIGUSR1)  # start profiling: start-up and warm-up left out
        for _ in range(invokes):
            subject.invoke(records)
        loop.call(subject.api.shutdown(2000))
        subject.proc.wait(10)  # the profile is written on the way out
        stats = pstats.Stats(subject.profile_path)
    finally:
        subject.stop()
    rows = []
    entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    for (filename, line, func), (_cc, calls, tottime, cumtime, _callers) in entries[:15]:
        where = filename.replace(str(ROOT) + "/", "").split("site-packages/")[-1].split("lib/python3")[-1]
        rows.append(
            [
                f"`{where}:{line} {func}`",
                str(calls),
                f"{tottime / invokes * 1e6:,.1f}",
                f"{cumtime / invokes * 1e6:,.1f}",
            ]
        )
    return rows


def _cold(quick: bool) -> dict[str, tuple[Sample, Sample]]:
    """Spawn → first /next (ms) and idle RSS (MiB) with s3_jsonl, CAPTURE_WARMUP=init vs lazy."""
    from bench._harness import Moto
    from bench.cold_start import _extension

    moto = Moto()
    loop = LoopThread()
    base = {**moto.env(), "CAPTURE_SINKS": "s3_jsonl", "CAPTURE_S3_BUCKET": "bench-capture"}
    out = {mode: (Sample(), Sample()) for mode in ("init", "lazy")}
    try:
        for mode in out:
            _extension(loop, {**base, "CAPTURE_WARMUP": mode})
        for _ in range(1 if quick else 5):
            for mode, (wall, rss) in out.items():
                w, _cpu, _ready, mib, _sinks = _extension(loop, {**base, "CAPTURE_WARMUP": mode})
                wall.add_round([w])
                rss.add_round([mib])
    finally:
        loop.stop()
        moto.stop()
    return out


def _ingest_per_record(reads: int, rounds: int) -> Sample:
    """CPU per record of the socket path in-process: 10-line reads through the line protocol,
    ``loads_exact``, ``normalize``, enrichment, serialisation and one spool ``write`` per read.

    Only the per-record work, without the event loop or the syscalls of the socket: what ten
    records cost more than one. Fresh lines each time (new ids, the client's timestamps), as in
    the extension; ``thread_time`` so that other processes on the machine do not count.
    """
    from capture_ext.client import _dumps
    from capture_ext.core.buffer import MemoryBudget, RecordBuffer
    from capture_ext.core.ingest import Ingest, _LineProtocol
    from capture_ext.core.ledger import Ledger
    from capture_ext.core.records import Enricher
    from capture_ext.core.spool import Spool
    from capture_ext.core.store import Store

    records = _records(10)
    sample = Sample()
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="capture-bench-ingest-") as tmp:
            budget = MemoryBudget(1 << 34)
            spool = Spool(tmp, 1 << 33, "flush", "bench")
            spool.open()
            store = Store(RecordBuffer("bench", budget, 10**9, 1 << 33), budget, spool, sinks=["file"])
            ingest = Ingest(store, Ledger(), Enricher("fn", "1", "bench"), 1 << 20)
            protocol = _LineProtocol(ingest, 1 << 20)
            chunks = [
                b"".join(
                    _dumps({"inference_id": os.urandom(16).hex(), "timestamp": time.time_ns() // 1_000_000, **r})
                    + b"\n"
                    for r in records
                )
                for _ in range(reads)
            ]
            started = time.thread_time()
            for data in chunks:
                protocol.data_received(data)
            count = reads * len(records)
            sample.add_round([(time.thread_time() - started) / count * 1e6])
            if len(store.buffer) != count:
                raise RuntimeError(f"{len(store.buffer)} of {count} records were kept")
            store.close()
    return sample


def _us(value: float) -> str:
    return f"{value:,.0f} µs"


def run(quick: bool) -> Result:
    result = Result(NAME, "10. The extension's CPU per invoke (handler window, after runtimeDone)")
    rounds, per_round = (2, 5) if quick else (6, 40)
    loop = LoopThread()
    hold, awake = "CAPTURE_HOLD_SOCKET=1", "CAPTURE_STAY_AWAKE=1"
    configs = [  # (telemetry, runtimeDone after the next INVOKE, records, option)
        (True, False, 1, ""),
        (True, False, 10, ""),
        (True, True, 1, ""),
        (True, True, 10, ""),
        (False, False, 1, ""),
        (False, False, 10, ""),
        (True, False, 1, hold),
        (True, False, 10, hold),
        (True, True, 1, hold),
        (True, True, 10, hold),
        # Awake until runtimeDone, the extension is not frozen before it: Lambda's order is this one.
        (True, False, 1, awake),
        (True, False, 10, awake),
    ]
    rows = []
    goals: dict[str, tuple[float, float, tuple[float, float], tuple[float, float]]] = {}
    try:
        for telemetry, late, count, option in configs:
            got = _measure(loop, telemetry, late, count, rounds, per_round, 2 if quick else 20, option)
            cap, noop = got["capture-ext"], got["noop"]
            ratio: dict[str, tuple[float, float]] = {}
            for part in ("window", "after", "total"):
                per = [
                    (sum(c) / len(c)) / (sum(n) / len(n))
                    for c, n in zip(cap[part].rounds, noop[part].rounds, strict=True)
                    if sum(n) > 0
                ]
                ratio[part] = (min(per), max(per)) if per else (float("nan"), float("nan"))
            when = "runtimeDone after the next INVOKE (frozen)" if late else "runtimeDone before the next INVOKE"
            label = (
                f"{count} × 1 KB record{'s' if count > 1 else ''}, "
                + (f"telemetry on, {when}" if telemetry else "telemetry off")
                + (f", {option}" if option else "")
            )
            for part in ("window", "after", "total"):
                rows.append(
                    [
                        label,
                        {"window": "handler window", "after": "after runtimeDone", "total": "total"}[part],
                        _us(cap[part].mean()),
                        _us(noop[part].mean()),
                        f"{cap[part].mean() / noop[part].mean():.2f}×" if part != "after" else "–",
                        f"{ratio[part][0]:.2f} – {ratio[part][1]:.2f}" if part != "after" else "–",
                    ]
                )
            goals[label] = (
                cap["window"].mean() / noop["window"].mean(),
                cap["total"].mean() / noop["total"].mean(),
                ratio["window"],
                ratio["total"],
            )
        profiles = {count: _profile(loop, 10 if quick else 300, count) for count in (1, 10)}
    finally:
        loop.stop()
    per_record = _ingest_per_record(50 if quick else 1000, 2 if quick else 5)
    cold = _cold(quick)
    for mode, (wall, rss) in cold.items():
        label = "CAPTURE_WARMUP=init (default)" if mode == "init" else "CAPTURE_WARMUP=lazy"
        rows.append([f"s3_jsonl, {label}", "spawn → first /next", f"{wall.p(50):,.0f} ms", "", "", ""])
        rows.append([f"s3_jsonl, {label}", "idle RSS", f"{rss.p(50):.1f} MiB", "", "", ""])
    rows.append(
        [
            "socket path in-process, 10-line reads, spool on",
            f"CPU per record (median of {len(per_record.rounds)} rounds; spread: lowest – highest)",
            f"{per_record.p(50):.1f} µs",
            "",
            "",
            "{:.1f} – {:.1f} µs".format(*per_record.spread(50)),
        ]
    )
    result.table(
        f"Mean on-CPU time per invoke, {rounds} interleaved rounds of {per_round} invokes; no flush due "
        "(ratio spread = lowest – highest per-round ratio)",
        ["case", "part", "capture-ext", "do-nothing extension", "ratio", "ratio spread"],
        rows,
    )
    for count, profile in profiles.items():
        result.table(
            "Where capture-ext's CPU goes (cProfile on CPU time, default settings, telemetry on in Lambda's "
            f"order (frozen), {count} record{'s' if count > 1 else ''} per invoke, and the SHUTDOWN; µs per "
            "invoke, top 15 by own time; the profiler inflates small functions)",
            ["function", "calls", "own µs/invoke", "cumulative µs/invoke"],
            profile,
        )
    for label, (window, total, wspread, tspread) in goals.items():
        result.goal(
            f"handler-window CPU, {label}",
            f"{window:.2f}× the do-nothing extension ({wspread[0]:.2f} – {wspread[1]:.2f})",
            "≤ 1.0×",
            window <= 1.0,
        )
        result.goal(
            f"total CPU per invoke, {label}",
            f"{total:.2f}× ({tspread[0]:.2f} – {tspread[1]:.2f})",
            "≤ 1.5×",
            total <= 1.5,
        )
    result.notes.append(
        "Lambda freezes the environment as soon as the runtime and every extension wait in /next, and delivers "
        "telemetry only while thawed: with no flush due (capture-ext is back in /next before the runtime is done) "
        "an invoke's runtimeDone arrives after the next INVOKE. The 'frozen' rows play that order; the fake API "
        "itself never freezes."
    )
    result.notes.append(
        "With CAPTURE_STAY_AWAKE=1 the extension does not go back to /next before runtimeDone, so Lambda does not "
        "freeze it before runtimeDone either: its rows are played in that order, and benchmark 3 measures the "
        "billed time it costs."
    )
    result.notes.append(
        "CPU is every thread's on-CPU time from /proc/<pid>/task/*/schedstat, read by the benchmark at INVOKE, "
        f"after the handler's records and {THINK_S * 1000:.0f} ms of thinking (runtimeDone), and "
        f"{THINK_S * 1000:.0f} ms after the extension is back in /next. Without telemetry there is no runtimeDone: "
        "the window ends at the same point, and capture-ext takes the records as they come."
    )
    result.series[NAME] = {label: {"window_ratio": g[0], "total_ratio": g[1]} for label, g in goals.items()}
    return result


def main(argv: list[str] | None = None) -> int:
    from bench._harness import cli

    return cli(NAME, "The extension's CPU per invoke against a do-nothing extension.", run, argv)


if __name__ == "__main__":
    sys.exit(main())
