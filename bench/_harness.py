"""What every benchmark shares: statistics with their spread, result files, and real processes.

The machine is shared and noisy, so every figure is taken in rounds and reported with the spread
of its per-round values; comparisons are made inside one run, never against numbers from another.
Real processes only: the extension runs as ``python -m capture_ext`` against the protocol-faithful
fake Lambda API (driven from a background thread here), and AWS is moto in *server* mode in its
own process, so neither steals the benchmark's interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CACHE = Path(os.environ.get("CAPTURE_BENCH_CACHE", "/tmp/capture-ext-bench"))
#: Bytecode for the processes under test, kept out of the source tree. A deployed layer ships
#: compiled modules; without this every start would recompile capture_ext (~100 ms here).
BYTECODE_ENV = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(CACHE / "pycache")}
T = TypeVar("T")


# -- statistics ---------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: a p99 is a value that was really observed)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


@dataclass
class Sample:
    """Timings taken in rounds: pooled percentiles plus the spread of each round's value."""

    rounds: list[list[float]] = field(default_factory=list)

    def add_round(self, values: list[float]) -> None:
        self.rounds.append(values)

    @property
    def pooled(self) -> list[float]:
        return [v for r in self.rounds for v in r]

    def p(self, q: float) -> float:
        return percentile(self.pooled, q)

    def spread(self, q: float) -> tuple[float, float]:
        per_round = [percentile(r, q) for r in self.rounds if r]
        return (min(per_round), max(per_round)) if per_round else (float("nan"), float("nan"))

    def mean(self) -> float:
        pooled = self.pooled
        return statistics.fmean(pooled) if pooled else float("nan")

    def summary(self) -> dict[str, Any]:
        lo50, hi50 = self.spread(50)
        lo99, hi99 = self.spread(99)
        return {
            "n": len(self.pooled),
            "rounds": len(self.rounds),
            "p50": self.p(50),
            "p99": self.p(99),
            "mean": self.mean(),
            "p50_spread": [lo50, hi50],
            "p99_spread": [lo99, hi99],
        }


def fmt_us(seconds: float) -> str:
    us = seconds * 1e6
    return f"{us:,.1f} µs" if us < 1000 else f"{us / 1000:,.2f} ms"


def fmt_ms(ms: float) -> str:
    return f"{ms:,.2f} ms" if ms < 100 else f"{ms:,.0f} ms"


def fmt_spread(pair: Sequence[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(pair[0])} – {fmt(pair[1])}"


# -- results ------------------------------------------------------------------------------------
@dataclass
class Result:
    """One benchmark's output: tables for people, summary rows for the report, series for plots."""

    name: str
    title: str
    tables: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)

    def table(self, title: str, headers: list[str], rows: list[list[Any]]) -> None:
        self.tables.append({"title": title, "headers": headers, "rows": [[str(c) for c in r] for r in rows]})

    def goal(self, metric: str, value: str, goal: str = "", met: bool | None = None) -> None:
        self.summary.append({"benchmark": self.title, "metric": metric, "value": value, "goal": goal, "met": met})

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "tables": self.tables,
            "summary": self.summary,
            "notes": self.notes,
            "series": self.series,
        }


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: ""}[met]


def render_text(result: Result) -> str:
    parts = [f"## {result.title}"]
    for tab in result.tables:
        parts += [f"\n### {tab['title']}\n", markdown_table(tab["headers"], tab["rows"])]
    if result.summary:
        rows = [[s["metric"], s["value"], s["goal"], verdict(s["met"])] for s in result.summary]
        parts += ["\n### Summary\n", markdown_table(["metric", "value", "goal", ""], rows)]
    parts += [f"\n- {n}" for n in result.notes]
    return "\n".join(parts)


