"""Every engine gives the same verdicts on the same data, and the Athena SQL is checked offline.

The Athena engine cannot reach Athena here. Its twin runs the engine's own code with every
generated query first parsed as Trino by sqlglot (the engine does that before sending), then
transpiled to DuckDB by sqlglot and run on a DuckDB table holding the same rows as the Glue
table. Two spellings are adapted for the twin: ``is_finite`` (DuckDB: ``isfinite``) and the
object expansion of field discovery (Trino's multi-array UNNEST), which runs as the DuckDB
dialect's ``json_each`` form of the same query.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot

from capture_ext.report.dialect import DUCKDB, TRINO, validate
from capture_ext.report.drift import DRIFT, Thresholds, compare
from capture_ext.report.engine import DataSource, Engine, open_engine
from capture_ext.report.engine_athena import AthenaEngine
from capture_ext.report.source import Window
from capture_ext.report.sql import Builder
from capture_ext.report.synth import START, capture_objects, make_records, write_tree

DAY = timedelta(days=1)
BASE, CUR = Window(START, START + DAY), Window(START + DAY, START + 2 * DAY)


class AthenaTwin(AthenaEngine):
    """The Athena engine with DuckDB standing in for Athena (see the module docstring)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, fmt: str) -> None:
        super().__init__(DataSource("glue", fmt), database="capdb", client=object())
        self.con = con
        self.seen: list[str] = []

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        self.seen.append(sql)
        duck = sqlglot.transpile(sql, read="trino", write="duckdb")[0].replace("IS_FINITE(", "ISFINITE(")
        return self.con.execute(duck).fetchall()

    def run_fields(self, raw: str) -> list[tuple[Any, ...]]:
        validate(Builder(TRINO).fields(raw), TRINO)
        duck_raw = sqlglot.transpile(raw, read="trino", write="duckdb")[0]
        return self.con.execute(Builder(DUCKDB).fields(duck_raw)).fetchall()


def glue_table(root: Path, fmt: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB stand-in for the Glue table: the template's columns and partition columns."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE SCHEMA capdb")
    pattern = str(root / "inference-capture" / fmt / "**" / ("*.parquet" if fmt == "parquet" else "*.jsonl.gz"))
    if fmt == "parquet":
        con.execute(
            "CREATE TABLE capdb.inference_capture_parquet AS SELECT * EXCLUDE (dt, hour), "
            f"dt, hour FROM read_parquet('{pattern}', hive_partitioning = true)"
        )
    else:
        con.execute(
            'CREATE TABLE capdb.inference_capture_jsonl AS SELECT inference_id, captured_at, "timestamp", '
            "latency_ms, CAST(input AS VARCHAR) AS input, CAST(output AS VARCHAR) AS output, function, dt, hour "
            f"FROM read_json('{pattern}', hive_partitioning = true, columns = {{inference_id: 'VARCHAR', "
            "captured_at: 'VARCHAR', \"timestamp\": 'VARCHAR', latency_ms: 'DOUBLE', input: 'JSON', output: 'JSON'})"
        )
    return con


def verdicts(engine: Engine, small_sample: int) -> dict[str, bool]:
    baseline = engine.profile(BASE, "baseline")
    current = engine.profile(CUR, "current", kinds=baseline.kinds, qa=baseline.qa)
    checks = compare(baseline, current, Thresholds(small_sample=small_sample))
    return {c.feature: c.violated for c in checks if c.check_type == DRIFT and not c.skipped}


@pytest.mark.parametrize(
    ("fmt", "small_sample"),
    [("parquet", 1000), ("parquet", 100), ("jsonl", 1000)],  # hypothesis tests, then distances
)
def test_every_engine_gives_the_same_verdicts(tmp_path: Path, fmt: str, small_sample: int) -> None:
    records = make_records(400, START, seconds=216, seed=1) + make_records(
        400, START + DAY, seconds=216, seed=2, question_chars=80, score_mean=0.6, output_style="hf"
    )
    write_tree(tmp_path, capture_objects(records, fmt=fmt, batch_size=60))
    data = DataSource(str(tmp_path / "inference-capture"), fmt)
    results = {}
    for name in ("python", "duckdb"):
        engine = open_engine(name, data)
        try:
            results[name] = verdicts(engine, small_sample)
        finally:
            engine.close()
    twin = AthenaTwin(glue_table(tmp_path, fmt), fmt)
    results["athena"] = verdicts(twin, small_sample)
    assert results["python"]["question_length"] and results["python"]["score"]
    assert not results["python"]["context_length"]
    assert results["duckdb"] == results["python"] == results["athena"]
    assert len(twin.seen) > 10  # every query went through the Trino parser and the twin


def test_each_generated_trino_query_parses_and_prunes_partitions(tmp_path: Path) -> None:
    twin = AthenaTwin(glue_table_empty(), "parquet")
    source = twin.source(Window(START, START + DAY))
    assert "dt > '2026-11-20'" in source and "hour >= '21'" in source and "hour <= '23'" in source
    validate(f"SELECT * FROM ({source}) AS s", TRINO)
    with pytest.raises(sqlglot.errors.ParseError):
        validate("SELECT FROM WHERE", TRINO)


def glue_table_empty() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()


def test_duplicates_count_once_in_every_engine(tmp_path: Path) -> None:
    """At-least-once delivery and replays copy records: each inference_id is one record."""
    records = make_records(200, START, seconds=300)
    objects = capture_objects(records, fmt="jsonl", batch_size=40)
    copies = {}
    for key, body in objects.items():
        for n in range(5):
            copies[key.replace(".jsonl.gz", f"-copy{n}.jsonl.gz")] = body
    write_tree(tmp_path, objects | copies)
    for name in ("python", "duckdb"):
        engine = open_engine(name, DataSource(str(tmp_path / "inference-capture")))
        try:
            profile = engine.profile(Window(), "baseline")
        finally:
            engine.close()
        assert profile.n_rows == 200, name
        assert profile.features["question_length"].n_values == 200, name


def test_a_directory_symlink_loop_is_entered_once(tmp_path: Path) -> None:
    records = make_records(120, START, seconds=300)
    write_tree(tmp_path, capture_objects(records, fmt="parquet", batch_size=40))
    hour = next((tmp_path / "inference-capture" / "parquet").rglob("hour=*"))
    (hour / "loop").symlink_to(hour.parent.parent, target_is_directory=True)
    (hour / "loop2").symlink_to(tmp_path / "inference-capture", target_is_directory=True)
    for name in ("python", "duckdb"):
        engine = open_engine(name, DataSource(str(tmp_path / "inference-capture")))
        try:
            assert engine.profile(Window(), "baseline").n_rows == 120, name
        finally:
            engine.close()


def test_the_file_sinks_output_is_read(tmp_path: Path) -> None:
    """The ``file`` sink writes ``<dir>/<batch_id>.jsonl``: a flat folder, no partitions."""
    records = make_records(90, START, seconds=300)
    objects = capture_objects(records, fmt="jsonl", batch_size=30)
    import gzip

    for n, body in enumerate(objects.values()):
        (tmp_path / f"batch-{n}.jsonl").write_bytes(gzip.decompress(body))
    for name in ("python", "duckdb"):
        engine = open_engine(name, DataSource(str(tmp_path)))
        try:
            assert engine.profile(Window(), "baseline").n_rows == 90, name
        finally:
            engine.close()
    shutil.rmtree(tmp_path)
