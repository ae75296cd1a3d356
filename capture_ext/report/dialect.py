"""The SQL the two report dialects spell differently, and the offline check of what is generated.

DuckDB runs the report locally; Trino is Athena's engine. :class:`Dialect` holds the few
constructs they spell differently (JSON access, JSON value types, expanding an object's keys,
quantiles, epoch arithmetic); :func:`validate` parses a query with sqlglot in its own dialect,
which is how the Trino text is checked without an AWS account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


def quote(text: str) -> str:
    """A SQL string literal; a NUL (possible in JSON keys) cannot be in one, so it is spliced in."""
    literal = "'" + text.replace("'", "''") + "'"
    return literal.replace("\x00", "' || chr(0) || '")


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
        path = '$["' + escaped + '"]'
        return f"json_extract({x}, {quote(path)})"

    def jtext(self, x: str) -> str:
        """A JSON string's value (NULL for other types)."""
        if self.duckdb:
            return f"json_extract_string({x}, '$')"
        return f"json_extract_scalar({x}, '$')"

    def jraw(self, x: str) -> str:
        """A JSON value's text (numbers as written)."""
        return f"CAST({x} AS VARCHAR)" if self.duckdb else f"json_format({x})"

    def jnum(self, x: str) -> str:
        return f"TRY_CAST({x} AS DOUBLE)"

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

    def approx_distinct(self, v: str) -> str:
        return f"approx_count_distinct({v})" if self.duckdb else f"approx_distinct({v})"

    def each(self, x: str, alias: str) -> str:
        """FROM-clause item expanding JSON object ``x`` into rows (``alias``.k, ``alias``.v)."""
        if self.duckdb:
            return f"(SELECT key AS k, value AS v FROM json_each({x})) AS {alias}"
        as_map = f"TRY_CAST({x} AS MAP(VARCHAR, JSON))"
        return f"UNNEST(map_keys({as_map}), map_values({as_map})) AS {alias}(k, v)"

    def count_if(self, cond: str) -> str:
        return f"count_if({cond})"


DUCKDB = Dialect("duckdb")
TRINO = Dialect("trino")


def validate(sql: str, dialect: Dialect) -> None:
    """Parse ``sql`` with sqlglot in ``dialect``: a query the engine would reject fails here, offline."""
    import sqlglot
    from sqlglot.errors import ErrorLevel

    sqlglot.parse_one(sql, read=dialect.name, error_level=ErrorLevel.RAISE)
