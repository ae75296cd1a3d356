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
from datetime import datetime

from capture_ext.report.descriptors import CATEGORICAL, MAX_DEPTH, NUMERIC, TEXT
from capture_ext.report.dialect import Dialect, quote, ts_literal

SAMPLE_SIZE = 5000
MAX_CATEGORY_ROWS = 1000  # categories per feature sent back; the rest are summed into one row
OTHER = "(other)"
SQ = "'"
MAX_KEY_SETS = 1000  # distinct key lists past which field discovery expands every object instead
# Timestamps Python can hold; a record outside them has no usable time and is skipped.
TS_MIN, TS_MAX = "0001-01-01 00:00:00", "9999-12-31 23:59:59.999"
KEY_SPELLINGS = {  # the QA keys in the spellings the functions use (see docs/report.md)
    "question": ("question", "Question", "QUESTION"),
    "context": ("context", "Context", "CONTEXT"),
    "answer": ("answer", "Answer", "ANSWER"),
    "score": ("score", "Score", "SCORE"),
}


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


class Slots:
    """The JSON members a query reads, extracted from ``inp``/``outp`` in one parse per record.

    Expressions refer to member ``(side, keys)`` as ``xi[k]``/``xo[k]``; the layer that builds
    those lists is :meth:`Builder.extracted`.
    """

    def __init__(self) -> None:
        self.paths: dict[str, list[tuple[str, ...]]] = {"input": [], "output": []}

    def ref(self, side: str, keys: tuple[str, ...]) -> str:
        paths = self.paths[side]
        if keys not in paths:
            paths.append(keys)
        return f"{'xi' if side == 'input' else 'xo'}[{paths.index(keys) + 1}]"


