"""Synthetic capture data in exactly the sinks' S3 layout: ``capture-ext sample-data``.

Two writers. ``make_records``/``capture_objects`` build exact, small data for the tests: object
keys to bytes, written to a folder or uploaded to S3 (independent of the sinks, so the report is
tested against the documented layout, not against whatever the sinks happen to do today).
:func:`write_sample` writes millions of records in minutes for demos and the benchmark,
column-wise with numpy and pyarrow; ``--drift`` shifts the last day.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

WORDS = [
    "the",
    "a",
    "model",
    "lambda",
    "capture",
    "drift",
    "which",
    "where",
    "when",
    "who",
    "what",
    "how",
    "many",
    "river",
    "city",
    "bridge",
    "north",
    "south",
    "train",
    "station",
    "museum",
    "opened",
    "built",
    "century",
    "famous",
    "largest",
    "small",
    "old",
    "new",
    "year",
    "population",
    "capital",
    "language",
    "company",
    "founded",
    "engineer",
    "music",
    "festival",
    "mountain",
    "lake",
]

PARQUET_COLUMNS = [
    "inference_id", "request_id", "function_name", "function_version", "model_name", "model_version",
    "captured_at", "latency_ms", "environment_id", "sequence", "input", "output", "metadata",
]  # fmt: skip
KEY_RE = re.compile(
    r"^(?P<prefix>.+)/(?P<fmt>jsonl|parquet)/function=(?P<fn>[^/]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/"
    r"hour=(?P<hour>\d{2})/(?P<env>[0-9a-f]+)-(?P<seq>\d{8})\.(?:jsonl\.gz|parquet)$"
)


def _spread(rng: random.Random, n: int, dist: NormalDist) -> list[float]:
    """``n`` evenly spaced quantiles of ``dist`` in random order: the distribution's shape
    without sampling noise, so two windows drawn from the same distribution do not differ by
    chance (a p < 0.05 test on noisy samples would flag one in twenty of them)."""
    values = [dist.inv_cdf((i + 0.5) / n) for i in range(n)]
    rng.shuffle(values)
    return values


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def make_records(
    n: int,
    start: datetime,
    *,
    seconds: float = 60.0,
    question_chars: float = 40.0,
    score_mean: float = 0.75,
    empty_rate: float = 0.05,
    seed: int = 1,
    function: str = "qa-fn",
    environment_id: str = "0a1b2c3d",
    output_style: str = "original",
) -> list[dict[str, Any]]:
    """``n`` enriched QA records ``seconds`` apart; knobs set the distributions a test may shift.

    ``output_style`` ``original`` answers ``{"Question","Answer","score"}`` like the original
    function; ``hf`` answers ``{"answer","score","start","end"}`` like the transformers pipeline.
    """
    rng = random.Random(seed)
    question_len = _spread(rng, n, NormalDist(question_chars, question_chars * 0.2))
    context_len = _spread(rng, n, NormalDist(300, 40))
    answer_len = _spread(rng, n, NormalDist(12, 4))
    scores = _spread(rng, n, NormalDist(score_mean, 0.08))
    latency = _spread(rng, n, NormalDist(4.4, 0.2))
    empty = set(rng.sample(range(n), round(n * empty_rate)))
    records = []
    for i in range(n):
        context = _text(rng, int(context_len[i]))[: int(context_len[i])]
        question = _text(rng, int(question_len[i]))[: max(8, int(question_len[i]))] + "?"
        size = max(3, int(answer_len[i]))
        at = rng.randrange(len(context) - size)
        answer = "" if i in empty else context[at : at + size]
        score = min(1.0, max(0.0, scores[i]))
        if output_style == "original":
            output: dict[str, Any] = {"Question": question, "Answer": answer, "score": score}
        else:
            pos = context.find(answer)
            output = {"answer": answer, "score": score, "start": pos, "end": pos + len(answer)}
        ts = start + timedelta(seconds=i * seconds)
        stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
        records.append(
            {
                "inference_id": f"{seed:04x}{i:028x}",
                "request_id": f"req-{seed}-{i}",
                "model": {"name": "distilbert-qa", "version": "1"},
                "timestamp": stamp,
                "latency_ms": round(math.exp(latency[i]), 2),
                "input": {"question": question, "context": context},
                "output": output,
                "metadata": {"client": "synthetic"},
                "function_name": function,
                "function_version": "$LATEST",
                "environment_id": environment_id,
                "captured_at": stamp,
                "sequence": i,
            }
        )
    return records


def _batches(records: list[dict[str, Any]], batch_size: int) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(dt, hour, records) per flush: a batch never straddles an hour partition."""
    out: list[tuple[str, str, list[dict[str, Any]]]] = []
    for rec in records:
        ts = datetime.fromisoformat(rec["captured_at"])
        dt, hour = ts.strftime("%Y-%m-%d"), ts.strftime("%H")
        if out and out[-1][:2] == (dt, hour) and len(out[-1][2]) < batch_size:
            out[-1][2].append(rec)
        else:
            out.append((dt, hour, [rec]))
    return out


