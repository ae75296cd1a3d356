"""Benchmark 4 (and its scaling curve): how many records/s the extension ingests on one core.

The extension is pinned to CPU 0 (``taskset``) and the load generator to CPU 1, so the figure is
the extension's own capacity. Fast path: a generator process writes pre-serialised NDJSON lines
over two Unix-socket connections as fast as the socket takes them. HTTP: ``wrk`` (Debian's) POSTs
one record per request, and an array of 100 records per request (40 for 100 KB records, under the
6 MiB request limit), over four keep-alive connections. The rate is what the extension counted
(``/v1/health`` ``received``) over a steady window that skips the ramp-up;
every round uses a fresh extension with room for all it receives.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench._harness import PYTHON, ROOT, Result, Sample, extension, kill, record_of

NAME = "ingest"
SIZES = (1024, 10 * 1024, 100 * 1024)
METHODS = ("fast path (Unix socket)", "HTTP, 1 record/request (wrk)", "HTTP, batched (wrk)")
#: Records per batched request: 100, fewer for large records (a request may carry at most 6 MiB).
BATCH_BYTES = 4 << 20
LOADGEN = """
import socket, sys, time
path, size, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
line = open(sys.argv[4], 'rb').read()
chunk = line * max(1, 65536 // len(line))
socks = []
for _ in range(2):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(path); socks.append(s)
end = time.monotonic() + seconds
while time.monotonic() < end:
    for s in socks:
        s.sendall(chunk)
"""
WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""


def _cpus() -> tuple[int | None, int | None]:
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)


def _taskset(cpu: int | None, argv: list[str]) -> list[str]:
    return argv if cpu is None or not shutil.which("taskset") else ["taskset", "-c", str(cpu), *argv]


def _one(method: str, size: int, seconds: float, tmp: str) -> float:
    ext_cpu, gen_cpu = _cpus()
    rec = record_of(size)
    rec["inference_id"] = "0" * 32
    body_path = os.path.join(tmp, "body")
    batch = max(1, min(100, BATCH_BYTES // size)) if "batched" in method else 1
    env = {"CAPTURE_SINKS": "stdout", "CAPTURE_LOG_LEVEL": "WARNING", "CAPTURE_BUFFER_MAX_BYTES": str(8 << 30)}
    env["CAPTURE_FLUSH_MAX_BYTES"] = str(64 << 20)
    with extension(env, cpu=ext_cpu) as ext:
        if method.startswith("fast"):
            with open(body_path, "wb") as f:
                f.write(json.dumps(rec).encode() + b"\n")
            argv = [PYTHON, "-c", LOADGEN, ext.socket_path, str(size), str(seconds + 1), body_path]
        else:
            with open(body_path, "wb") as f:
                f.write(json.dumps([rec] * batch if batch > 1 else rec).encode())
            script = os.path.join(tmp, "post.lua")
            with open(script, "w") as f:
                f.write(WRK_LUA.format(body=body_path))
            url = f"http://127.0.0.1:{ext.port}/v1/records"
            argv = ["wrk", "-t1", "-c4", f"-d{seconds + 1:.0f}s", "-s", script, url]
        gen = subprocess.Popen(
            _taskset(gen_cpu, argv), cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            time.sleep(0.5)  # ramp-up: connections open, caches warm
            first, t0 = ext.health()["received"], time.monotonic()
            time.sleep(seconds)
            last, t1 = ext.health()["received"], time.monotonic()
        finally:
            kill(gen)
            gen.wait()
        return (last - first) / (t1 - t0)


def run(quick: bool) -> Result:
    result = Result(NAME, "4. Ingest throughput on one core")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk; `make bench` does it)")
    rounds, seconds = (1, 0.5) if quick else (3, 2.0)
    sizes = SIZES[:1] if quick else SIZES
    samples = {(m, s): Sample() for m in METHODS for s in sizes}
    with tempfile.TemporaryDirectory(prefix="capture-bench-") as tmp:
        for _ in range(rounds):
            for size in sizes:
                for method in METHODS:
                    samples[(method, size)].add_round([_one(method, size, seconds, tmp)])
    rows = []
    for size in sizes:
        for method in METHODS:
            values = samples[(method, size)].pooled
            median = sorted(values)[len(values) // 2]
            rows.append(
                [
                    f"{size // 1024} KB",
                    method,
                    f"{median:,.0f}",
                    f"{min(values):,.0f} – {max(values):,.0f}",
                    f"{median * size / 1e6:,.1f}",
                ]
            )
    ext_cpu, _ = _cpus()
    pinned = f"extension pinned to CPU {ext_cpu}, load generator to another" if ext_cpu is not None else "not pinned"
    result.table(
        f"records/s accepted by the extension ({pinned}); median and range over {rounds} fresh-process rounds",
        ["record", "transport", "records/s", "range", "MB/s"],
        rows,
    )
    one_kb = {m: sorted(samples[(m, 1024)].pooled)[len(samples[(m, 1024)].pooled) // 2] for m in METHODS}
    result.goal("ingest, fast path, 1 KB records", f"{one_kb[METHODS[0]]:,.0f} records/s")
    result.goal("ingest, HTTP 1 record/request, 1 KB", f"{one_kb[METHODS[1]]:,.0f} records/s")
    result.goal("ingest, HTTP 100 records/request, 1 KB", f"{one_kb[METHODS[2]]:,.0f} records/s")
    result.series["ingest"] = {m: {str(s): samples[(m, s)].pooled for s in sizes} for m in METHODS}
    return result


def main(argv: list[str] | None = None) -> int:
    from bench._harness import cli

    return cli(NAME, "Ingest throughput of the extension on one core.", run, argv)


if __name__ == "__main__":
    sys.exit(main())
