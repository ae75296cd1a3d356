"""Captured records read back exactly by readers nobody here wrote (issue #15).

The awkward corpus of ``tests/corpus.py`` goes through ``python -m capture_ext`` (its own process,
HTTP ingest, the fake Lambda API) into moto through ``s3_jsonl`` and ``s3_parquet``. The bucket is
then downloaded once, and every reader must give back every field equal to what was sent (strict:
``-0.0``, int vs float, key order), apart from the normalisations docs/sinks.md documents:

- Parquet through pyarrow datasets and DuckDB ``read_parquet``;
- JSON Lines through DuckDB ``read_json`` with explicit columns, pyarrow's JSON reader (envelope
  only, as documented) and a plain ``json.loads`` of each line;
- the Glue tables of template.yaml, emulated (``tests/glue_emulation.py``);
- every query of docs/sinks.md, run against the same files.

Integers beyond 64 bits come back as the text of their exact digits (docs/guarantees.md, 11), never
as a rounded float.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.json as pj
import pytest

from capture_ext.testing.aws import AwsHelper, MotoServer
from tests.corpus import SEED, awkward_records, depends_on_item4, expected, same
from tests.glue_emulation import (
    MalformedLine,
    columns_of,
    create_parquet_view,
    glue_tables,
    install_athena_macros,
    load_jsonl_table,
    openx_rows,
)
from tests.integration.test_aws_sinks_process import BUCKET, FUNCTION, ExtensionProcess

ROOT = Path(__file__).resolve().parents[2]
SINKS_DOC = ROOT / "docs" / "sinks.md"
PAYLOADS = ("input", "output", "metadata")


class Captured:
    """What the extension wrote for the corpus, downloaded: the local copy of the bucket."""

    def __init__(self, root: Path, sent: list[dict[str, Any]]) -> None:
        self.root = root
        self.sent = {r["inference_id"]: r for r in sent}
        self.expected = {i: expected(r) for i, r in self.sent.items()}
        self.prefix = root / "inference-capture"
        self.jsonl_files = sorted((self.prefix / "jsonl").rglob("*.jsonl.gz"))
        self.parquet_files = sorted((self.prefix / "parquet").rglob("*.parquet"))

    def partition_of(self, path: Path) -> dict[str, str]:
        return dict(part.split("=", 1) for part in path.parts if "=" in part)

    def lines(self, path: Path) -> list[bytes]:
        return gzip.decompress(path.read_bytes()).splitlines()

    def exact(self) -> set[str]:
        """Ids of records compared field by field (all of them: big integers as their digits)."""
        return set(self.sent)

    def big_ints(self) -> set[str]:
        return {i for i, r in self.sent.items() if depends_on_item4(r)}


async def _run_extension(tmp: Path, env: dict[str, str], records: list[dict[str, Any]]) -> None:
    proc = ExtensionProcess(tmp, env)
    proc.env["CAPTURE_SINKS"] = "s3_jsonl,s3_parquet"
    try:
        await proc.start()
        request_id = await proc.api.invoke()
        url = f"http://127.0.0.1:{proc.port}/v1/records"
        async with aiohttp.ClientSession() as http:
            chunk: list[bytes] = []
            for record in [*records, None]:
                line = None if record is None else json.dumps(record, ensure_ascii=False).encode()
                if chunk and (line is None or sum(map(len, chunk)) + len(line) > 2_000_000):
                    body = b"\n".join(chunk)
                    headers = {"Content-Type": "application/x-ndjson"}
                    async with http.post(url, data=body, headers=headers) as response:
                        assert response.status == 202, await response.text()
                    chunk = []
                if line is not None:
                    chunk.append(line)
        await proc.api.runtime_done(request_id)
        await proc.api.wait_idle(timeout=60)
        await proc.api.shutdown(budget_ms=5000)
        assert proc.process is not None
        code = await asyncio.wait_for(proc.process.wait(), 30)
        assert code == 0, proc.log()
        assert "Traceback" not in proc.log(), proc.log()
    finally:
        await proc.stop()


@pytest.fixture(scope="module")
def captured(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Captured:
    moto_server.reset()
    aws = AwsHelper(moto_server.endpoint)
    aws.create_bucket(BUCKET)
    records = awkward_records(SEED)
    tmp = tmp_path_factory.mktemp("fidelity")
    asyncio.run(_run_extension(tmp, moto_server.env(), records))
    root = tmp / "bucket"
    aws.download(BUCKET, "inference-capture/", str(root))
    return Captured(root, records)


# -- comparing -----------------------------------------------------------------------------------
def _iso_ms(value: Any) -> Any:
    if isinstance(value, dt.datetime):  # a naive value (Athena's timestamp) is UTC
        value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _decoded(text: Any) -> Any:
    return None if text is None else json.loads(text)


def differences(captured: Captured, rows: dict[str, dict[str, Any]], ignore_order: bool = False) -> dict[str, str]:
    """inference_id -> first difference between what a reader returned and what was sent."""
    out: dict[str, str] = {}
    assert set(rows) == set(captured.sent), "a reader lost or invented records"
    for inference_id, row in rows.items():
        want = captured.expected[inference_id]
        for field, value in want.items():
            got = row[field]
            if ignore_order:
                got, value = _sorted_keys(got), _sorted_keys(value)
            diff = same(value, got, f"{field}")
            if diff:
                out[inference_id] = diff
                break
    return out


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def assert_exact(captured: Captured, rows: dict[str, dict[str, Any]], ignore_order: bool = False) -> None:
    diffs = differences(captured, rows, ignore_order)
    wrong = {i: d for i, d in diffs.items() if i in captured.exact()}
    assert not wrong, f"{len(wrong)} records differ, e.g. {sorted(wrong.items())[:3]}"


def assert_item4_exact(captured: Captured, rows: dict[str, dict[str, Any]]) -> None:
    diffs = differences(captured, rows)
    item4 = sorted(captured.big_ints())
    assert item4, "the corpus lost its integers beyond uint64"
    assert not {i: diffs[i] for i in item4 if i in diffs}


def parquet_rows(table: pa.Table) -> dict[str, dict[str, Any]]:
    rows = {}
    for row in table.to_pylist():
        model = None
        if row["model_name"] is not None or row["model_version"] is not None:
            model = {"name": row["model_name"], "version": row["model_version"]}
        rows[row["inference_id"]] = {
            **row,
            "model": model,
            "timestamp": _iso_ms(row["timestamp"]),
            **{k: _decoded(row[k]) for k in PAYLOADS},
        }
    return rows


def pyarrow_parquet(captured: Captured) -> pa.Table:
    text = ds.partitioning(pa.schema([(c, pa.string()) for c in ("function", "dt", "hour")]), flavor="hive")
    return ds.dataset(captured.prefix / "parquet", format="parquet", partitioning=text).to_table()


def duckdb_parquet(captured: Captured) -> pa.Table:
    pattern = str(captured.prefix / "parquet" / "**" / "*.parquet")
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(
            f"SELECT * FROM read_parquet({_quote(pattern)}, hive_partitioning = true, hive_types_autocast = false)"
        ).to_arrow_table()


DUCKDB_JSONL_COLUMNS = (
    "{inference_id: 'VARCHAR', request_id: 'VARCHAR', model: 'JSON', \"timestamp\": 'VARCHAR', "
    "latency_ms: 'DOUBLE', input: 'JSON', output: 'JSON', metadata: 'JSON', function_name: 'VARCHAR', "
    "function_version: 'VARCHAR', environment_id: 'VARCHAR', captured_at: 'VARCHAR', sequence: 'BIGINT'}"
)


def duckdb_jsonl(captured: Captured) -> dict[str, dict[str, Any]]:
    pattern = str(captured.prefix / "jsonl" / "**" / "*.jsonl.gz")
    with duckdb.connect() as con:
        cursor = con.execute(
            "SELECT * FROM read_json(?, format = 'newline_delimited', hive_partitioning = true, "
            f"hive_types_autocast = false, columns = {DUCKDB_JSONL_COLUMNS})",
            [pattern],
        )
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    return {r["inference_id"]: {**r, **{k: _decoded(r[k]) for k in (*PAYLOADS, "model")}} for r in rows}


# -- every reader, field by field --------------------------------------------------------------
def test_every_record_arrives_once_in_each_format(captured: Captured) -> None:
    jsonl_ids = [json.loads(line)["inference_id"] for f in captured.jsonl_files for line in captured.lines(f)]
    assert sorted(jsonl_ids) == sorted(captured.sent)
    parquet_ids = pyarrow_parquet(captured).column("inference_id").to_pylist()
    assert sorted(parquet_ids) == sorted(captured.sent)
    # One footer schema across all files.
    import pyarrow.parquet as pq

    schemas = {pq.read_schema(f).to_string() for f in captured.parquet_files}
    assert len(schemas) == 1


def test_jsonl_lines_decode_to_what_was_sent(captured: Captured) -> None:
    rows = {}
    for path in captured.jsonl_files:
        for line in captured.lines(path):
            record = json.loads(line)
            rows[record["inference_id"]] = record
            assert record["function_name"] == FUNCTION and isinstance(record["sequence"], int)
    assert_exact(captured, rows)


def test_parquet_through_pyarrow_dataset(captured: Captured) -> None:
    table = pyarrow_parquet(captured)
    assert table.schema.field("hour").type == pa.string() and table.schema.field("dt").type == pa.string()
    assert_exact(captured, parquet_rows(table))


def test_parquet_through_duckdb(captured: Captured) -> None:
    assert_exact(captured, parquet_rows(duckdb_parquet(captured)))


def test_jsonl_through_duckdb_read_json_with_json_columns(captured: Captured) -> None:
    assert_exact(captured, duckdb_jsonl(captured))


def test_auto_detecting_json_readers_fail_as_documented(captured: Captured) -> None:
    """The reason docs/sinks.md shows explicit columns: inference from the data breaks on this corpus."""
    pattern = str(captured.prefix / "jsonl" / "**" / "*.jsonl.gz")
    with duckdb.connect() as con, pytest.raises(duckdb.Error):
        con.execute("SELECT * FROM read_json_auto(?)", [pattern]).fetchall()
    with pytest.raises(pa.ArrowInvalid, match="changed from"):
        for path in captured.jsonl_files:
            pj.read_json(path)


def test_jsonl_envelope_through_pyarrow_json_reader(captured: Captured) -> None:
    envelope = pa.schema(
        [
            ("inference_id", pa.string()),
            ("timestamp", pa.string()),
            ("latency_ms", pa.float64()),
            ("sequence", pa.int64()),
        ]
    )
    options = pj.ParseOptions(explicit_schema=envelope, unexpected_field_behavior="ignore")
    rows = {}
    for path in captured.jsonl_files:
        for row in pj.read_json(path, parse_options=options).to_pylist():
            rows[row["inference_id"]] = row
    assert set(rows) == set(captured.sent)
    for inference_id, row in rows.items():
        want = captured.expected[inference_id]
        assert row["timestamp"] == want["timestamp"]
        assert same(want["latency_ms"], row["latency_ms"]) is None


def test_integers_beyond_uint64_come_back_exact_from_parquet(captured: Captured) -> None:
    assert_item4_exact(captured, parquet_rows(pyarrow_parquet(captured)))


def test_integers_beyond_uint64_come_back_exact_from_jsonl(captured: Captured) -> None:
    assert_item4_exact(captured, duckdb_jsonl(captured))


# -- the Glue tables, emulated ------------------------------------------------------------------
def test_glue_parquet_table_reads_every_field(captured: Captured) -> None:
    table = glue_tables()["ParquetTable"]
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        create_parquet_view(con, "t", table, str(captured.prefix / "parquet" / "**" / "*.parquet"))
        arrow = con.sql("SELECT * FROM t").to_arrow_table()
    assert arrow.schema.names == [n for n, _ in columns_of(table)] + [k["Name"] for k in table["PartitionKeys"]]
    assert arrow.schema.field("timestamp").type == pa.timestamp("us")  # Athena's zone-less timestamp
    assert_exact(captured, parquet_rows(arrow))


def test_glue_jsonl_table_reads_every_line(captured: Captured) -> None:
    table = glue_tables()["JsonlTable"]
    serde = table["StorageDescriptor"]["SerdeInfo"]["Parameters"]
    assert serde == {"case.insensitive": "false", "ignore.malformed.json": "true"}
    columns = columns_of(table)
    rows = {}
    for path in captured.jsonl_files:
        for row in openx_rows(captured.lines(path), columns, serde):
            assert row["inference_id"] is not None, "a line became a row of NULLs"
            rows[row["inference_id"]] = row
    for inference_id, row in rows.items():
        want = captured.expected[inference_id]
        for field in PAYLOADS:
            value = want[field]
            if isinstance(value, str):  # documented: a JSON string payload comes back bare
                assert row[field] == value
                row[field] = value
            else:
                row[field] = _decoded(row[field])
    assert_exact(captured, rows, ignore_order=True)


def test_the_serde_defaults_would_fail_on_this_corpus(captured: Captured) -> None:
    """Why the table sets both properties: the old settings fail the query, or lose the keys' case."""
    columns = columns_of(glue_tables()["JsonlTable"])
    lines = [line for path in captured.jsonl_files for line in captured.lines(path)]
    with pytest.raises(MalformedLine, match="Duplicate key"):
        openx_rows(lines, columns, {"ignore.malformed.json": "false"})
    rows = openx_rows(lines, columns, {"ignore.malformed.json": "true"})
    assert sum(r["inference_id"] is None for r in rows) > 0
    assert not any('"Question"' in (r["input"] or "") for r in rows)


