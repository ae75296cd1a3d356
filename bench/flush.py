"""Benchmark 5: serialization and flush throughput per sink, and how much of a flush is moto's.

Built on the sinks engineer's ``bench/serialize.py`` (its records, its per-format encoders that
partition and plan requests the way each sink does, its three-sink drain): this module adds
rounds with a spread, and an end-to-end comparison per sink. Each built-in sink writes batches of
1,000 records to the moto server through ``write_batch``; next to it, the same pre-encoded payload
goes straight to moto through the sink's own aioboto3 client (one PutObject, one PutLogEvents),
so the raw call is moto's floor and the rest is what the sink itself costs.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from bench._harness import Moto, Result, Sample
from bench.serialize import drain, encoders, make_records

NAME = "flush"
BUCKET = "bench-serialize"
LOG_GROUP = "/aws/capture-ext/bench-serialize"


def _timed(fn: Callable[[], Any], reps: int) -> list[float]:
    gc.collect()
    out = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


async def _end_to_end(moto: Moto, batch: list[dict[str, Any]], reps: int) -> dict[str, tuple[Sample, Sample]]:
    from capture_ext.models import Batch, SinkContext
    from capture_ext.sinks._parquet import encode_parquet
    from capture_ext.sinks._serialize import encode_jsonl_gz
    from capture_ext.sinks.cloudwatch import CloudWatchSink, to_events

    logging.getLogger("capture_ext").setLevel(logging.WARNING)
    from capture_ext.sinks.s3_jsonl import S3JsonlSink
    from capture_ext.sinks.s3_parquet import S3ParquetSink

    env = {**moto.env(), "CAPTURE_S3_BUCKET": BUCKET, "CAPTURE_LOG_GROUP": LOG_GROUP}
    out: dict[str, tuple[Sample, Sample]] = {}
    bodies = {"s3_jsonl": encode_jsonl_gz(batch), "s3_parquet": encode_parquet(batch)}
    for name, cls in (("s3_jsonl", S3JsonlSink), ("s3_parquet", S3ParquetSink), ("cloudwatch", CloudWatchSink)):
        ctx = SinkContext(name, env, "bench-fn", logger=logging.getLogger(name))
        sink = cls(ctx)
        await sink.start()
        through_sink, raw = Sample(), Sample()
        for round_no in range(reps + 1):  # round 0 warms the client up and creates the stream
            seq = round_no + 1
            b = Batch(f"bench-{seq:08d}", "bench", seq, tuple(batch), 1)
            started = time.perf_counter()
            result = await sink.write_batch(b)
            sink_s = time.perf_counter() - started
            if result.outcome.name != "OK":
                raise RuntimeError(f"{name}: {result}")
            client = await sink.client.get()
            started = time.perf_counter()
            if name == "cloudwatch":
                events, _, _ = to_events(batch, int(time.time() * 1000))
                stream = sorted(getattr(sink, "_streams", ()))[0]
                wire = [{"timestamp": e.timestamp, "message": e.message} for e in events]
                await client.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=wire)
            else:
                await client.put_object(Bucket=BUCKET, Key=f"raw/{name}/{seq}", Body=bodies[name])
            raw_s = time.perf_counter() - started
            if round_no:
                through_sink.add_round([sink_s])
                raw.add_round([raw_s])
        await sink.close(5)
        out[name] = (through_sink, raw)
    return out


def run(quick: bool) -> Result:
    result = Result(NAME, "5. Serialization and flush throughput per sink")
    n, rounds, reps = (100, 2, 2) if quick else (1000, 5, 5)
    batch = make_records(n)
    encode: dict[str, Sample] = {}
    formats = encoders()
    for fn in formats.values():
        fn(batch[:10])  # warm-up: pyarrow's import and first-use setup are not per-batch costs
    for _ in range(rounds):
        for label, fn in formats.items():
            encode.setdefault(label, Sample()).add_round(_timed(functools.partial(fn, batch), reps))
    rows = []
    for label, sample in encode.items():
        per_batch = sample.p(50)
        lo, hi = sample.spread(50)
        rows.append([label, f"{n / per_batch:,.0f}", f"{n / hi:,.0f} – {n / lo:,.0f}", f"{per_batch * 1000:.1f} ms"])
    result.table(
        f"Encoding batches of {n:,} enriched 1 KB records (median of {rounds}×{reps}; range over rounds)",
        ["encoder", "records/s", "range", "per batch"],
        rows,
    )
    moto = Moto()
    try:
        helper = moto.helper()
        helper.create_bucket(BUCKET)
        helper.create_log_group(LOG_GROUP)
        e2e = asyncio.run(_end_to_end(moto, batch, rounds * (1 if quick else 2)))
    finally:
        moto.stop()
    total = n * (2 if quick else 10)
    together = asyncio.run(drain(total, n, separate_process=True))
    rows = []
    for name, (sink, raw) in e2e.items():
        s, r = sink.p(50), raw.p(50)
        share = min(r / s, 1.0)  # the raw call can come out slower than the sink on a noisy machine
        rows.append(
            [
                name,
                f"{n / s:,.0f}",
                f"{s * 1000:.1f} ms",
                f"{r * 1000:.1f} ms",
                f"{share:.0%}",
                "moto" if share >= 0.5 else "the sink (encoding + requests)",
            ]
        )
        result.goal(f"end to end to moto, {name}", f"{n / s:,.0f} records/s ({share:.0%} of it in moto)")
    result.table(
        f"write_batch of {n:,} records to the moto server, median (the first batch, which opens the client, excluded)",
        ["sink", "records/s", "per batch", "raw call, same payload", "moto's share", "bottleneck"],
        rows,
    )
    result.table(
        f"bench/serialize.py's drain: {total:,} records in batches of {n:,} to the three sinks at once "
        "(cold clients included)",
        ["sink", "seconds", "records/s"],
        [[k, f"{v:.2f}", f"{total / v:,.0f}"] for k, v in together.items()],
    )
    jsonl = encode["s3_jsonl (gzip-3)"].p(50)
    parquet = encode["s3_parquet (zstd-3)"].p(50)
    result.goal("encode JSONL + gzip", f"{n / jsonl:,.0f} records/s")
    result.goal("encode Parquet", f"{n / parquet:,.0f} records/s")
    result.series["serialize"] = {
        "encode": {k: n / v.p(50) for k, v in encode.items()},
        "e2e": {k: n / v[0].p(50) for k, v in e2e.items()},
    }
    return result


def main(argv: list[str] | None = None) -> int:
    from bench._harness import cli

    return cli(NAME, "Serialization and flush throughput per sink, with moto's share.", run, argv)


if __name__ == "__main__":
    sys.exit(main())
