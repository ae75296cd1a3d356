"""Drift monitoring over captured data: ``capture-ext report`` / ``python -m capture_ext.report``.

Importing this package stays cheap: pyarrow, scipy and matplotlib load only when a report runs.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the report command; see :mod:`capture_ext.report.cli` for options and exit codes."""
    from capture_ext.report.cli import main as _main

    return _main(argv)


__all__ = ["main"]
