"""Serialization throughput of each sink format, and optionally the drain time to moto.

    .venv/bin/python bench/serialize.py                 # encode only, no network
    .venv/bin/python bench/serialize.py --drain 10000   # also drain to s3_jsonl+s3_parquet+cloudwatch
    .venv/bin/python bench/serialize.py --drain 10000 --moto-process   # moto in its own process

Records are ~1 KB enriched question-answering records (the size the issue asks about). Each
format encodes batches of ``--batch`` records the way its sink does (partitioning and request
planning included), several times; the median is reported. Numbers on a shared 2-core VM vary
by 20-30 %; compare runs on the same machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from capture_ext.models import Batch
from capture_ext.sinks import cloudwatch, firehose
from capture_ext.sinks._layout import group_by_partition
from capture_ext.sinks._serialize import dumps, encode_jsonl_gz

ENV_ID = "benchenv01"
#: Context text for the QA inputs: English-like, so gzip/zstd see realistic redundancy.
WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "it",
    "from",
    "at",
    "his",
    "an",
    "were",
    "are",
    "which",
    "this",
    "be",
    "has",
    "model",
    "lambda",
    "extension",
    "capture",
    "record",
    "inference",
    "question",
    "answer",
    "context",
    "score",
    "latency",
    "bucket",
    "partition",
    "stream",
    "batch",
    "deploy",
    "region",
    "function",
    "runtime",
    "memory",
    "token",
    "layer",
    "neural",
    "network",
    "data",
    "river",
    "mountain",
    "city",
    "history",
    "century",
    "population",
    "language",
    "government",
    "university",
    "science",
    "music",
]


def make_records(n: int, size: int = 1024) -> list[dict[str, Any]]:
    """``n`` enriched records whose JSON is ``size`` bytes (±1)."""
    start = datetime.now(UTC) - timedelta(minutes=10)
    rng = random.Random(7)  # same text every run: compression ratios are comparable
    records = []
    for i in range(n):
        at = start + timedelta(milliseconds=i * 20)
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
        record: dict[str, Any] = {
            "inference_id": uuid.uuid4().hex,
            "request_id": str(uuid.uuid4()),
            "model": {"name": "distilbert-base-cased-distilled-squad", "version": "1"},
            "timestamp": stamp,
            "latency_ms": 71.3,
            "input": {"question": f"Where does record {i} go?", "context": ""},
            "output": {"answer": "to the sinks", "score": 0.87, "start": 12, "end": 24},
            "metadata": {"tenant": "bench"},
            "function_name": "bench-fn",
            "function_version": "$LATEST",
            "environment_id": ENV_ID,
            "captured_at": stamp,
            "sequence": i,
        }
        words = rng.choices(WORDS, k=size // 4)
        context = " ".join(words)
        record["input"]["context"] = context[: max(size - len(dumps(record)), 0)]
        records.append(record)
    return records


def encoders() -> dict[str, Callable[[list[dict[str, Any]]], int]]:
    """Format name → a function encoding one batch as the sink does; returns bytes produced."""
    from capture_ext.sinks._parquet import encode_parquet

    def jsonl(records: list[dict[str, Any]], fmt: str = "capture") -> int:
        return sum(len(encode_jsonl_gz(g, fmt)) for g in group_by_partition(records, "bench-fn").values())

    def parquet(records: list[dict[str, Any]]) -> int:
        return sum(len(encode_parquet(g)) for g in group_by_partition(records, "bench-fn").values())

    def logs(records: list[dict[str, Any]]) -> int:
        events, _, _ = cloudwatch.to_events(records, int(time.time() * 1000))
        return sum(sum(e.size for e in request) for request in cloudwatch.plan_requests(events))

    def delivery(records: list[dict[str, Any]]) -> int:
        blobs = [firehose.encode(r)[0] for r in records]
        return sum(len(blobs[i]) for request in firehose.plan_requests(blobs) for i in request)

    return {
        "s3_jsonl (gzip-3)": jsonl,
        "s3_jsonl sagemaker (gzip-3)": lambda r: jsonl(r, "sagemaker"),
        "s3_parquet (zstd-3)": parquet,
        "cloudwatch events": logs,
        "firehose records": delivery,
    }


def measure(batch: int, repeats: int, size: int) -> list[tuple[str, float, float]]:
    records = make_records(batch, size)
    raw = sum(len(dumps(r)) for r in records)
    rows = []
    for name, encode in encoders().items():
        encode(records[:10])  # warm-up (imports, first-call costs)
        timings, produced = [], 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            produced = encode(records)
            timings.append(time.perf_counter() - t0)
        rows.append((name, batch / statistics.median(timings), produced / raw))
    return rows


class MotoProcess:
    """``moto_server`` in its own process, so it does not share the GIL with the sinks."""

    def __init__(self) -> None:
        import socket
        import subprocess
        import sys
        import urllib.request
        from pathlib import Path

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        binary = Path(sys.executable).with_name("moto_server")
        self._process = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)

    def env(self) -> dict[str, str]:
        from capture_ext.testing.aws import CREDENTIALS, REGION

        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": REGION, **CREDENTIALS}

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)


async def drain(total: int, batch: int, separate_process: bool) -> dict[str, float]:
    """Seconds to write ``total`` records to the three sinks on a local moto server."""
    from capture_ext.models import SinkContext
    from capture_ext.sinks.cloudwatch import CloudWatchSink
    from capture_ext.sinks.s3_jsonl import S3JsonlSink
    from capture_ext.sinks.s3_parquet import S3ParquetSink
    from capture_ext.testing.aws import AwsHelper, MotoServer

    server: MotoProcess | MotoServer = MotoProcess() if separate_process else MotoServer()
    try:
        env = {**server.env(), "CAPTURE_S3_BUCKET": "bench", "AWS_LAMBDA_FUNCTION_NAME": "bench-fn"}
        AwsHelper(server.endpoint).create_bucket("bench")
        records = make_records(total)
        batches = [
            Batch(f"{ENV_ID}-{n:08d}", ENV_ID, n, tuple(records[i : i + batch]))
            for n, i in enumerate(range(0, total, batch), start=1)
        ]
        sinks: list[Any] = [
            cls(SinkContext(name, env, "bench-fn", environment_id=ENV_ID))
            for name, cls in (("s3_jsonl", S3JsonlSink), ("s3_parquet", S3ParquetSink), ("cloudwatch", CloudWatchSink))
        ]

        async def one(sink: Any) -> float:
            t0 = time.perf_counter()
            for b in batches:  # the dispatcher writes one batch at a time per sink
                result = await sink.write_batch(b)
                assert result.is_ok, result
            return time.perf_counter() - t0

        t0, cpu0 = time.perf_counter(), time.process_time()
        per_sink = await asyncio.gather(*(one(s) for s in sinks))  # sinks drain concurrently
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        for sink in sinks:
            await sink.close(1.0)
        times = {**{s.name: t for s, t in zip(sinks, per_sink, strict=True)}, "all three (wall)": wall}
        if separate_process:  # otherwise moto's own CPU would be counted too
            times["all three (our CPU)"] = cpu
        return times
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1000, help="records per batch (default 1000)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per format (median reported)")
    parser.add_argument("--size", type=int, default=1024, help="JSON bytes per record (default 1024)")
    parser.add_argument("--drain", type=int, default=0, metavar="N", help="also drain N records to moto")
    parser.add_argument(
        "--moto-process", action="store_true", help="run moto_server as a subprocess (default: a moto thread)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    print(f"encode only, {args.batch} records of {args.size} B per batch, median of {args.repeats}:")
    print(f"  {'format':<30} {'records/s':>12} {'size/raw':>9}")
    for name, rate, ratio in measure(args.batch, args.repeats, args.size):
        print(f"  {name:<30} {rate:>12,.0f} {ratio:>9.3f}")
    if args.drain:
        where = "a moto_server process" if args.moto_process else "a moto thread in this process"
        print(f"\ndrain {args.drain} records in batches of {args.batch} to {where} (loopback):")
        for name, seconds in asyncio.run(drain(args.drain, args.batch, args.moto_process)).items():
            print(f"  {name:<30} {seconds:>8.2f} s  ({args.drain / seconds:,.0f} records/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
