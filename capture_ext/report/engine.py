"""One interface for the engines that turn captured data into profiles.

An engine answers two questions about a window of one data source: its :class:`Profile` (read
with the baseline's kinds when given) and the capture time that splits it in halves. The drift
tests, baseline files, plots and HTML only ever see profiles, so they are shared by every engine.

``python`` reads every record into memory (small data, and the reference the others are tested
against); ``duckdb`` runs the statistics as SQL on this machine in bounded memory; ``athena``
runs the same SQL on Athena over the Glue tables. :class:`SqlEngine` holds what the SQL engines
share: they differ only in how they run a query and in the source relation they read.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from capture_ext.report.descriptors import (
    CATEGORICAL,
    MAX_FIELDS_PER_SIDE,
    QA_CONSUMED,
    QA_FIELDS,
    RECORD_FIELDS,
    Feature,
    Profile,
    Series,
    _describe,
)
from capture_ext.report.dialect import Dialect, validate
from capture_ext.report.source import SourceError, Window
from capture_ext.report.sql import MAX_CATEGORY_ROWS, OTHER, Builder, Field, kind_of
from capture_ext.report.timeseries import bucket_seconds, bucket_start, series_features

log = logging.getLogger(__name__)
ENGINES = ("duckdb", "python", "athena")


@dataclass(frozen=True)
class DataSource:
    """Where the records are: a capture prefix (or Glue tables), a layout, maybe one function."""

    uri: str
    fmt: str = "auto"
    function: str | None = None


class Engine(ABC):
    name = "?"
    # Files are chosen (partition pruning) for this window when set: the halves of a split
    # window must be read from the files of the whole window, not re-pruned to each half.
    scope: Window | None = None

    @abstractmethod
    def profile(
        self, window: Window, label: str, kinds: dict[str, str] | None = None, qa: bool | None = None
    ) -> Profile:
        """The window's profile; with ``kinds`` (the baseline's) fields are read as those kinds."""

    @abstractmethod
    def split_time(self, window: Window) -> tuple[int, datetime | None]:
        """(records in the window, the capture time that splits them in halves; None below 2)."""

    def close(self) -> None:  # noqa: B027 - most engines hold nothing to release
        """Release what the engine holds (connections, temporary files)."""


class SqlEngine(Engine):
    """The shared SQL path: discovery, one narrow feature relation, then aggregates only."""

    dialect: Dialect
    validate_queries = False  # Athena: check each query offline before paying for it

    @abstractmethod
    def source(self, window: Window) -> str:
        """A relation (SQL text) with iid, ts, lat, inp, outp for rows that may be in ``window``."""

    @abstractmethod
    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run one query; engines raise SourceError naming the problem."""

    def materialize(self, sql: str) -> str:
        """Make the feature relation cheap to aggregate several times; default: keep it inline."""
        return sql

    def run(self, sql: str) -> list[tuple[Any, ...]]:
        if self.validate_queries:
            validate(sql, self.dialect)
        return self.query(sql)

    def raw(self, window: Window) -> str:
        return Builder(self.dialect).raw(self.source(window), window.start, window.end)

    def split_time(self, window: Window) -> tuple[int, datetime | None]:
        b = Builder(self.dialect)
        feats = self.materialize(b.features_table(self.raw(window), []))
        n = int(self.run(f"SELECT count(*) FROM ({feats}) AS r")[0][0])
        if n < 2:
            return n, None
        value = self.run(b.median_ts(feats, n))[0][0]
        return n, datetime.fromtimestamp(float(value), UTC)

    def run_fields(self, raw: str) -> list[tuple[Any, ...]]:
        """The portable discovery query (every object expanded)."""
        return self.run(Builder(self.dialect).fields(raw))

    def overview(self, raw: str) -> tuple[int, Any, Any, int, list[Field] | None]:
        """(rows, first, last, QA-shaped rows, candidate fields or None: expand every object)."""
        n, first, last, qa = self.run(Builder(self.dialect).overview(raw))[0]
        return int(n or 0), first, last, int(qa or 0), None

    def discover(self, raw: str, qa: bool, fields: list[Field] | None) -> tuple[dict[str, str], dict[str, Field]]:
        """Each flat input/output field seen in ``raw``: its kind and how to read it."""
        b = Builder(self.dialect)
        found: dict[str, dict[str, tuple[int, int, int]]] = {}
        paths: dict[str, Field] = {}

        def add(f: Field, t: str, n: int, maxlen: Any, nd: Any) -> None:
            if n <= 0 or (qa and f.name.lower() in QA_CONSUMED):
                return
            paths.setdefault(f.name, f)
            found.setdefault(f.name, {})[t] = (int(n), int(maxlen or 0), int(nd or 0))

        if fields is not None:
            row = self.run(b.field_stats(raw, fields))[0] if fields else ()
            if any(row[6 * i + 5] for i, f in enumerate(fields) if len(f.keys) == 1 and not f.array):
                return self.discover(raw, qa, None)  # nested objects: expand them (portable path)
            for i, f in enumerate(fields):
                n_num, n_text, n_bool, maxlen, nd = row[6 * i : 6 * i + 5]
                if f.array:
                    add(f, "a", int(n_num or 0), 0, 0)
                    continue
                add(f, "n", int(n_num or 0), 0, 0)
                add(f, "s", int(n_text or 0), maxlen, nd)
                add(f, "b", int(n_bool or 0), 0, 0)
        else:
            for side, k1, k2, t, n, maxlen, nd in self.run_fields(raw):
                keys = (k1,) if k2 is None else (k1, k2)
                add(Field(side, keys, array=t == "a"), t, int(n), maxlen, nd)
        kinds: dict[str, str] = {}
        per_side = {"input": 0, "output": 0}
        for name in sorted(found):
            side = paths[name].side
            if per_side[side] >= MAX_FIELDS_PER_SIDE:
                continue
            per_side[side] += 1
            kinds[name] = kind_of(found[name])
        return kinds, paths

    def profile(
        self, window: Window, label: str, kinds: dict[str, str] | None = None, qa: bool | None = None
    ) -> Profile:
        b = Builder(self.dialect)
        raw = self.raw(window)
        n_raw, _, _, n_qa, candidates = self.overview(raw)
        if qa is None:
            qa = bool(n_raw) and n_qa * 2 >= n_raw
        discovered, paths = self.discover(raw, qa, candidates) if n_raw else ({}, {})
        baseline_mode = kinds is None
        if kinds is None:
            kinds = {"latency_ms": RECORD_FIELDS["latency_ms"][0]}
            if qa:
                kinds |= {name: kind for name, (kind, _) in QA_FIELDS.items()}
            kinds |= discovered
        spec = [(name, kind, paths.get(name) or _field_of(name)) for name, kind in kinds.items()]
        feats = self.materialize(b.features_table(raw, spec))
        counts = self.run(b.counts(feats, len(spec)))[0]
        n, first, last = int(counts[0] or 0), counts[1], counts[2]
        features = self._features(feats, spec, n, counts)
        if baseline_mode:  # as in the Python engine: a field no record has a value for is no feature
            features = {k: f for k, f in features.items() if f.n_values or f.n_type_errors}
        extra = sorted(name for name in discovered if name not in kinds)
        profile = Profile(
            label=label,
            n_rows=n,
            qa=qa,
            kinds={name: kinds[name] for name in features},
            features=features,
            extra_fields=extra,
            first=datetime.fromtimestamp(float(first), UTC) if first is not None else None,
            last=datetime.fromtimestamp(float(last), UTC) if last is not None else None,
        )
        if n and first is not None:
            profile.series = self._series(feats, spec, features, float(last) - float(first))
        return profile

    def _features(
        self, feats: str, spec: list[tuple[str, str, Field | None]], n: int, counts: tuple[Any, ...]
    ) -> dict[str, Feature]:
        b = Builder(self.dialect)
        features: dict[str, Feature] = {}
        for i, (name, raw_kind, _) in enumerate(spec):
            n_values, n_errors = int(counts[3 + 2 * i] or 0), int(counts[4 + 2 * i] or 0)
            kind, description, group = _describe(name, raw_kind)
            feature = Feature(
                name=name,
                kind=kind,
                description=description,
                group=group,
                n_rows=n,
                n_values=n_values,
                values=[],
                n_type_errors=n_errors,
                check_completeness=name not in QA_FIELDS,
            )
            if n_values and kind == CATEGORICAL:
                rows = self.run(b.category_counts(feats, i))
                cats = {str(value): int(k) for value, k in rows[:MAX_CATEGORY_ROWS]}
                rest = n_values - sum(cats.values())
                if rest > 0:
                    cats[OTHER] = cats.get(OTHER, 0) + rest
                feature.counts = cats
            elif kind == CATEGORICAL:
                feature.counts = {}
            elif n_values:
                rows = self.run(b.numeric_sample(feats, i, n_values))
                sample = rows[0][0] if len(rows) == 1 and isinstance(rows[0][0], list) else [r[0] for r in rows]
                feature.values = [float(v) for v in sample if v is not None]
            features[name] = feature
        return features

    def _series(
        self, feats: str, spec: list[tuple[str, str, Field | None]], features: dict[str, Feature], span: float
    ) -> Series:
        seconds = bucket_seconds(span)
        names = series_features(list(features.values()))
        index = {name: i for i, (name, _, _) in enumerate(spec)}
        numeric = [index[name] for name in names]
        rows = self.run(Builder(self.dialect).series(feats, seconds, numeric))
        series = Series(
            seconds, [bucket_start(float(r[0]) * seconds, seconds) for r in rows], [int(r[1]) for r in rows]
        )
        for j, name in enumerate(names):
            qs = [r[2 + j] for r in rows]
            series.quantiles[name] = (
                [float(q[0]) if q is not None and q[0] is not None else None for q in qs],
                [float(q[1]) if q is not None and q[1] is not None else None for q in qs],
            )
        return series


