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
from capture_ext.report.source import SourceError, Window
from capture_ext.report.sql import MAX_CATEGORY_ROWS, OTHER, Builder, Dialect, Field, kind_of, validate
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

    def close(self) -> None:
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

    def rows(self, window: Window) -> str:
        return Builder(self.dialect).windowed(self.source(window), window.start, window.end)

    def split_time(self, window: Window) -> tuple[int, datetime | None]:
        b = Builder(self.dialect)
        rows = self.rows(window)
        n = int(self.run(f"SELECT count(*) FROM ({rows}) AS r")[0][0])
        if n < 2:
            return n, None
        value = self.run(b.median_ts(rows, n))[0][0]
        return n, datetime.fromtimestamp(float(value), UTC)

    def discover(self, rows: str, qa: bool) -> tuple[dict[str, str], dict[str, Field]]:
        """Each flat input/output field seen in ``rows``: its kind and how to read it."""
        found: dict[str, dict[str, tuple[int, int, int]]] = {}
        paths: dict[str, Field] = {}
        for side, k1, k2, t, n, maxlen, nd in self.run(Builder(self.dialect).fields(rows)):
            keys = (k1,) if k2 is None else (k1, k2)
            f = Field(side, keys, array=t == "a")
            name = f.name
            if qa and name.lower() in QA_CONSUMED:
                continue
            paths.setdefault(name, f)
            found.setdefault(name, {})[t] = (int(n), int(maxlen or 0), int(nd or 0))
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
        rows = self.rows(window)
        n, first, last, n_qa = self.run(b.overview(rows))[0]
        n = int(n or 0)
        if qa is None:
            qa = bool(n) and int(n_qa) * 2 >= n
        discovered, paths = self.discover(rows, qa) if n else ({}, {})
        baseline_mode = kinds is None
        if kinds is None:
            kinds = {"latency_ms": RECORD_FIELDS["latency_ms"][0]}
            if qa:
                kinds |= {name: kind for name, (kind, _) in QA_FIELDS.items()}
            kinds |= discovered
        spec = [(name, kind, paths.get(name) or _field_of(name)) for name, kind in kinds.items()]
        columns = b.feature_columns(spec)
        feats = self.materialize(b.features_table(rows, columns))
        features = self._features(feats, spec, n)
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

    def _features(self, feats: str, spec: list[tuple[str, str, Field | None]], n: int) -> dict[str, Feature]:
        b = Builder(self.dialect)
        counts = self.run(b.counts(feats, len(spec)))[0]
        features: dict[str, Feature] = {}
        for i, (name, raw_kind, _) in enumerate(spec):
            n_values, n_errors = int(counts[1 + 2 * i] or 0), int(counts[2 + 2 * i] or 0)
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
                sample = self.run(b.numeric_sample(feats, i, n_values))[0][0] or []
                feature.values = [float(v) for v in sample if v is not None]
            features[name] = feature
        return features

    def _series(
        self, feats: str, spec: list[tuple[str, str, Field | None]], features: dict[str, Feature], span: float
    ) -> Series:
        seconds = bucket_seconds(span)
        names = series_features([f for f in features.values()])
        index = {name: i for i, (name, _, _) in enumerate(spec)}
        numeric = [index[name] for name in names]
        rows = self.run(Builder(self.dialect).series(feats, seconds, numeric))
        series = Series(seconds, [bucket_start(float(r[0]) * seconds, seconds) for r in rows], [int(r[1]) for r in rows])
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