def _parquet_bytes(records: list[dict[str, Any]]) -> bytes:
    def ts(text: str) -> datetime:
        return datetime.fromisoformat(text).astimezone(UTC)

    table = pa.table(
        {
            "inference_id": [r["inference_id"] for r in records],
            "request_id": [r["request_id"] for r in records],
            "function_name": [r["function_name"] for r in records],
            "function_version": [r["function_version"] for r in records],
            "model_name": [r["model"]["name"] for r in records],
            "model_version": [r["model"]["version"] for r in records],
            "captured_at": pa.array([ts(r["captured_at"]) for r in records], pa.timestamp("ms", tz="UTC")),
            "latency_ms": pa.array([r["latency_ms"] for r in records], pa.float64()),
            "environment_id": [r["environment_id"] for r in records],
            "sequence": pa.array([r["sequence"] for r in records], pa.int64()),
            "input": [json.dumps(r["input"]) for r in records],
            "output": [json.dumps(r["output"]) for r in records],
            "metadata": [json.dumps(r["metadata"]) for r in records],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def capture_objects(
    records: list[dict[str, Any]], prefix: str = "inference-capture", fmt: str = "jsonl", batch_size: int = 50
) -> dict[str, bytes]:
    """Object key -> body, as ``s3_jsonl``/``s3_parquet`` lay them out."""
    objects: dict[str, bytes] = {}
    for seq, (dt, hour, batch) in enumerate(_batches(records, batch_size), 1):
        first = batch[0]
        base = f"{prefix}/{fmt}/function={first['function_name']}/dt={dt}/hour={hour}"
        name = f"{first['environment_id']}-{seq:08d}"
        if fmt == "jsonl":
            body = b"".join(json.dumps(r).encode() + b"\n" for r in batch)
            objects[f"{base}/{name}.jsonl.gz"] = gzip.compress(body)
        else:
            objects[f"{base}/{name}.parquet"] = _parquet_bytes(batch)
    return objects


def write_tree(root: Path, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


START = datetime(2026, 11, 20, 22, 30, tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    """Write the three-day sample the README's screenshot was made from (day 3 drifts)."""
    import argparse

    parser = argparse.ArgumentParser(description="Write synthetic QA capture data in the S3 layout.")
    parser.add_argument("out", type=Path, help="folder; data goes to OUT/inference-capture/<format>/...")
    parser.add_argument("--records-per-day", type=int, default=1500)
    parser.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    args = parser.parse_args(argv)
    n, day = args.records_per_day, timedelta(days=1)
    # Slightly different volumes per day, so the unchanged descriptors differ a little, as real ones do.
    sizes = (n, n - n // 10, n - n // 5)
    records = (
        make_records(sizes[0], START, seconds=86400 / sizes[0], seed=1)
        + make_records(sizes[1], START + day, seconds=86400 / sizes[1], seed=2)
        + make_records(sizes[2], START + 2 * day, seconds=86400 / sizes[2], seed=3, question_chars=80, score_mean=0.55)
    )
    write_tree(args.out, capture_objects(records, fmt=args.format, batch_size=200))
    print(f"{len(records)} records in {args.out / 'inference-capture' / args.format}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
