"""Benchmark 7 (and its scaling curve): the largest backlog a SHUTDOWN drains within 1.5 s.

A fresh extension with the three sinks of the promise (s3_jsonl, s3_parquet and cloudwatch, on
the moto server) buffers N records of 1 KB without any flush, then gets SHUTDOWN with a deadline
1.8 s away; with the default 300 ms safety margin it has 1.5 s. A trial passes when every sink
reports all N delivered (the extension's closing ``SHUTDOWN done`` ledger). N doubles until a
trial fails, then is bisected. For the largest passing N the objects are read back from moto.
"""

from __future__ import annotations

import ast
import json
import socket
import sys
import time
from typing import Any

from bench._harness import Extension, LoopThread, Moto, Result, fmt_ms, record_of

NAME = "drain"
SINKS = ("s3_jsonl", "s3_parquet", "cloudwatch")
BUCKET = "bench-drain"
LOG_GROUP = "/aws/capture-ext/bench-drain"
BUDGET_MS = 1800  # 1.5 s for the extension after its 300 ms margin


def _ledger(log: str) -> dict[str, Any]:
    """The ledger the extension logs last ("SHUTDOWN done ...: {...}")."""
    for line in reversed(log.splitlines()):
        if "SHUTDOWN done" in line and ": {" in line:
            return ast.literal_eval(line[line.index(": {") + 2 :])
    return {}


def _trial(loop: LoopThread, moto: Moto, n: int, warm: bool = True) -> dict[str, Any]:
    moto.reset()
    moto.helper().create_bucket(BUCKET)
    env = {
        **moto.env(),
        "CAPTURE_SINKS": ",".join(SINKS),
        "CAPTURE_S3_BUCKET": BUCKET,
        "CAPTURE_LOG_GROUP": LOG_GROUP,
        "CAPTURE_BUFFER_MAX_BYTES": str(1 << 30),
        "CAPTURE_LOG_LEVEL": "INFO",
        "CAPTURE_FLUSH_INTERVAL_S": "0" if warm else "3600",
        "CAPTURE_WARMUP": "init" if warm else "lazy",
    }
    ext = Extension(loop, env)
    try:
        ext.wait_ready()
        line = json.dumps(record_of(1024)).encode() + b"\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(ext.socket_path)
            if warm:  # one earlier flush: the sinks' clients are open, as after any flushed invoke
                sock.sendall(line)
                time.sleep(0.05)
                ext.invoke(flush=True)
            sock.sendall(line * n)
        n += int(warm)
        deadline = time.monotonic() + 60
        while ext.health()["received"] < n and time.monotonic() < deadline:
            time.sleep(0.02)
        took = ext.shutdown(BUDGET_MS)
        ledger = _ledger(ext.log())
        delivered = {s: ledger.get("delivered", {}).get(s, 0) for s in SINKS}
        return {
            "n": n,
            "exit_ms": took,
            "delivered": delivered,
            "ok": all(v == n for v in delivered.values()) and ext.proc.returncode == 0,
        }
    finally:
        ext.stop()


def _read_back(moto: Moto) -> dict[str, int]:
    aws = moto.helper()
    keys = aws.list_keys(BUCKET)
    jsonl = sum(len(aws.read_jsonl(BUCKET, k)) for k in keys if k.endswith(".jsonl.gz"))
    parquet = sum(aws.read_parquet(BUCKET, k).num_rows for k in keys if k.endswith(".parquet"))
    events = sum(len(v) for v in aws.all_log_messages(LOG_GROUP).values())
    return {"s3_jsonl": jsonl, "s3_parquet": parquet, "cloudwatch": events}


def _search(loop: LoopThread, moto: Moto, start: int, limit: int, steps: int, warm: bool) -> tuple[int, list[Any]]:
    """Double N until a trial fails, then bisect ``steps`` times; returns (largest pass, trials)."""
    trials: list[dict[str, Any]] = []
    n, best, worst = start, 0, 0
    while n <= limit:
        trial = _trial(loop, moto, n, warm)
        trial["warm"] = warm
        trials.append(trial)
        if not trial["ok"]:
            worst = n
            break
        best, n = n, n * 2
    while best and worst and steps and worst - best > best // 8:
        mid = (best + worst) // 2
        trial = _trial(loop, moto, mid, warm)
        trial["warm"] = warm
        trials.append(trial)
        best, worst = (mid, worst) if trial["ok"] else (best, mid)
        steps -= 1
    return best, trials


def run(quick: bool) -> Result:
    result = Result(NAME, "7. Shutdown drain capacity (1 KB records, three sinks, 1.5 s)")
    loop = LoopThread()
    moto = Moto()
    try:
        start, limit, steps = (50, 100, 0) if quick else (1000, 256_000, 3)
        best, trials = _search(loop, moto, start, limit, steps, warm=True)
        cold_best, cold = _search(loop, moto, 100, 100 if quick else 64_000, 0 if quick else 2, warm=False)
        trials += cold
        read_back = {}
        if best:
            _trial(loop, moto, best)
            read_back = _read_back(moto)
    finally:
        loop.stop()
        moto.stop()
    rows = [
        [
            "warm" if t["warm"] else "cold",
            f"{t['n']:,}",
            fmt_ms(t["exit_ms"]),
            ", ".join(f"{s} {v:,}" for s, v in t["delivered"].items()),
            "all delivered" if t["ok"] else "**incomplete**",
        ]
        for t in sorted(trials, key=lambda t: (not t["warm"], t["n"]))
    ]
    result.table(
        f"Each trial a fresh extension; SHUTDOWN deadline {BUDGET_MS} ms away (1.5 s after the margin)",
        ["clients", "backlog (records)", "SHUTDOWN → exit", "delivered per sink", "result"],
        rows,
    )
    result.notes.append(
        f"Read back from moto after a repeat of the largest passing trial ({best:,}): "
        + ", ".join(f"{k} {v:,}" for k, v in read_back.items())
    )
    result.notes.append(
        "warm: CAPTURE_WARMUP=init (the default) opened the sinks' clients at init, and one earlier "
        "invoke flushed once (the backlog counts that record too). cold: CAPTURE_WARMUP=lazy and nothing "
        "ever flushed, so the drain also imports the SDKs, creates the three clients and CloudWatch's log "
        "stream. Records not delivered are kept in the spool."
    )
    result.goal("largest 1 KB backlog drained to all three sinks in 1.5 s (warm)", f"{best:,} records")
    result.goal("… cold: CAPTURE_WARMUP=lazy, never flushed before", f"{cold_best:,} records")
    result.series["drain"] = [
        {"n": t["n"], "warm": t["warm"], "exit_ms": t["exit_ms"], **t["delivered"]} for t in trials
    ]
    return result


def main(argv: list[str] | None = None) -> int:
    from bench._harness import cli

    return cli(NAME, "Shutdown drain capacity to s3_jsonl, s3_parquet and cloudwatch.", run, argv)


if __name__ == "__main__":
    sys.exit(main())