class Builder:
    """Writes the queries for one dialect over a source relation (a subquery or table name).

    Queries are layered so that each JSON document is parsed once per record: ``raw`` (window
    filter) → ``extracted`` (the members needed, as two lists) → ``qa`` (the QA members resolved)
    → feature values. Deduplication happens on the narrow feature rows, never on wide ones.
    """

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
        return f"COALESCE({', '.join(parts)})" if len(parts) > 1 else parts[0]

    def raw(self, source: str, start: datetime | None, end: datetime | None) -> str:
        """Rows in [start, end) (duplicates included: they are removed on the narrow rows)."""
        cond = [f"ts BETWEEN TIMESTAMP '{TS_MIN}' AND TIMESTAMP '{TS_MAX}'"]
        if start is not None:
            cond.append(f"ts >= {ts_literal(start)}")
        if end is not None:
            cond.append(f"ts < {ts_literal(end)}")
        return f"SELECT iid, ts, lat, inp, outp FROM ({source}) AS s WHERE {' AND '.join(cond)}"

    def extracted(self, raw: str, slots: Slots, keep_input: bool = False) -> str:
        d = self.d

        def many(col: str, paths: list[tuple[str, ...]]) -> str:
            paths = paths or [("",)]
            if d.duckdb:
                pointers = ", ".join(
                    quote("/" + "/".join(k.replace("~", "~0").replace("/", "~1") for k in p)) for p in paths
                )
                # TRY: Parquet's input is text, parsed here once; text that is not JSON has no members
                return f"TRY(json_extract({col}, [{pointers}]))"
            items = []
            for p in paths:
                escaped = "".join('["' + k.replace("\\", "\\\\").replace('"', '\\"') + '"]' for k in p)
                items.append(f"json_extract({col}, {quote('$' + escaped)})")
            return f"ARRAY[{', '.join(items)}]"

        return (
            f"SELECT iid, ts, lat, {'inp, ' if keep_input else ''}outp, {many('inp', slots.paths['input'])} AS xi, "
            f"{many('outp', slots.paths['output'])} AS xo FROM ({raw}) AS r"
        )

    def qa_layer(self, slots: Slots) -> str:
        """Column expressions resolving the QA members (any of the usual spellings)."""
        d = self.d

        def get(side: str, key: str) -> str:
            return "COALESCE(" + ", ".join(slots.ref(side, (k,)) for k in KEY_SPELLINGS[key]) + ")"

        to = d.jtype("outp")
        return (
            f"{get('input', 'question')} AS q, {get('input', 'context')} AS c, "
            f"CASE WHEN {to} = 'o' THEN {get('output', 'answer')} ELSE outp END AS ans, "
            f"CASE WHEN {to} = 'o' THEN {get('output', 'score')} END AS sc"
        )

    # --- discovery -------------------------------------------------------------------------
    def overview(self, raw: str, keys: bool = False) -> str:
        """Rows (duplicates included), time range and rows that look like extractive QA; with
        ``keys`` (DuckDB) grouped by the input's and output's key lists, from which the fields are read."""
        d = self.d
        slots = Slots()
        qa_cols = self.qa_layer(slots)
        key_cols = ", TRY(json_keys(inp)) AS ki, json_keys(outp) AS ko" if keys else ""
        extracted = self.extracted(raw, slots, keep_input=keys)
        layered = f"SELECT ts{', inp' if keys else ''}, outp, {qa_cols}{key_cols} FROM ({extracted}) AS x"
        qa = f"q IS NOT NULL AND {d.jtype('q')} <> 'z' AND c IS NOT NULL AND {d.jtype('c')} <> 'z'"
        cols = f"count(*) AS n, min({d.epoch('ts')}) AS first, max({d.epoch('ts')}) AS last, {d.count_if(qa)} AS qa"
        if not keys:
            return f"SELECT {cols} FROM ({layered}) AS l"
        return f"SELECT {cols}, ki, ko FROM ({layered}) AS l GROUP BY ki, ko LIMIT {MAX_KEY_SETS + 1}"

    def fields(self, raw: str) -> str:
        """Every flat field of input/output with its value types, by expanding each object
        (the portable discovery; Athena's, and DuckDB's twin of it)."""
        d = self.d
        level1 = " UNION ALL ".join(
            f"SELECT '{side}' AS side, e1.k AS k1, e1.v AS v FROM ({raw}) AS r "
            f"CROSS JOIN {d.each(f'r.{_col(side)}', 'e1')} WHERE {d.jtype(f'r.{_col(side)}')} = 'o'"
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

    def field_stats(self, raw: str, fields: list[Field]) -> str:
        """For candidate fields (from the key lists): values per type, longest text, distinct
        texts, and objects at the member (which then need expanding). Each layer names its
        columns so no expression nests another: planning stays fast with many fields."""
        d = self.d
        slots = Slots()
        leaves = [
            f"{self._leaf(f, slots)} AS x{i}, {d.jtype(slots.ref(f.side, f.keys))} AS o{i}"
            for i, f in enumerate(fields)
        ]
        extracted = self.extracted(raw, slots)
        inner = f"SELECT {', '.join(leaves) or '1 AS x'} FROM ({extracted}) AS e"
        typed = ", ".join(f"x{i}, o{i}, {d.jtype(f'x{i}')} AS t{i}" for i in range(len(fields)))
        middle = f"SELECT {typed or '1 AS x'} FROM ({inner}) AS l"
        cols = []
        for i in range(len(fields)):
            t = f"t{i}"
            text = f"CASE WHEN {t} = 's' THEN {d.jtext(f'x{i}')} WHEN {t} = 'o' THEN {d.jraw(f'x{i}')} END"
            cols.append(
                f"{d.count_if(f'{t} = {SQ}n{SQ}')} AS n{i}, {d.count_if(f'{t} IN ({SQ}s{SQ}, {SQ}o{SQ})')} AS s{i}, "
                f"{d.count_if(f'{t} = {SQ}b{SQ}')} AS b{i}, max(length({text})) AS m{i}, "
                f"{d.approx_distinct(text)} AS d{i}, {d.count_if(f'o{i} = {SQ}o{SQ}')} AS k{i}"
            )
        return f"SELECT {', '.join(cols) or 'count(*)'} FROM ({middle}) AS m"

    # --- features ----------------------------------------------------------------------------
    def _qa_expr(self, name: str) -> str:
        """The raw value of a QA descriptor over the qa layer, as the Python descriptors define it."""
        d = self.d
        ta, tq, tc = d.jtype("ans"), d.jtype("q"), d.jtype("c")
        blank = f"(ans IS NULL OR {ta} = 'z' OR ({ta} = 's' AND trim({d.jtext('ans')}) = ''))"
        if name == "question_length":
            return f"CASE WHEN {tq} = 's' THEN length({d.jtext('q')}) END"
        if name == "context_length":
            return f"CASE WHEN {tc} = 's' THEN length({d.jtext('c')}) END"
        if name == "answer_length":
            return f"CASE WHEN {ta} = 's' THEN length({d.jtext('ans')}) WHEN {blank} THEN 0 END"
        if name == "answer_empty":
            return f"CASE WHEN outp IS NULL THEN NULL WHEN {blank} THEN 'true' ELSE 'false' END"
        if name == "answer_in_context":
            text = f"CASE WHEN {ta} = 's' THEN {d.jtext('ans')} ELSE {d.jraw('ans')} END"
            found = f"strpos(lower({d.jtext('c')}), lower(trim({text}))) > 0"
            return (
                f"CASE WHEN outp IS NULL OR {blank} OR {tc} IS DISTINCT FROM 's' THEN NULL "
                f"WHEN {found} THEN 'true' ELSE 'false' END"
            )
        if name == "score":
            return "sc"
        raise KeyError(name)

    def _leaf(self, f: Field, slots: Slots) -> str:
        """The JSON value of a generic field, NULL where the record's shape gives another field."""
        d = self.d
        x = slots.ref(f.side, f.keys)
        guard = ""
        if len(f.keys) > 1:
            guard = f"{d.jtype(slots.ref(f.side, f.keys[:1]))} = 'o' AND "
        t = d.jtype(x)
        if f.array:
            return f"CASE WHEN {guard}{t} = 'a' THEN {d.jlen(x)} END"
        if len(f.keys) < MAX_DEPTH:
            return f"CASE WHEN {guard}{t} NOT IN ('a', 'o', 'z') THEN {x} END"
        return f"CASE WHEN {guard}{t} NOT IN ('a', 'z') THEN {x} END"

    def convert(self, raw: str, kind: str) -> tuple[str, str]:
        """(value, type error) expressions of a raw JSON value read under the baseline's ``kind``."""
        d = self.d
        t = d.jtype(f"({raw})")
        if kind == NUMERIC:
            value = f"CASE WHEN {t} = 'n' THEN {d.finite(d.jnum(f'({raw})'))} END"
            return value, f"COALESCE({t} NOT IN ('n', 'z'), FALSE)"
        if kind == TEXT:
            text = f"CASE WHEN {t} = 's' THEN {d.jtext(f'({raw})')} WHEN {t} = 'o' THEN {d.jraw(f'({raw})')} END"
            return f"CAST(length({text}) AS DOUBLE)", f"COALESCE({t} NOT IN ('s', 'o', 'z'), FALSE)"
        value = f"CASE WHEN {t} = 's' THEN {d.jtext(f'({raw})')} WHEN {t} = 'z' THEN NULL ELSE {d.jraw(f'({raw})')} END"
        return value, "FALSE"

    def features_table(self, raw: str, features: list[tuple[str, str, Field | None]]) -> str:
        """One narrow row per record (each inference_id once, its earliest capture): ts and
        (value v<i>, type error b<i>) per feature ``(name, kind, field)``; the input of every aggregate."""
        slots = Slots()
        columns: list[tuple[str, str]] = []
        leaves: list[str] = []
        for name, kind, f in features:
            if f is None and name == "latency_ms":
                columns.append(self.convert("lat", kind))
            elif f is None and name != "score":
                raw_value = self._qa_expr(name)
                if kind == NUMERIC:
                    columns.append((f"CAST({raw_value} AS DOUBLE)", "FALSE"))
                else:
                    columns.append((raw_value, "FALSE"))
            elif f is None:
                columns.append(self.convert("sc", kind))
            else:
                leaf = f"l{len(leaves)}"
                leaves.append(f"{self._leaf(f, slots)} AS {leaf}")
                if f.array:
                    columns.append((f"CAST({leaf} AS DOUBLE)", "FALSE"))
                else:
                    columns.append(self.convert(leaf, kind))
        qa_cols = self.qa_layer(slots)
        leaf_cols = "".join(f", {c}" for c in leaves)
        layered = f"SELECT iid, ts, lat, outp, {qa_cols}{leaf_cols} FROM ({self.extracted(raw, slots)}) AS x"
        cols = ", ".join(f"{v} AS v{i}, {b} AS b{i}" for i, (v, b) in enumerate(columns))
        narrow = f"SELECT iid, ts{', ' + cols if cols else ''} FROM ({layered}) AS l"
        return (
            f"SELECT * FROM (SELECT n.*, row_number() OVER (PARTITION BY iid ORDER BY ts) AS rn "
            f"FROM ({narrow}) AS n) AS u WHERE iid IS NULL OR rn = 1"
        )

    def counts(self, feats: str, n: int) -> str:
        parts = [f"count(v{i}) AS n{i}, {self.d.count_if(f'b{i}')} AS e{i}" for i in range(n)]
        return (
            f"SELECT count(*) AS n, min({self.d.epoch('ts')}) AS first, max({self.d.epoch('ts')}) AS last"
            f"{', ' + ', '.join(parts) if parts else ''} FROM ({feats}) AS f"
        )

    def numeric_sample(self, feats: str, i: int, n_values: int) -> str:
        """The evenly spaced sample a numeric test needs (what baseline files keep): value number
        floor(k * n / SAMPLE_SIZE) of the sorted values, for k < SAMPLE_SIZE; all when fewer."""
        d = self.d
        if not d.duckdb and n_values > SAMPLE_SIZE:
            qs = [(k + 0.5) / SAMPLE_SIZE for k in range(SAMPLE_SIZE)]
            return f"SELECT {d.quantiles(f'v{i}', qs, exact=True)} AS sample FROM ({feats}) AS f WHERE v{i} IS NOT NULL"
        ranked = (
            f"SELECT v{i} AS v, row_number() OVER (ORDER BY v{i}) - 1 AS r FROM ({feats}) AS f WHERE v{i} IS NOT NULL"
        )
        if n_values <= SAMPLE_SIZE:
            return f"SELECT v FROM ({ranked}) AS s ORDER BY r"
        n, size = int(n_values), SAMPLE_SIZE
        k = f"CAST(floor((r * {size} + {n - 1}) / {n}) AS BIGINT)"  # the first k that may pick r
        return f"SELECT v FROM ({ranked}) AS s WHERE {k} < {size} AND floor({k} * {n} / {size}) = r ORDER BY r"

    def category_counts(self, feats: str, i: int) -> str:
        return (
            f"SELECT v{i} AS value, count(*) AS n FROM ({feats}) AS f WHERE v{i} IS NOT NULL "
            f"GROUP BY v{i} ORDER BY n DESC, value LIMIT {MAX_CATEGORY_ROWS + 1}"
        )

    def series(self, feats: str, seconds: int, numeric: list[int]) -> str:
        d = self.d
        bucket = f"floor({d.epoch('ts')} / {seconds})"
        parts = [f"{d.quantiles(f'v{i}', [0.5, 0.9], exact=False)} AS q{i}" for i in numeric]
        cols = ", ".join(["count(*) AS n", *parts])
        return f"SELECT {bucket} AS b, {cols} FROM ({feats}) AS f GROUP BY {bucket} ORDER BY b"

    def median_ts(self, feats: str, n: int) -> str:
        """The capture time of row ``n // 2`` in time order: the older half is the baseline."""
        return f"SELECT {self.d.epoch('ts')} FROM ({feats}) AS r ORDER BY ts LIMIT 1 OFFSET {n // 2}"


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
