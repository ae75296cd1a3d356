"""The reference engine: every record of the window in memory, descriptors computed in Python.

Fine for small data (tests, a quick look at a few thousand records) and the yardstick the SQL
engines are checked against; its memory grows with the window, so ``duckdb`` is the default.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from capture_ext.report.descriptors import Profile, build_profile
from capture_ext.report.engine import DataSource, Engine
from capture_ext.report.source import Window, read_records


class PythonEngine(Engine):
    name = "python"

    def __init__(self, data: DataSource, quiet: bool = False) -> None:
        self.data = data
        self.quiet = quiet
        self._cache: dict[Window, list[dict[str, Any]]] = {}

    def records(self, window: Window) -> list[dict[str, Any]]:
        scope = self.scope or window
        if scope not in self._cache:
            self._cache[scope] = read_records(
                self.data.uri, scope, fmt=self.data.fmt, function=self.data.function, quiet=self.quiet
            )
        return [r for r in self._cache[scope] if window.contains(r["_ts"])]

    def profile(
        self, window: Window, label: str, kinds: dict[str, str] | None = None, qa: bool | None = None
    ) -> Profile:
        return build_profile(self.records(window), label, kinds=kinds, qa=qa)

    def split_time(self, window: Window) -> tuple[int, datetime | None]:
        records = self.records(window)
        if len(records) < 2:
            return len(records), None
        stamp: datetime = records[len(records) // 2]["_ts"]
        return len(records), stamp
