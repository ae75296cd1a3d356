"""What the write-ahead spool costs per record, per fsync policy, and how long an outage it holds.

Measures the extension's own ingest path in-process (``Ingest.accept``: redaction hook off,
enrichment, one serialisation, the spool ``write`` and the buffer), for one record per call (an
HTTP request with one record) and for 50 records per call (one Unix-socket read), with the spool
off and with each ``CAPTURE_SPOOL_FSYNC`` policy; plus the seal + fsync cost of a 1,000-record
flush. Prints a Markdown table; ``--json`` prints the raw numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from typing import Any

MIB = 1024 * 1024


def record(n: int, payload: int) -> dict[str, Any]:
    return {
        "inference_id": f"{n:032x}",
        "request_id": "req",
        "model": {"name": "distilbert-qa", "version": "1"},
        "timestamp": "2026-11-22T04:01:07.123Z",
        "latency_ms": 12.5,
        "input": {"question": "What is captured?", "context": "x" * payload},
        "output": {"answer": "records", "score": 0.9},
        "metadata": {},
    }


def build(mode: str, directory: str) -> Any:
    from capture_ext.core.buffer import MemoryBudget, RecordBuffer
    from capture_ext.core.ingest import Ingest
    from capture_ext.core.ledger import Ledger
    from capture_ext.core.records import Enricher
    from capture_ext.core.spool import Spool
    from capture_ext.core.store import Store

    budget = MemoryBudget(1024 * MIB)
    spool = None
    if mode != "off":
        spool = Spool(directory, 4096 * MIB, mode, "bench")
        spool.open()
    store = Store(RecordBuffer("bench", budget, 1000, 5 * MIB), budget, spool)
    return Ingest(store, Ledger(), Enricher("f", "1", "bench"), 8 * MIB), store


def per_record_us(mode: str, per_call: int, calls: int, payload: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        ingest, store = build(mode, directory)
        batches = [[record(i * per_call + j, payload) for j in range(per_call)] for i in range(calls)]
        started = time.perf_counter()
        for batch in batches:
            ingest.accept(batch)
            if len(store.buffer) >= 1000:
                store.seal()  # as a flush would; keeps segments rotating like in production
        elapsed = time.perf_counter() - started
        store.close()
    return elapsed / (calls * per_call) * 1e6


def seal_ms(mode: str, payload: int, rounds: int = 20) -> float:
    samples = []
    with tempfile.TemporaryDirectory() as directory:
        ingest, store = build(mode, directory)
        for r in range(rounds):
            ingest.accept([record(r * 1000 + i, payload) for i in range(1000)])
            started = time.perf_counter()
            store.seal()
            samples.append((time.perf_counter() - started) * 1000)
        store.close()
    return statistics.median(samples)


def line_bytes(payload: int) -> int:
    import orjson

    from capture_ext.core.records import Enricher

    return len(orjson.dumps(Enricher("my-function", "$LATEST", "0123456789abcdef").enrich(record(1, payload)))) + 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payload", type=int, default=1024, help="context bytes per record (default 1 KiB)")
    parser.add_argument("--calls", type=int, default=3000, help="calls per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="median of this many runs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"payload_bytes": args.payload, "line_bytes": line_bytes(args.payload), "modes": {}}
    for mode in ("off", "never", "flush", "always"):
        single = statistics.median(per_record_us(mode, 1, args.calls, args.payload) for _ in range(args.repeat))
        batched = statistics.median(
            per_record_us(mode, 50, max(args.calls // 50, 20), args.payload) for _ in range(args.repeat)
        )
        results["modes"][mode] = {
            "us_per_record_1_per_call": round(single, 2),
            "us_per_record_50_per_call": round(batched, 2),
            "seal_1000_ms": round(seal_ms(mode, args.payload), 2),
        }
    spool_bytes = 128 * MIB - min(64 * 1024, 128 * MIB // 16)
    results["outage_capacity_records"] = spool_bytes // results["line_bytes"]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"record line: {results['line_bytes']} bytes ({args.payload} B context)\n")
    print("| spool | µs/record, 1 per call | µs/record, 50 per call | seal 1,000 records (ms) |")
    print("|---|---|---|---|")
    for mode, row in results["modes"].items():
        label = "off (memory only)" if mode == "off" else f"on, fsync={mode}"
        print(
            f"| {label} | {row['us_per_record_1_per_call']} | {row['us_per_record_50_per_call']} "
            f"| {row['seal_1000_ms']} |"
        )
    capacity = results["outage_capacity_records"]
    print(f"\ndefault spool (128 MiB) holds {capacity:,} such records; outage held at")
    for rate in (1, 10, 100):
        print(f"- {rate} records/s: {capacity / rate / 3600:.1f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
