"""Athena's view of the sinks' files, emulated: the Glue tables of template.yaml and the OpenX JSON SerDe.

Athena cannot run in a test, so the reader-fidelity tests read the files the way the two Glue
tables declare them:

- the Parquet table: the files' columns cast to the declared Athena types;
- the JSON Lines table: each line read as the OpenX JSON SerDe documents it (Athena's "OpenX JSON
  SerDe" page, https://docs.aws.amazon.com/athena/latest/ug/openx-json-serde.html): with
  ``case.insensitive`` true (its default) keys are lower-cased at every level and keys that then
  collide fail the line ("Duplicate key"); a line that fails fails the query unless
  ``ignore.malformed.json`` is true, which makes it a row of NULLs; a nested value read into a
  ``string`` column comes back as JSON text, a JSON string as the bare string.

What the emulation does not reproduce: the SerDe's own number formatting and key order in that
JSON text (its JSON objects are hash maps), which is why the comparisons over this table ignore
key order.

The Athena ``SELECT``s of docs/sinks.md then run in DuckDB over these tables, with macros for the
Presto/Trino functions DuckDB spells differently.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: Athena (Hive DDL) type -> DuckDB type.
DUCKDB_TYPES = {"string": "VARCHAR", "double": "DOUBLE", "bigint": "BIGINT", "timestamp": "TIMESTAMP"}
#: Presto/Trino functions used by the documented Athena queries, in DuckDB terms. json_extract_scalar
#: is NULL for invalid JSON and for objects/arrays, as in Trino.
ATHENA_MACROS = (
    "CREATE MACRO json_extract_scalar(j, p) AS "
    "CASE WHEN json_valid(j) AND json_type(j, p) NOT IN ('OBJECT', 'ARRAY') THEN json_extract_string(j, p) END",
)


class MalformedLine(ValueError):
    """The SerDe cannot read a line; with ``ignore.malformed.json`` false this fails the query."""


def glue_tables() -> dict[str, dict[str, Any]]:
    """``TableInput`` of every ``AWS::Glue::Table`` in template.yaml, by resource name."""
    from cfnlint.decode import decode_str

    decoded, problems = decode_str((ROOT / "template.yaml").read_text())
    assert not problems, problems
    return {
        name: res["Properties"]["TableInput"]
        for name, res in decoded["Resources"].items()
        if res["Type"] == "AWS::Glue::Table"
    }


def duckdb_type(athena: str) -> str:
    struct = re.fullmatch(r"struct<(.*)>", athena.replace(" ", ""))
    if struct:
        fields = [f.split(":", 1) for f in struct.group(1).split(",")]
        return "STRUCT(" + ", ".join(f'"{n}" {duckdb_type(t)}' for n, t in fields) + ")"
    return DUCKDB_TYPES[athena]


def _pairs(case_insensitive: bool) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            name = key.lower() if case_insensitive else key
            if name in out:
                raise MalformedLine(f'Duplicate key "{name}"')
            out[name] = value
        return out

    return hook


def _convert(value: Any, athena: str, case_insensitive: bool) -> Any:
    if value is None:
        return None
    struct = re.fullmatch(r"struct<(.*)>", athena.replace(" ", ""))
    if struct:
        if not isinstance(value, dict):
            raise MalformedLine(f"expected an object for {athena}")
        fields = [f.split(":", 1) for f in struct.group(1).split(",")]
        return {n: _convert(value.get(n.lower() if case_insensitive else n), t, case_insensitive) for n, t in fields}
    if athena == "string":
        if isinstance(value, str):
            return value
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if athena == "double":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MalformedLine("expected a number")
        return float(value)
    if athena == "bigint":
        if isinstance(value, bool) or not isinstance(value, int):
            raise MalformedLine("expected an integer")
        return value
    raise AssertionError(f"no emulation for Athena type {athena}")


def openx_rows(lines: list[bytes], columns: list[tuple[str, str]], serde: dict[str, str]) -> list[dict[str, Any]]:
    """The rows the OpenX SerDe gives for ``lines`` under ``serde`` properties (see the module doc)."""
    case_insensitive = serde.get("case.insensitive", "true").lower() == "true"
    ignore_malformed = serde.get("ignore.malformed.json", "false").lower() == "true"
    mapping = {k[len("mapping.") :]: v for k, v in serde.items() if k.startswith("mapping.")}
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            parsed = json.loads(line, object_pairs_hook=_pairs(case_insensitive))
            if not isinstance(parsed, dict):
                raise MalformedLine("not a JSON object")
            row = {}
            for name, athena in columns:
                key = mapping.get(name, name)
                row[name] = _convert(parsed.get(key.lower() if case_insensitive else key), athena, case_insensitive)
        except (ValueError, MalformedLine) as exc:
            if not ignore_malformed:
                raise MalformedLine(f"line {number}: {exc}") from None
            row = {name: None for name, _ in columns}
        rows.append(row)
    return rows


def columns_of(table: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]


def load_jsonl_table(con: Any, name: str, table: dict[str, Any], files: dict[str, list[bytes]]) -> None:
    """Create DuckDB table ``name``: every file's lines as the Glue JSON Lines table reads them.

    ``files`` maps a key (``…/function=…/dt=…/hour=…/x.jsonl.gz``) to its lines; the partition
    columns come from the key, as strings, like the table's projection declares them.
    """
    columns = columns_of(table)
    partitions = [(k["Name"], k["Type"]) for k in table["PartitionKeys"]]
    serde = table["StorageDescriptor"]["SerdeInfo"].get("Parameters", {})
    ddl = ", ".join(f'"{n}" {duckdb_type(t)}' for n, t in columns + partitions)
    con.execute(f'CREATE TABLE "{name}" ({ddl})')
    placeholders = ", ".join("?" for _ in columns + partitions)
    for key, lines in files.items():
        values = dict(part.split("=", 1) for part in key.split("/") if "=" in part)
        rows = openx_rows(lines, columns, serde)
        con.executemany(
            f'INSERT INTO "{name}" VALUES ({placeholders})',
            [[row[n] for n, _ in columns] + [values[n] for n, _ in partitions] for row in rows],
        )


def create_parquet_view(con: Any, name: str, table: dict[str, Any], pattern: str) -> None:
    """DuckDB view ``name``: the Parquet files with the Glue Parquet table's declared column types."""
    columns = columns_of(table)
    partitions = [k["Name"] for k in table["PartitionKeys"]]
    select = ", ".join(f'CAST("{n}" AS {duckdb_type(t)}) AS "{n}"' for n, t in columns)
    select += ", " + ", ".join(f'"{p}"' for p in partitions)
    con.execute(
        f'CREATE VIEW "{name}" AS SELECT {select} FROM read_parquet(?, hive_partitioning = true, '
        "hive_types_autocast = false)".replace("?", "'" + pattern.replace("'", "''") + "'")
    )


def install_athena_macros(con: Any) -> None:
    for statement in ATHENA_MACROS:
        con.execute(statement)