def cli(name: str, description: str, run: Callable[[bool], Result], argv: list[str] | None) -> int:
    """The argparse front every benchmark module shares: ``--quick`` and ``--json PATH``."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs, measures nothing")
    parser.add_argument("--json", type=Path, help="also write the result as JSON to this file (for bench.run)")
    args = parser.parse_args(argv)
    result = run(args.quick)
    print(render_text(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result.to_json(), indent=1))
    return 0


# -- processes ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kb(pid: int) -> int:
    """Resident set size of a live process, from /proc (VmRSS, in KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def http_json(url: str, data: bytes | None = None, timeout: float = 5.0) -> Any:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def kill(proc: subprocess.Popen[Any] | None) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class LoopThread:
    """An asyncio loop in a daemon thread, for servers that must answer while the main thread measures."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Cancel what is still pending (long-polls of a killed extension), then stop the loop."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=2) if tasks else None

        with contextlib.suppress(Exception):
            self.call(cancel_all(), 5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


class Moto:
    """moto in server mode, in its own process, on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(Path(PYTHON).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    kill(self.proc)
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", data=b""), timeout=10).read()

    def helper(self) -> Any:
        from capture_ext.testing.aws import AwsHelper

        return AwsHelper(self.endpoint)

    def stop(self) -> None:
        kill(self.proc)


class Extension:
    """``python -m capture_ext`` as a real process, registered with a fake Lambda API of its own."""

    def __init__(self, loop: LoopThread, env: dict[str, str], telemetry: bool = True, cpu: int | None = None) -> None:
        from tests.fakes.lambda_api import FakeLambdaAPI

        self.loop = loop
        self.api = FakeLambdaAPI(telemetry=telemetry, function_name="bench-fn")
        address = loop.call(self.api.start())
        self.tmp = tempfile.TemporaryDirectory(prefix="capture-bench-")
        self.socket_path = os.path.join(self.tmp.name, "capture.sock")
        self.port = free_port()
        full_env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            **BYTECODE_ENV,
            "AWS_LAMBDA_RUNTIME_API": address,
            "CAPTURE_SOCKET": self.socket_path,
            "CAPTURE_PORT": str(self.port),
            "CAPTURE_SINKS": "file",
            "CAPTURE_FILE_DIR": os.path.join(self.tmp.name, "files"),
            "CAPTURE_METRICS": "0",
            **env,
        }
        argv = [PYTHON, "-m", "capture_ext"]
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        self.stderr_path = os.path.join(self.tmp.name, "stderr.log")
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.spawned_at = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            env=full_env,
            cwd=str(ROOT),
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Block until the extension waits in ``/next``; returns ms from spawn to that moment."""
        try:
            self.loop.call(self.api.wait_idle(timeout), timeout + 5)
        except Exception:
            raise RuntimeError(f"extension not ready: {self.log()[-2000:]}") from None
        return (time.monotonic() - self.spawned_at) * 1000

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = http_json(f"http://127.0.0.1:{self.port}/v1/health")
        return body

    def invoke(self, flush: bool = True) -> None:
        """One INVOKE plus its runtimeDone; returns once the extension is back in ``/next``."""

        async def run() -> None:
            request_id = await self.api.invoke()
            if flush:
                await self.api.runtime_done(request_id)
            await self.api.wait_idle(60)

        self.loop.call(run(), 90)

    def shutdown(self, budget_ms: float = 2000) -> float:
        """Send SHUTDOWN; returns ms until the process exited."""
        started = time.monotonic()
        self.loop.call(self.api.shutdown(budget_ms))
        try:
            self.proc.wait(budget_ms / 1000 + 5)
        except subprocess.TimeoutExpired:
            kill(self.proc)
        return (time.monotonic() - started) * 1000

    def log(self) -> str:
        self._stderr.flush()
        return Path(self.stderr_path).read_text(errors="replace")

    def stop(self) -> None:
        kill(self.proc)
        self._stderr.close()
        self.tmp.cleanup()


@contextlib.contextmanager
def extension(env: dict[str, str] | None = None, telemetry: bool = True, cpu: int | None = None) -> Iterator[Extension]:
    loop = LoopThread()
    ext = Extension(loop, env or {}, telemetry=telemetry, cpu=cpu)
    try:
        ext.wait_ready()
        yield ext
    finally:
        ext.stop()
        loop.stop()


def record_of(size: int, seed: int = 0) -> dict[str, Any]:
    """A QA-shaped capture record whose JSON is about ``size`` bytes."""
    question = "What is the capital of France?"
    base: dict[str, Any] = {
        "input": {"question": question, "context": ""},
        "output": {"answer": "Paris", "score": 0.9876, "start": 31, "end": 36},
        "model": {"name": "distilbert-qa", "version": "1"},
        "latency_ms": 41.7,
        "metadata": {"source": "bench", "seed": seed},
    }
    overhead = len(json.dumps(base)) + 60  # inference_id, timestamp, request_id
    base["input"]["context"] = ("Paris is the capital and largest city of France. " * (size // 40 + 1))[
        : max(0, size - overhead)
    ]
    return base