# -- every documented query of docs/sinks.md -----------------------------------------------------
QUERY_BLOCK = re.compile(r"<!-- query: (?P<name>[\w-]+) -->\n```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)


def documented_queries() -> dict[str, str]:
    text = SINKS_DOC.read_text()
    blocks = {m.group("name"): m.group("body") for m in QUERY_BLOCK.finditer(text)}
    fenced = len(re.findall(r"^```(?:sql|python)$", text, re.M))
    assert fenced == len(blocks), "every sql/python block in docs/sinks.md needs a <!-- query: name --> tag"
    return blocks


def _busiest_partition(captured: Captured) -> tuple[str, str]:
    counts = Counter((p["dt"], p["hour"]) for p in map(captured.partition_of, captured.parquet_files))
    return counts.most_common(1)[0][0]


def _expected_answer(captured: Captured, dt_value: str, hour: str) -> tuple[int, int, int]:
    table = pyarrow_parquet(captured)
    ids = [
        i for i, d, h in zip(*(table.column(c).to_pylist() for c in ("inference_id", "dt", "hour")), strict=True)
        if (d, h) == (dt_value, hour)
    ]  # fmt: skip
    wants = [captured.expected[i] for i in ids]
    upper = sum(isinstance(w["input"], dict) and w["input"].get("Question") == "Upper?" for w in wants)
    return len(wants), upper, sum(w["output"] is not None for w in wants)


def _localise(sql: str, captured: Captured, dt_value: str, hour: str) -> str:
    sql = sql.replace("s3://my-bucket/inference-capture/", f"{captured.prefix}/")
    return sql.replace("'2026-11-22'", f"'{dt_value}'").replace("hour = '04'", f"hour = '{hour}'")


def test_every_documented_query_is_run_here() -> None:
    assert set(documented_queries()) == set(RUNNERS)


@pytest.mark.parametrize("name", ["duckdb-parquet", "duckdb-jsonl"])
def test_documented_duckdb_query(captured: Captured, name: str) -> None:
    dt_value, hour = _busiest_partition(captured)
    sql = _localise(documented_queries()[name], captured, dt_value, hour)
    with duckdb.connect() as con:
        got = con.execute(sql).fetchall()
    assert got == [_expected_answer(captured, dt_value, hour)]
    assert got[0][1] > 0  # the case-sensitive key is found


@pytest.mark.parametrize("name", ["pyarrow-parquet", "pyarrow-jsonl"])
def test_documented_pyarrow_read(captured: Captured, name: str) -> None:
    dt_value, hour = _busiest_partition(captured)
    code = (
        _localise(documented_queries()[name], captured, dt_value, hour)
        .replace('"2026-11-22"', f'"{dt_value}"')
        .replace('== "04"', f'== "{hour}"')
    )
    one_object = captured.jsonl_files[0]
    code = code.replace('"env0a1b2c3d-00000042.jsonl.gz"', repr(str(one_object)))
    scope: dict[str, Any] = {}
    exec(compile(code, f"docs/sinks.md:{name}", "exec"), scope)
    table = scope["table"]
    if name == "pyarrow-parquet":
        assert table.num_rows == _expected_answer(captured, dt_value, hour)[0]
        assert set(table.column("hour").to_pylist()) == {hour}
    else:
        lines = [json.loads(line) for line in captured.lines(one_object)]
        assert table.column("inference_id").to_pylist() == [line["inference_id"] for line in lines]
        assert table.column("sequence").to_pylist() == [line["sequence"] for line in lines]


def _athena_statements(name: str) -> tuple[str, str]:
    create, select = [s.strip() for s in documented_queries()[name].split(";") if s.strip()]
    return create, select


def _ddl_columns(create: str) -> list[tuple[str, str]]:
    body = create[create.index("(") + 1 : create.index("\n)")]
    return [(m.group(1), m.group(2).replace(" ", "")) for m in re.finditer(r"^\s+`?(\w+)`?\s+(.+?),?$", body, re.M)]


def _ddl_properties(create: str, clause: str) -> dict[str, str]:
    match = re.search(clause + r"\s*\((.*?)\)\s*(?:\n\S|$)", create, re.S)
    assert match, clause
    return dict(re.findall(r"'([^']+)'\s*=\s*'([^']*)'", match.group(1)))


@pytest.mark.parametrize(("name", "resource"), [("athena-jsonl", "JsonlTable"), ("athena-parquet", "ParquetTable")])
def test_documented_athena_table_is_the_template_table(name: str, resource: str) -> None:
    create, _ = _athena_statements(name)
    table = glue_tables()[resource]
    assert _ddl_columns(create) == [(n, t.replace(" ", "")) for n, t in columns_of(table)]
    partitioned = re.search(r"PARTITIONED BY \((.*?)\)\n", create)
    assert partitioned and re.findall(r"`?(\w+)`? string", partitioned.group(1)) == [
        k["Name"] for k in table["PartitionKeys"]
    ]
    if resource == "JsonlTable":
        assert _ddl_properties(create, "SERDEPROPERTIES") == table["StorageDescriptor"]["SerdeInfo"]["Parameters"]
    documented = _ddl_properties(create, "TBLPROPERTIES")
    for key, value in table["Parameters"].items():
        if key.startswith("projection.") and isinstance(value, str):
            assert documented[key].replace("2026-01-01", "2024-01-01") == value, key


@pytest.mark.parametrize(("name", "resource"), [("athena-jsonl", "JsonlTable"), ("athena-parquet", "ParquetTable")])
def test_documented_athena_query_over_the_emulated_table(captured: Captured, name: str, resource: str) -> None:
    dt_value, hour = _busiest_partition(captured)
    create, select = _athena_statements(name)
    table_name = re.search(r"CREATE EXTERNAL TABLE (\w+)", create).group(1)  # type: ignore[union-attr]
    table = glue_tables()[resource]
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        install_athena_macros(con)
        if resource == "JsonlTable":
            files = {str(p.relative_to(captured.root)): captured.lines(p) for p in captured.jsonl_files}
            load_jsonl_table(con, table_name, table, files)
        else:
            create_parquet_view(con, table_name, table, str(captured.prefix / "parquet" / "**" / "*.parquet"))
        got = con.execute(_localise(select, captured, dt_value, hour)).fetchall()
    assert got == [_expected_answer(captured, dt_value, hour)]


RUNNERS = {
    "duckdb-parquet": test_documented_duckdb_query,
    "duckdb-jsonl": test_documented_duckdb_query,
    "pyarrow-parquet": test_documented_pyarrow_read,
    "pyarrow-jsonl": test_documented_pyarrow_read,
    "athena-jsonl": test_documented_athena_query_over_the_emulated_table,
    "athena-parquet": test_documented_athena_query_over_the_emulated_table,
}
