"""The Athena engine's API side against moto in server mode: start, poll, page the results, type
the cells, name the failures (issue 21's branch gaps).

moto does not run SQL: it answers GetQueryResults from a queue of results set through its own API
(``/moto-api/static/athena/query-results``), which is what these tests check the engine reads.
What the queries compute is checked against DuckDB in test_report_engines.py.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from datetime import UTC, datetime

import boto3
import pytest

from capture_ext.report.engine import DataSource
from capture_ext.report.engine_athena import AthenaEngine
from capture_ext.report.files import partition_bounds
from capture_ext.report.source import SourceError, Window


def _queue_result(endpoint: str, columns: list[tuple[str, str]], rows: list[list[str | None]]) -> None:
    header = {"Data": [{"VarCharValue": name} for name, _ in columns]}
    data = [{"Data": [{} if cell is None else {"VarCharValue": cell} for cell in row]} for row in rows]
    body = {
        "results": [
            {
                "rows": [header, *data],
                "column_info": [{"Name": name, "Type": kind} for name, kind in columns],
            }
        ]
    }
    request = urllib.request.Request(
        f"{endpoint}/moto-api/static/athena/query-results",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


def test_a_query_runs_through_the_api_and_its_cells_come_back_typed(aws_env, caplog) -> None:
    endpoint = aws_env["AWS_ENDPOINT_URL"]
    _queue_result(
        endpoint,
        [("n", "bigint"), ("x", "double"), ("ok", "boolean"), ("v", "array(double)"), ("s", "varchar")],
        [["3", "0.5", "true", "[1.0, null, 2.5]", "a"], [None, "2", "false", "[]", None]],
    )
    engine = AthenaEngine(DataSource("glue", "parquet"), database="capdb", output="s3://results/athena/")
    sql = 'SELECT 1 FROM "capdb"."inference_capture_parquet"'
    rows = engine.query(sql)
    assert rows == [(3, 0.5, True, [1.0, 2.5], "a"), (None, 2.0, False, [], None)]
    assert engine.queries == 1 and engine.bytes_scanned == 0
    athena = boto3.client("athena", endpoint_url=endpoint, region_name=aws_env["AWS_REGION"])
    [qid] = athena.list_query_executions(WorkGroup="primary")["QueryExecutionIds"]
    execution = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]
    assert execution["Query"] == sql and execution["QueryExecutionContext"] == {"Database": "capdb"}
    assert execution["ResultConfiguration"]["OutputLocation"].startswith("s3://results/athena/")
    with caplog.at_level(logging.INFO, "capture_ext.report.engine_athena"):
        engine.close()
    assert "athena: 1 queries scanned 0.0 MB" in caplog.text


def test_a_refused_query_is_a_source_error_naming_the_workgroup_and_database(aws_env) -> None:
    engine = AthenaEngine(DataSource("glue", "jsonl"), workgroup="no-such-group", database="capdb")
    with pytest.raises(SourceError, match=r"Athena \(no-such-group, capdb\): .*WorkGroup does not exist"):
        engine.query("SELECT 1")
    assert engine.queries == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"database": None}, "--engine athena needs --database"),
        ({"database": "capdb", "fmt": "csv"}, "reads the Glue tables of parquet and jsonl, not csv"),
    ],
)
def test_an_engine_that_cannot_work_is_refused_when_built(kwargs: dict, message: str) -> None:
    data = DataSource("glue", kwargs.pop("fmt", "auto"))
    with pytest.raises(SourceError, match=message):
        AthenaEngine(data, client=object(), **kwargs)


def test_the_json_table_source_filters_the_function_and_refuses_unusable_names() -> None:
    engine = AthenaEngine(DataSource("glue", "jsonl", function="qa-fn"), database="capdb", client=object())
    window = Window(datetime(2026, 1, 1, 5, tzinfo=UTC), None)  # open-ended: a lower bound only
    source = engine.source(window)
    lo, hi = partition_bounds(window)
    assert lo is not None and hi is None and "dt <" not in source
    lo_dt, lo_hour = lo
    assert "function = 'qa-fn'" in source and f"dt = '{lo_dt}' AND hour >= '{lo_hour}'" in source
    assert '"capdb"."inference_capture_jsonl"' in source and "COALESCE(" in source
    unbounded = engine.source(Window(None, None))
    assert " WHERE function = 'qa-fn'" in unbounded and "dt" not in unbounded.split("WHERE", 1)[1]
    engine.database = 'bad"name'
    with pytest.raises(SourceError, match="not a usable Athena name"):
        engine.source(window)
