"""The embedded engine: the report's statistics as SQL in DuckDB, in bounded memory.

DuckDB reads the pruned file list (Parquet or gzip JSON Lines) and parses ``input``/``output``
itself; one narrow table of per-record feature values is built per window (spilled to a
temporary folder past the memory limit), and only aggregates and bounded samples come back.

S3 is read through an fsspec filesystem registered with DuckDB, wrapping pyarrow's S3 client:
DuckDB's own ``httpfs`` extension would be downloaded at first use, and the wheels on PyPI
(``duckdb-extension-httpfs``) trail the DuckDB release we pin. The wrapper honours
``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` like the rest of the report (moto in the tests).
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
from typing import Any

from capture_ext.report.dialect import DUCKDB, quote
from capture_ext.report.engine import DataSource, SqlEngine
from capture_ext.report.files import Listing, find
from capture_ext.report.source import SourceError, Window
from capture_ext.report.sql import MAX_KEY_SETS, Builder, Field

log = logging.getLogger(__name__)
DEFAULT_MEMORY_LIMIT = "512MB"


def _s3_filesystem(pa_fs: Any) -> Any:
    from fsspec.implementations.arrow import ArrowFSWrapper

    class S3(ArrowFSWrapper):
        protocol = ("s3", "s3a")

    return S3(pa_fs)


class DuckDBEngine(SqlEngine):
    name = "duckdb"
    dialect = DUCKDB

    def __init__(self, data: DataSource, memory_limit: str | None = None, threads: int | None = None) -> None:
        import duckdb

        self.data = data
        self._tmp = tempfile.mkdtemp(prefix="capture-report-")
        self._names = itertools.count()
        self._tables: list[str] = []
        self._listings: dict[Window, Listing] = {}
        self.con = duckdb.connect(":memory:")
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute(f"SET memory_limit = {quote(memory_limit or DEFAULT_MEMORY_LIMIT)}")
        self.con.execute(f"SET temp_directory = {quote(os.path.join(self._tmp, 'spill'))}")
        self.con.execute("SET preserve_insertion_order = false")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self._s3 = False

    def close(self) -> None:
        self.con.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _listing(self, window: Window) -> Listing:
        window = self.scope or window
        if window not in self._listings:
            listing = find(self.data.uri, self.data.fmt, window, self.data.function)
            if listing.filesystem is not None and not self._s3:
                self.con.register_filesystem(_s3_filesystem(listing.filesystem))
                self._s3 = True
            log.info("%d %s file(s) under %s for %s", len(listing.paths), listing.fmt, self.data.uri, window.describe())
            self._listings[window] = listing
        return self._listings[window]

    def source(self, window: Window) -> str:
        listing = self._listing(window)
        empty = (
            "SELECT CAST(NULL AS VARCHAR) AS iid, CAST(NULL AS TIMESTAMP) AS ts, CAST(NULL AS JSON) AS lat, "
            "CAST(NULL AS JSON) AS inp, CAST(NULL AS JSON) AS outp WHERE FALSE"
        )
        if not listing.paths:
            return empty
        files = "[" + ", ".join(quote(p) for p in listing.paths) + "]"
        d, b = self.dialect, Builder(self.dialect)
        if listing.fmt == "parquet":
            return (
                f"SELECT CAST(inference_id AS VARCHAR) AS iid, TRY_CAST(captured_at AS TIMESTAMP) AS ts, "
                f"to_json(latency_ms) AS lat, input AS inp, {d.parse_json('output')} AS outp "
                f"FROM read_parquet({files}, union_by_name = true)"
            )

        def nullz(x: str) -> str:
            return f"CASE WHEN json_type({x}) = 'NULL' THEN NULL ELSE {x} END"

        def sagemaker(part: str) -> str:
            data = f"json_extract_string({part}, '$.data')"
            payload = nullz(f"json_extract({part}, '$.data')")
            return (
                f"CASE WHEN json_type({part}) IS DISTINCT FROM 'OBJECT' THEN NULL "
                f"WHEN upper(json_extract_string({part}, '$.encoding')) = 'JSON' "
                f"AND json_type({part}, '$.data') = 'VARCHAR' AND json_valid({data}) THEN CAST({data} AS JSON) "
                f"ELSE {payload} END"
            )

        # one parse of each line: the top-level members, then work on those small values
        members = "['$.inference_id', '$.captured_at', '$.timestamp', '$.latency_ms', '$.input', '$.output', "
        members += "'$.captureData', '$.eventMetadata']"
        sm = "json_type(m[7]) = 'OBJECT'"
        ts = b.timestamp("m[2]", "m[3]", "json_extract(m[8], '$.inferenceTime')")
        iid = (
            "COALESCE(json_extract_string(m[1], '$'), json_extract_string(m[8], '$.inferenceId'), "
            "json_extract_string(m[8], '$.eventId'))"
        )
        sm_in = sagemaker("json_extract(m[7], '$.endpointInput')")
        sm_out = sagemaker("json_extract(m[7], '$.endpointOutput')")
        return (
            f"SELECT {iid} AS iid, {ts} AS ts, m[4] AS lat, "
            f"CASE WHEN {sm} THEN {sm_in} ELSE {nullz('m[5]')} END AS inp, "
            f"CASE WHEN {sm} THEN {sm_out} ELSE {nullz('m[6]')} END AS outp "
            f"FROM (SELECT json_extract(json, {members}) AS m "
            f"FROM read_ndjson_objects({files}, compression = 'auto_detect')) AS lines"
        )

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import duckdb

        try:
            return self.con.execute(sql).fetchall()
        except duckdb.Error as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SourceError(f"cannot read {self.data.uri}: {message}") from exc

    def overview(self, raw: str) -> tuple[int, Any, Any, int, list[Field] | None]:
        """One pass: counts grouped by the input's and output's key lists, which name the
        top-level fields (their types come from the stats pass; nested objects are expanded)."""
        rows = self.run(Builder(self.dialect).overview(raw, keys=True))
        if len(rows) > MAX_KEY_SETS:  # free-form keys: count plainly, expand every object
            return super().overview(raw)
        n = sum(int(r[0]) for r in rows)
        firsts = [r[1] for r in rows if r[1] is not None]
        lasts = [r[2] for r in rows if r[2] is not None]
        qa = sum(int(r[3] or 0) for r in rows)
        names: dict[tuple[str, str], None] = {}
        for r in rows:
            for side, keys in (("input", r[4]), ("output", r[5])):
                for key in keys or ():
                    names[(side, key)] = None
        fields = [Field(side, (key,), array=array) for side, key in names for array in (False, True)]
        return n, min(firsts, default=None), max(lasts, default=None), qa, fields

    def materialize(self, sql: str) -> str:
        name = f"feats_{next(self._names)}"
        self.run(f"CREATE TEMP TABLE {name} AS {sql}")
        self._tables.append(name)
        return f"SELECT * FROM {name}"
