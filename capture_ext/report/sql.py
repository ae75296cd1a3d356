"""The report's statistics as SQL, generated once for two dialects: DuckDB and Trino (Athena).

One builder writes every query; the few constructs the dialects spell differently (JSON access,
JSON value types, expanding an object's keys, quantiles, epoch arithmetic) come from a
:class:`Dialect`. Every generated query is parsed by sqlglot in its own dialect
(:func:`validate`), which is how the Trino text is checked offline; the DuckDB text is also run.

Input to every query is a *source* relation with the columns
``iid`` (inference_id, text), ``ts`` (capture time, TIMESTAMP in UTC), ``lat`` (latency, JSON),
``inp`` and ``outp`` (JSON). Each engine writes the source for its storage; everything
downstream, including de-duplication on ``inference_id``, is shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from capture_ext.report.descriptors import CATEGORICAL, MAX_DEPTH, NUMERIC, QA_FIELDS, TEXT

SAMPLE_SIZE = 5000
MAX_CATEGORY_ROWS = 1000  # categories per feature sent back; the rest are summed into one row
OTHER = "(other)"
# Timestamps Python can hold; a record outside them has no usable time and is skipped.
TS_MIN, TS_MAX = "0001-01-01 00:00:00", "9999-12-31 23:59:59.999"
KEY_SPELLINGS = {  # the QA keys in the spellings the functions use (see docs/report.md)
    "question": ("question", "Question", "QUESTION"),
    "context": ("context", "Context", "CONTEXT"),
    "answer": ("answer", "Answer", "ANSWER"),
    "score": ("score", "Score", "SCORE"),
}


def quote(text: str) -> str:
    """A SQL string literal; NUL cannot appear in one, so it is refused here, not in the engine."""
    if "\x00" in text:
        raise ValueError("a NUL character cannot be used in a query")
    return "'" + text.replace("'", "''") + "'"


def ts_literal(ts: datetime) -> str:
    return f"TIMESTAMP '{ts.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}'"


@dataclass(frozen=True)
class Dialect:
    """The spellings that differ; ``name`` is also sqlglot's dialect name."""

    name: str

    @property
    def duckdb(self) -> bool:
        return self.name == "duckdb"

    def jtype(self, x: str) -> str:
        """A JSON value's type as one letter: s(tring) n(umber) b(ool) o(bject) a(rray) z (null)."""
        if self.duckdb:
            return (
                f"CASE json_type({x}) WHEN 'VARCHAR' THEN 's' WHEN 'BOOLEAN' THEN 'b' WHEN 'OBJECT' THEN 'o' "
                f"WHEN 'ARRAY' THEN 'a' WHEN 'NULL' THEN 'z' WHEN 'BIGINT' THEN 'n' WHEN 'UBIGINT' THEN 'n' "
                f"WHEN 'DOUBLE' THEN 'n' WHEN 'HUGEINT' THEN 'n' END"
            )
        first = f"substr(json_format({x}), 1, 1)"
        return (
            f"CASE {first} WHEN '\"' THEN 's' WHEN 't' THEN 'b' WHEN 'f' THEN 'b' WHEN '{{' THEN 'o' "
            f"WHEN '[' THEN 'a' WHEN 'n' THEN 'z' ELSE CASE WHEN {x} IS NULL THEN NULL ELSE 'n' END END"
        )

    def jget(self, x: str, key: str) -> str:
        """Member ``key`` of JSON object ``x`` (JSON, or NULL), with any characters in the key."""
        if self.duckdb:
            pointer = "/" + key.replace("~", "~0").replace("/", "~1")
            return f"json_extract({x}, {quote(pointer)})"
        escaped = key.replace("\\", "\\\\").replace('"', '\\"')
        return f"json_extract({x}, {quote('$[' + chr(34) + escaped + chr(34) + ']')})"

    def jtext(self, x: str) -> str:
        """A JSON string's value (NULL for other types)."""
        if self.duckdb:
            return f"json_extract_string({x}, '$')"
        return f"CAST({x} AS VARCHAR)"

    def jraw(self, x: str) -> str:
        """A JSON value's text (numbers as written)."""
        return f"CAST({x} AS VARCHAR)" if self.duckdb else f"json_format({x})"

    def jnum(self, x: str) -> str:
        return f"TRY_CAST({x} AS DOUBLE)" if self.duckdb else f"TRY_CAST({x} AS DOUBLE)"

    def jlen(self, x: str) -> str:
        return f"json_array_length({x})"

    def parse_json(self, text: str) -> str:
        """JSON text to JSON; text that is not JSON becomes a JSON string (a plain-text payload)."""
        if self.duckdb:
            return f"CASE WHEN json_valid({text}) THEN CAST({text} AS JSON) ELSE to_json({text}) END"
        return f"COALESCE(TRY(json_parse({text})), CAST({text} AS JSON))"

    def finite(self, x: str) -> str:
        return f"CASE WHEN isfinite({x}) THEN {x} END" if self.duckdb else f"CASE WHEN is_finite({x}) THEN {x} END"

    def epoch(self, ts: str) -> str:
        return f"epoch({ts})" if self.duckdb else f"to_unixtime({ts})"

    def text_to_ts(self, text: str) -> str:
        if self.duckdb:
            return f"CAST(TRY_CAST({text} AS TIMESTAMPTZ) AS TIMESTAMP)"
        return f"CAST(TRY(from_iso8601_timestamp({text})) AT TIME ZONE 'UTC' AS TIMESTAMP)"

    def ms_to_ts(self, ms: str) -> str:
        if self.duckdb:
            return f"make_timestamp(CAST({ms} * 1000 AS BIGINT))"
        return f"CAST(from_unixtime({ms} / 1000.0) AT TIME ZONE 'UTC' AS TIMESTAMP)"

    def quantiles(self, v: str, qs: list[float], exact: bool) -> str:
        """A list of quantiles of ``v``: exact on DuckDB (``quantile_disc``), approximate on Athena."""
        qlist = ", ".join(f"{q:.6g}" for q in qs)
        if self.duckdb:
            return f"quantile_{'disc' if exact else 'cont'}({v}, [{qlist}])"
        return f"approx_percentile({v}, ARRAY[{qlist}])"

    def sorted_list(self, v: str) -> str:
        return f"list({v} ORDER BY {v}) FILTER (WHERE {v} IS NOT NULL)" if self.duckdb else f"array_sort(array_agg({v}) FILTER (WHERE {v} IS NOT NULL))"

    def approx_distinct(self, v: str) -> str:
        return f"approx_count_distinct({v})" if self.duckdb else f"approx_distinct({v})"

    def each(self, x: str, alias: str) -> str:
        """FROM-clause item expanding JSON object ``x`` into rows (``alias``.k, ``alias``.v)."""
        if self.duckdb:
            return f"(SELECT key AS k, value AS v FROM json_each({x})) AS {alias}"
        return f"UNNEST(CAST({x} AS MAP(VARCHAR, JSON))) AS {alias}(k, v)"

    def count_if(self, cond: str) -> str:
        return f"count_if({cond})"