def _field_of(name: str) -> Field | None:
    """The path of a baseline field the current window never showed (read as missing there)."""
    if name in QA_FIELDS or name in RECORD_FIELDS:
        return None
    side, _, rest = name.partition(".")
    if side not in ("input", "output") or not rest:
        return None
    array = rest.endswith(".length")
    keys = tuple(rest.removesuffix(".length").split(".", 1)) if array else tuple(rest.split(".", 1))
    return Field(side, keys, array=array)


def open_engine(name: str, data: DataSource, **options: Any) -> Engine:
    """The engine called ``name`` over ``data``; SourceError when it cannot start."""
    if name == "python":
        from capture_ext.report.engine_python import PythonEngine

        return PythonEngine(data, quiet=bool(options.get("quiet")))
    if name == "duckdb":
        from capture_ext.report.engine_duckdb import DuckDBEngine

        return DuckDBEngine(data, memory_limit=options.get("memory_limit"), threads=options.get("threads"))
    if name == "athena":
        from capture_ext.report.engine_athena import AthenaEngine

        return AthenaEngine(
            data,
            workgroup=options.get("workgroup"),
            database=options.get("database"),
            output=options.get("athena_output"),
        )
    raise SourceError(f"unknown engine {name!r}: one of {', '.join(ENGINES)}")
