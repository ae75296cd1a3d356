"""Benchmark 6: the extension's cold start (process start → registered and waiting) and idle RSS.

Every trial is a fresh ``python -m capture_ext`` against the fake Lambda API; configurations are
interleaved trial by trial, next to a bare ``python -c pass`` started the same way. "Ready" is
measured from outside (spawn → the first ``/event/next`` call reaches the API) and from inside
(``ready_ms`` of ``/v1/health``, counted from the interpreter's first line of ``capture_ext``).
CPU time (user + system, from /proc) says what the start costs regardless of how busy the shared
machine is. RSS is read from /proc once the extension has idled 300 ms.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench._harness import PYTHON, Extension, LoopThread, Moto, Result, Sample, fmt_ms, rss_kb

NAME = "cold_start"
ALL_SINKS = "s3_jsonl,s3_parquet,cloudwatch,firehose"


def _cpu_ms(pid: int) -> float:
    """User + system CPU time of a live process (/proc/<pid>/stat, clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def _bare_python() -> tuple[float, float, float]:
    """Wall ms and CPU ms of ``python -c pass``, and the RSS (MiB) of an idle bare interpreter."""
    started = time.monotonic()
    proc = subprocess.Popen([PYTHON, "-c", "pass"])
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    wall = (time.monotonic() - started) * 1000
    cpu = (usage.ru_utime + usage.ru_stime) * 1000
    idle = subprocess.Popen([PYTHON, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        time.sleep(0.3)
        rss = rss_kb(idle.pid) / 1024
    finally:
        idle.kill()
        idle.wait()
    return wall, cpu, rss


def _extension(loop: LoopThread, env: dict[str, str]) -> tuple[float, float, float, float, list[str]]:
    """(spawn → waiting in /next ms, CPU ms to then, self-reported ready_ms, idle RSS MiB, sinks)."""
    ext = Extension(loop, env)
    try:
        wall = ext.wait_ready()
        cpu = _cpu_ms(ext.proc.pid)
        time.sleep(0.3)
        health = ext.health()
        rss = rss_kb(ext.proc.pid) / 1024
        return wall, cpu, float(health["ready_ms"]), rss, sorted(health.get("sinks", {}))
    finally:
        ext.stop()


def run(quick: bool) -> Result:
    result = Result(NAME, "6. Cold start and idle memory")
    trials = 2 if quick else 12
    moto = Moto()
    loop = LoopThread()
    all_sinks = {"CAPTURE_SINKS": ALL_SINKS, "CAPTURE_FIREHOSE_STREAM": "bench-stream"}
    configs = {
        "s3_jsonl, warm-up at init (default)": {"CAPTURE_SINKS": "s3_jsonl", "CAPTURE_WARMUP": "init"},
        "s3_jsonl, CAPTURE_WARMUP=lazy": {"CAPTURE_SINKS": "s3_jsonl", "CAPTURE_WARMUP": "lazy"},
        "all sinks, warm-up at init (default)": {**all_sinks, "CAPTURE_WARMUP": "init"},
        "all sinks, CAPTURE_WARMUP=lazy": {**all_sinks, "CAPTURE_WARMUP": "lazy"},
    }
    default, lazy, all_default, all_lazy = configs
    base = {**moto.env(), "CAPTURE_S3_BUCKET": "bench-capture", "CAPTURE_LOG_LEVEL": "INFO"}
    wall = {name: Sample() for name in ["python -c pass", *configs]}
    cpu = {name: Sample() for name in ["python -c pass", *configs]}
    ready = {name: Sample() for name in configs}
    rss = {name: Sample() for name in ["python -c pass", *configs]}
    seen: dict[str, list[str]] = {}
    try:
        for env in configs.values():  # warm the page cache and the bytecode cache: trials measure CPU
            _extension(loop, {**base, **env})
        for _ in range(trials):
            ms, cpu_ms, mib = _bare_python()
            wall["python -c pass"].add_round([ms])
            cpu["python -c pass"].add_round([cpu_ms])
            rss["python -c pass"].add_round([mib])
            for name, env in configs.items():
                w, c, r, m, sinks = _extension(loop, {**base, **env})
                wall[name].add_round([w])
                cpu[name].add_round([c])
                ready[name].add_round([r])
                rss[name].add_round([m])
                seen[name] = sinks
    finally:
        loop.stop()
        moto.stop()
    rows = []
    for name in wall:
        ws = wall[name].summary()
        rs = ready[name].summary() if name in ready else {}
        mem = rss[name].summary()
        rows.append(
            [
                name,
                fmt_ms(ws["p50"]),
                f"{fmt_ms(min(wall[name].pooled))} – {fmt_ms(max(wall[name].pooled))}",
                fmt_ms(cpu[name].p(50)),
                fmt_ms(rs["p50"]) if rs else "–",
                f"{mem['p50']:.1f} MiB",
                ", ".join(seen.get(name, [])) or "–",
            ]
        )
    result.table(
        f"Median of {trials} fresh processes each (range = fastest – slowest)",
        [
            "process",
            "spawn → in /next (init done)",
            "range",
            "CPU time",
            "ready_ms (self-reported)",
            "idle RSS",
            "sinks",
        ],
        rows,
    )
    bare = wall["python -c pass"].p(50)
    for name in (lazy, all_lazy):
        w = wall[name].p(50)
        result.goal(
            f"ready, {name} (spawn → /next)", f"{fmt_ms(w)} ({w / bare:.1f}× python -c pass)", "≤ 150 ms", w <= 150
        )
    for name in (default, all_default):
        w, r = wall[name].p(50), ready[name].p(50)
        result.goal(
            f"ready, {name}",
            f"registered and serving after {fmt_ms(r)}; in /next after {fmt_ms(w)}",
            "≤ 150 ms",
            r <= 150,
        )
    result.goal(
        "CPU time to /next, s3_jsonl (lazy / default)",
        f"{fmt_ms(cpu[lazy].p(50))} / {fmt_ms(cpu[default].p(50))} "
        f"({fmt_ms(cpu['python -c pass'].p(50))} for python -c pass)",
    )
    for name in (default, lazy):
        m = rss[name].p(50)
        result.goal(f"idle RSS, {name}", f"{m:.1f} MiB", "≤ 40 MB", m <= 40 * 1e6 / 2**20)
    result.goal("idle RSS, all sinks (default / lazy)", f"{rss[all_default].p(50):.1f} / {rss[all_lazy].p(50):.1f} MiB")
    result.notes.append(
        "ready_ms is the extension's own figure, from the first line of capture_ext/__main__.py to registered, "
        "servers up and telemetry subscribed; with CAPTURE_WARMUP=init (the default since cb4ab2f) the extension "
        "then imports the sinks' SDKs and opens their clients before its first /next, which Lambda counts as init."
    )
    result.series["cold_start"] = {name: {"wall": wall[name].summary(), "rss": rss[name].summary()} for name in wall}
    return result


def main(argv: list[str] | None = None) -> int:
    from bench._harness import cli

    return cli(NAME, "Cold start and idle RSS of the extension.", run, argv)


if __name__ == "__main__":
    sys.exit(main())