DUCKDB = Dialect("duckdb")
TRINO = Dialect("trino")


@dataclass(frozen=True)
class Field:
    """A generic field: ``side`` (input/output) and the key path below it; ``array`` for ``.length``."""

    side: str
    keys: tuple[str, ...]
    array: bool = False

    @property
    def name(self) -> str:
        return ".".join((self.side, *self.keys)) + (".length" if self.array else "")


def _col(side: str) -> str:
    return "inp" if side == "input" else "outp"


class Builder:
    """Writes the queries for one dialect over a source relation (a subquery or table name)."""

    def __init__(self, dialect: Dialect) -> None:
        self.d = dialect

    # --- the source ------------------------------------------------------------------------
    def timestamp(self, *candidates: str) -> str:
        """First readable time among JSON values: ISO 8601 text or epoch milliseconds, within
        the years Python can hold (9999-12-31 is fine; 1e20 or Infinity is no time)."""
        d, parts = self.d, []
        for x in candidates:
            t = d.jtype(x)
            num = d.jnum(x)
            parts.append(
                f"CASE WHEN {t} = 's' THEN {d.text_to_ts(d.jtext(x))} "
                f"WHEN {t} = 'n' AND {num} BETWEEN -62135596800000 AND 253402300799999 "
                f"THEN {d.ms_to_ts(num)} END"
            )
        ts = f"COALESCE({', '.join(parts)})" if len(parts) > 1 else parts[0]
        return ts

    def windowed(self, source: str, start: datetime | None, end: datetime | None) -> str:
        """Rows in [start, end), each ``inference_id`` once (the earliest capture of it)."""
        cond = [f"ts BETWEEN TIMESTAMP '{TS_MIN}' AND TIMESTAMP '{TS_MAX}'"]
        if start is not None:
            cond.append(f"ts >= {ts_literal(start)}")
        if end is not None:
            cond.append(f"ts < {ts_literal(end)}")
        return (
            "SELECT iid, ts, lat, inp, outp FROM (SELECT s.*, row_number() OVER "
            "(PARTITION BY iid ORDER BY ts) AS rn FROM (" + source + ") AS s WHERE " + " AND ".join(cond) + ") AS w "
            "WHERE iid IS NULL OR rn = 1"
        )

    # --- discovery -------------------------------------------------------------------------
    def overview(self, rows: str) -> str:
        """Rows, time range, undated rows, and whether most rows look like extractive QA."""
        d = self.d
        q, c = self._qa_get("inp", "question"), self._qa_get("inp", "context")
        qa = f"({q}) IS NOT NULL AND {d.jtype(q)} <> 'z' AND ({c}) IS NOT NULL AND {d.jtype(c)} <> 'z'"
        return (
            f"SELECT count(*) AS n, min({d.epoch('ts')}) AS first, max({d.epoch('ts')}) AS last, "
            f"{d.count_if(qa)} AS qa FROM ({rows}) AS r"
        )

    def fields(self, rows: str) -> str:
        """Every flat field of input/output (two levels, lists by length) with its value types."""
        d = self.d
        level1 = " UNION ALL ".join(
            f"SELECT '{side}' AS side, e1.k AS k1, e1.v AS v FROM ({rows}) AS r CROSS JOIN {d.each(f'r.{_col(side)}', 'e1')} "
            f"WHERE {d.jtype(f'r.{_col(side)}')} = 'o'"
            for side in ("input", "output")
        )
        leaves = (
            f"WITH l1 AS ({level1}), "
            f"leaves AS (SELECT side, k1, CAST(NULL AS VARCHAR) AS k2, v FROM l1 WHERE {d.jtype('v')} <> 'o' "
            f"UNION ALL SELECT l1.side, l1.k1, e2.k AS k2, e2.v FROM l1 CROSS JOIN {d.each('l1.v', 'e2')} "
            f"WHERE {d.jtype('l1.v')} = 'o') "
        )
        t = d.jtype("v")
        text = f"CASE WHEN {t} = 's' THEN {d.jtext('v')} WHEN {t} = 'o' THEN {d.jraw('v')} END"
        return (
            leaves + f"SELECT side, k1, k2, {t} AS t, count(*) AS n, max(length({text})) AS maxlen, "
            f"{d.approx_distinct(text)} AS nd FROM leaves WHERE {t} <> 'z' GROUP BY side, k1, k2, {t}"
        )

    # --- features ----------------------------------------------------------------------------
    def _qa_get(self, col: str, key: str) -> str:
        d = self.d
        gets = ", ".join(d.jget(col, k) for k in KEY_SPELLINGS[key])
        return f"CASE WHEN {d.jtype(col)} = 'o' THEN COALESCE({gets}) END"

    def _qa_expr(self, name: str) -> str:
        """The raw value of a QA descriptor, as the Python descriptors define it."""
        d = self.d
        q, c = self._qa_get("inp", "question"), self._qa_get("inp", "context")
        answer = f"CASE WHEN {d.jtype('outp')} = 'o' THEN {self._qa_get('outp', 'answer')} ELSE outp END"
        ta = d.jtype(f"({answer})")
        blank = f"(({answer}) IS NULL OR {ta} = 'z' OR ({ta} = 's' AND trim({d.jtext(f'({answer})')}) = ''))"
        if name == "question_length":
            return f"CASE WHEN {d.jtype(f'({q})')} = 's' THEN length({d.jtext(f'({q})')}) END"
        if name == "context_length":
            return f"CASE WHEN {d.jtype(f'({c})')} = 's' THEN length({d.jtext(f'({c})')}) END"
        if name == "answer_length":
            return f"CASE WHEN {ta} = 's' THEN length({d.jtext(f'({answer})')}) WHEN {blank} THEN 0 END"
        if name == "answer_empty":
            return f"CASE WHEN outp IS NULL THEN NULL WHEN {blank} THEN 'true' ELSE 'false' END"
        if name == "answer_in_context":
            text = f"CASE WHEN {ta} = 's' THEN {d.jtext(f'({answer})')} ELSE {d.jraw(f'({answer})')} END"
            found = f"strpos(lower({d.jtext(f'({c})')}), lower(trim({text}))) > 0"
            return (
                f"CASE WHEN outp IS NULL OR {blank} OR {d.jtype(f'({c})')} IS DISTINCT FROM 's' THEN NULL "
                f"WHEN {found} THEN 'true' ELSE 'false' END"
            )
        if name == "score":
            return f"CASE WHEN {d.jtype('outp')} = 'o' THEN {self._qa_get('outp', 'score')} END"
        raise KeyError(name)

    def _leaf(self, f: Field) -> str:
        """The JSON value of a generic field, NULL where the record's shape gives another field."""
        d = self.d
        x = _col(f.side)
        for key in f.keys:
            x = f"CASE WHEN {d.jtype(x)} = 'o' THEN {d.jget(x, key)} END"
        t = d.jtype(f"({x})")
        if f.array:
            return f"CASE WHEN {t} = 'a' THEN {d.jlen(f'({x})')} END"
        if len(f.keys) < MAX_DEPTH:
            return f"CASE WHEN {t} NOT IN ('a', 'o', 'z') THEN {x} END"
        return f"CASE WHEN {t} NOT IN ('a', 'z') THEN {x} END"

    def convert(self, raw: str, kind: str, is_json: bool) -> tuple[str, str]:
        """(value, type error) expressions of a raw value read under the baseline's ``kind``."""
        d = self.d
        if not is_json:  # a computed descriptor: already a number or a category
            return raw, "FALSE"
        t = d.jtype(f"({raw})")
        if kind == NUMERIC:
            value = f"CASE WHEN {t} = 'n' THEN {d.finite(d.jnum(f'({raw})'))} END"
            return value, f"COALESCE({t} NOT IN ('n', 'z'), FALSE)"
        if kind == TEXT:
            text = f"CASE WHEN {t} = 's' THEN {d.jtext(f'({raw})')} WHEN {t} = 'o' THEN {d.jraw(f'({raw})')} END"
            return f"length({text})", f"COALESCE({t} NOT IN ('s', 'o', 'z'), FALSE)"
        value = (
            f"CASE WHEN {t} = 's' THEN {d.jtext(f'({raw})')} WHEN {t} = 'z' THEN NULL "
            f"ELSE {d.jraw(f'({raw})')} END"
        )
        return value, "FALSE"

    def feature_columns(self, features: list[tuple[str, str, Field | None]]) -> list[tuple[str, str]]:
        """(value, bad) SQL per feature: ``(name, kind, field)``; ``field`` None for descriptors."""
        out = []
        for name, kind, f in features:
            if f is None and name == "latency_ms":
                out.append(self.convert("lat", kind, True))
            elif f is None:
                raw = self._qa_expr(name)
                computed = name in QA_FIELDS and name != "score"
                if computed and kind == NUMERIC:
                    out.append((f"CAST({raw} AS DOUBLE)", "FALSE"))
                else:
                    out.append(self.convert(raw, kind, not computed))
            elif f.array:
                out.append((f"CAST({self._leaf(f)} AS DOUBLE)", "FALSE"))
            else:
                out.append(self.convert(self._leaf(f), kind, True))
        return out

    def features_table(self, rows: str, columns: list[tuple[str, str]]) -> str:
        """One narrow row per record: ts and (value, bad) per feature, the input of every aggregate."""
        cols = ", ".join(f"{v} AS v{i}, {b} AS b{i}" for i, (v, b) in enumerate(columns))
        return f"SELECT ts{', ' + cols if cols else ''} FROM ({rows}) AS r"

    def counts(self, feats: str, n: int) -> str:
        parts = [f"count(v{i}) AS n{i}, {self.d.count_if(f'b{i}')} AS e{i}" for i in range(n)]
        return f"SELECT count(*) AS n{', ' + ', '.join(parts) if parts else ''} FROM ({feats}) AS f"

    def numeric_sample(self, feats: str, i: int, n_values: int) -> str:
        """The evenly spaced sample a numeric test needs: all values up to SAMPLE_SIZE, else quantiles."""
        d = self.d
        if n_values <= SAMPLE_SIZE:
            return f"SELECT {d.sorted_list(f'v{i}')} AS sample FROM ({feats}) AS f"
        qs = [(k + 0.5) / SAMPLE_SIZE for k in range(SAMPLE_SIZE)]
        return f"SELECT {d.quantiles(f'v{i}', qs, exact=True)} AS sample FROM ({feats}) AS f WHERE v{i} IS NOT NULL"

    def category_counts(self, feats: str, i: int) -> str:
        return (
            f"SELECT v{i} AS value, count(*) AS n FROM ({feats}) AS f WHERE v{i} IS NOT NULL "
            f"GROUP BY v{i} ORDER BY n DESC, value LIMIT {MAX_CATEGORY_ROWS + 1}"
        )

    def series(self, feats: str, seconds: int, numeric: list[int]) -> str:
        d = self.d
        bucket = f"floor({d.epoch('ts')} / {seconds})"
        parts = [f"{d.quantiles(f'v{i}', [0.5, 0.9], exact=False)} AS q{i}" for i in numeric]
        if not d.duckdb:
            parts = [f"approx_percentile(v{i}, ARRAY[0.5, 0.9]) AS q{i}" for i in numeric]
        cols = ", ".join(["count(*) AS n", *parts])
        return f"SELECT {bucket} AS b, {cols} FROM ({feats}) AS f GROUP BY {bucket} ORDER BY b"

    def median_ts(self, rows: str, n: int) -> str:
        """The capture time of row ``n // 2`` in time order: the older half is the baseline."""
        d = self.d
        if d.duckdb:
            return f"SELECT {d.epoch('ts')} FROM ({rows}) AS r ORDER BY ts LIMIT 1 OFFSET {n // 2}"
        return f"SELECT approx_percentile({d.epoch('ts')}, 0.5) FROM ({rows}) AS r"


def kind_of(classes: dict[str, tuple[int, int, int]]) -> str:
    """The Python descriptors' kind rule from a field's value classes: ``{type letter: (count,
    longest text, distinct texts)}``. All numbers: numeric; all short few strings: categorical;
    other strings: text; a mix: categorical."""
    from capture_ext.report.descriptors import MAX_CATEGORIES, MAX_CATEGORY_CHARS

    types = set(classes)
    if types <= {"n", "a"}:
        return NUMERIC
    if types <= {"s", "o"}:
        longest = max(c[1] or 0 for c in classes.values())
        distinct = sum(c[2] or 0 for c in classes.values())
        return TEXT if longest > MAX_CATEGORY_CHARS or distinct > MAX_CATEGORIES else CATEGORICAL
    return CATEGORICAL


def validate(sql: str, dialect: Dialect) -> None:
    """Parse ``sql`` with sqlglot in ``dialect``: a query the engine would reject fails here, offline."""
    import sqlglot
    from sqlglot.errors import ErrorLevel

    sqlglot.parse_one(sql, read=dialect.name, error_level=ErrorLevel.RAISE)
