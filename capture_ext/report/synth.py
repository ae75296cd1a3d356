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
import sys
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


DRIFTS = {
    "question": "questions twice as long",
    "score": "confidence scores 0.2 lower",
    "empty": "unanswered (empty answer) rate from 5 % to 30 %",
    "latency": "latency 50 % higher",
}


def _pool(rng: Any, chars: int) -> str:
    """One long text of random words, sliced for questions and contexts (no per-record joins)."""
    words = rng.choice(len(WORDS), size=chars // 4)
    return " ".join(WORDS[w] for w in words)[:chars]


def _chunk(rng: Any, pool: str, n: int, drift: tuple[str, ...]) -> tuple[list[str], list[str], Any, Any]:
    """(input JSON texts, output JSON texts, scores, latencies) of ``n`` records."""
    import numpy as np

    q_mean = 80.0 if "question" in drift else 40.0
    qlen = np.clip(rng.normal(q_mean, q_mean * 0.2, n), 8, None).astype(np.int64)
    clen = np.clip(rng.normal(300, 40, n), 40, None).astype(np.int64)
    alen = np.clip(rng.normal(12, 4, n), 3, None).astype(np.int64)
    score = np.clip(rng.normal(0.55 if "score" in drift else 0.75, 0.08, n), 0.0, 1.0)
    latency = np.round(np.exp(rng.normal(4.4, 0.2, n)) * (1.5 if "latency" in drift else 1.0), 2)
    empty = rng.random(n) < (0.30 if "empty" in drift else 0.05)
    limit = len(pool) - 1000
    qoff = rng.integers(0, limit, n)
    coff = rng.integers(0, limit, n)
    aoff = (rng.random(n) * (clen - alen)).astype(np.int64)
    inputs, outputs = [], []
    for q0, ql, c0, cl, a0, al, sc, e in zip(
        qoff.tolist(), qlen.tolist(), coff.tolist(), clen.tolist(), aoff.tolist(), alen.tolist(),
        score.tolist(), empty.tolist(), strict=True,
    ):  # fmt: skip
        context = pool[c0 : c0 + cl]
        answer = "" if e else context[a0 : a0 + al]
        inputs.append(f'{{"question": "{pool[q0 : q0 + ql]}?", "context": "{context}"}}')
        outputs.append(f'{{"answer": "{answer}", "score": {sc!r}}}')
    return inputs, outputs, score, latency


def write_sample(
    out: Path,
    records: int,
    *,
    days: float = 3.0,
    drift: tuple[str, ...] = (),
    fmt: str = "parquet",
    seed: int = 1,
    function: str = "qa-fn",
    records_per_file: int = 5000,
    start: datetime = START,
) -> int:
    """Write ``records`` QA records spread evenly over ``days`` from ``start`` into
    ``out/inference-capture/<fmt>/…``; ``drift`` shifts the last day. Returns the files written."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    pool = _pool(rng, min(1_000_000, 20_000 + records * 100))
    step_ms = days * 86_400_000 / max(1, records)
    start_ms = int(start.timestamp() * 1000)
    drift_from = start_ms + int(max(0.0, days - 1) * 86_400_000) if drift else None
    files, i = 0, 0
    while i < records:
        t0 = start_ms + int(i * step_ms)
        hour_end = (t0 // 3_600_000 + 1) * 3_600_000
        n_hour = max(1, math.ceil((hour_end - start_ms) / step_ms) - i)
        n = min(records_per_file, n_hour, records - i)
        idx = np.arange(i, i + n)
        ts = start_ms + (idx * step_ms).astype(np.int64)
        shifted = drift if drift_from is not None and t0 >= drift_from else ()
        inputs, outputs, _, latency = _chunk(rng, pool, n, shifted)
        when = datetime.fromtimestamp(t0 / 1000, UTC)
        folder = out / "inference-capture" / fmt / f"function={function}" / f"dt={when:%Y-%m-%d}" / f"hour={when:%H}"
        folder.mkdir(parents=True, exist_ok=True)
        ids = [f"{seed:04x}{k:028x}" for k in range(i, i + n)]
        files += 1
        name = f"0a1b2c3d-{files:08d}"
        if fmt == "parquet":
            table = pa.table(
                {
                    "inference_id": ids,
                    "request_id": [f"req-{k}" for k in range(i, i + n)],
                    "function_name": pa.array([function] * n),
                    "function_version": pa.array(["$LATEST"] * n),
                    "model_name": pa.array(["distilbert-qa"] * n),
                    "model_version": pa.array(["1"] * n),
                    "captured_at": pa.array(ts, pa.timestamp("ms", tz="UTC")),
                    "latency_ms": pa.array(latency, pa.float64()),
                    "environment_id": pa.array(["0a1b2c3d"] * n),
                    "sequence": pa.array(idx, pa.int64()),
                    "input": inputs,
                    "output": outputs,
                    "metadata": pa.array(['{"client": "synthetic"}'] * n),
                }
            )
            pq.write_table(table, folder / f"{name}.parquet", compression="zstd")
        else:
            stamps = np.datetime_as_string(ts.astype("datetime64[ms]"), unit="ms")
            lines = [
                f'{{"inference_id": "{iid}", "captured_at": "{st}Z", "function_name": "{function}", '
                f'"environment_id": "0a1b2c3d", "sequence": {k}, "latency_ms": {lat!r}, '
                f'"input": {inp}, "output": {outp}}}\n'
                for iid, st, k, lat, inp, outp in zip(
                    ids, stamps.tolist(), idx.tolist(), latency.tolist(), inputs, outputs, strict=True
                )
            ]
            (folder / f"{name}.jsonl.gz").write_bytes(gzip.compress("".join(lines).encode(), compresslevel=1))
        i += n
    return files


def main(argv: list[str] | None = None) -> int:
    """``capture-ext sample-data DIR --records N``: synthetic QA capture data in the sinks' layout."""
    import time

    from capture_ext.argparsing import OneLineParser

    parser = OneLineParser(
        prog="capture-ext sample-data",
        description="Write synthetic extractive-QA capture data in the S3 sinks' layout "
        "(DIR/inference-capture/<format>/function=…/dt=…/hour=…/), for demos and benchmarks.",
        epilog="Drifts (applied to the last day): " + "; ".join(f"{k}: {v}" for k, v in DRIFTS.items()),
    )
    parser.add_argument("out", type=Path, metavar="DIR", help="folder to write into")
    parser.add_argument("--records", type=_positive, default=4500, help="records in all")
    parser.add_argument("--days", type=_positive_float, default=3.0, help="days the records span, from --start")
    parser.add_argument("--drift", action="append", choices=sorted(DRIFTS), default=[], help="repeatable")
    parser.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")
    parser.add_argument("--records-per-file", type=_positive, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", default=START.strftime("%Y-%m-%dT%H:%M"), help="UTC, ISO 8601")
    args = parser.parse_args(argv)
    try:
        start = datetime.fromisoformat(args.start).replace(tzinfo=UTC)
    except ValueError:
        parser.error(f"--start: not an ISO 8601 date-time: {args.start!r}")
    began = time.monotonic()
    try:
        files = write_sample(
            args.out,
            args.records,
            days=args.days,
            drift=tuple(args.drift),
            fmt=args.format,
            seed=args.seed,
            records_per_file=args.records_per_file,
            start=start,
        )
    except OSError as exc:
        print(f"capture-ext sample-data: error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 3
    where = args.out / "inference-capture" / args.format
    print(f"{args.records} records in {files} files under {where} ({time.monotonic() - began:.1f} s)")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(text)
    return value


if __name__ == "__main__":
    raise SystemExit(main())
