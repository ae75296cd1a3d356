"""``capture-ext plugins``: what the extension would load, from where, and what is broken.

It runs the same discovery as the extension (entry-point group ``capture_ext``, honouring
``CAPTURE_DISABLED_PLUGINS``) and asks every plugin for its sinks, so "my sink is not picked up"
is answered here rather than in a Lambda log. Exit status 1 means something is wrong: a plugin
failed, ``CAPTURE_SINKS`` names a sink nobody registers, a selected sink's Python package (its
``requires``) is not installed, or one of its variables is missing or invalid. Every sink's
variables are listed as the sink registered them (``register(name, factory, variables=...)``).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from capture_ext.argparsing import OneLineParser
from capture_ext.core.config import Settings
from capture_ext.core.plugins import ENTRY_POINT_GROUP, Plugins, get_plugin_manager
from capture_ext.core.sink_setup import missing_requirement
from capture_ext.variables import ConfigError, Variable


def describe_variable(var: Variable, env: Mapping[str, str]) -> dict[str, Any]:
    """One declared variable as data; a secret's value is never included, only whether it is set."""
    return {
        "name": var.name,
        "default": None if var.required else var.default,
        "default_doc": var.default_doc or None,
        "required": var.required,
        "secret": var.secret,
        "doc": var.doc,
        "set": var.name in env,
    }


def collect(env: dict[str, str] | os._Environ[str]) -> dict[str, Any]:
    """Discover plugins as the extension does and describe them as plain data."""
    settings = Settings.from_env(env)
    plugins: Plugins = get_plugin_manager(load_entrypoints=True, disabled=settings.disabled_plugins)
    factories = plugins.sink_factories()
    declared = plugins.sink_variables()
    selected = []
    for name in settings.sinks:
        owner = plugins.sink_owner(name)
        entry: dict[str, Any] = {"name": name, "plugin": owner or None}
        if not owner:
            close = difflib.get_close_matches(name, sorted(factories), n=1)
            entry["error"] = f"no plugin registers sink {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
        else:
            missing = missing_requirement(factories[name])
            problems = [missing] if missing else []
            if bad := _invalid(declared.get(name, ()), env):
                problems.append(f"is misconfigured: {'; '.join(bad)}")
            if problems:
                entry["error"] = f"sink {name!r} " + "; it ".join(problems)
        selected.append(entry)
    return {
        "entry_point_group": ENTRY_POINT_GROUP,
        "load_ms": round(plugins.load_ms, 1),
        "disabled": list(settings.disabled_plugins),
        "plugins": [
            {
                "name": info.name,
                "module": info.module,
                "distribution": info.distribution or None,
                "version": info.version or None,
                "status": info.status,
                "sinks": sorted(info.sinks),
                "variables": {
                    sink: [describe_variable(var, env) for var in declared.get(sink, ())] for sink in sorted(info.sinks)
                },
                "hooks": info.hooks,
                "error": info.error or None,
            }
            for info in plugins.infos.values()
        ],
        "sinks": {name: plugins.sink_owner(name) for name in sorted(factories)},
        "selected": selected,
        "errors": plugins.errors + [entry["error"] for entry in selected if "error" in entry],
        "warnings": plugins.warnings,
    }


def _invalid(variables: tuple[Variable, ...], env: Mapping[str, str]) -> list[str]:
    problems = []
    for var in variables:
        try:
            var.read(env)
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def _variables_line(variables: list[dict[str, Any]]) -> str:
    cells = []
    for var in variables:
        shown = (var["default_doc"] or "").replace("`", "") or var["default"]
        default = "(required)" if var["required"] else f"={shown}" if shown else "=''"
        cells.append(f"{var['name']}{' ' if var['required'] else ''}{default}" + (" (secret)" if var["secret"] else ""))
    return ", ".join(cells)


def render(report: dict[str, Any]) -> str:
    """The human view: one line per plugin, then problems."""
    rows = []
    for p in report["plugins"]:
        origin = f"{p['distribution']} {p['version']}" if p["distribution"] else "(not installed)"
        detail = {
            "ok": "sinks: " + (", ".join(p["sinks"]) or "-"),
            "disabled": "disabled by CAPTURE_DISABLED_PLUGINS",
            "error": f"ERROR {p['error']}",
        }[p["status"]]
        if p["status"] == "error" and p["sinks"]:
            detail = "sinks: " + ", ".join(p["sinks"]) + f"; {detail}"
        if "capture_prepare_record" in p["hooks"]:
            detail += "; prepares records"
        rows.append((p["name"], origin, p["module"], detail))
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(3)]
    lines = [f"entry-point group {report['entry_point_group']!r}: {len(rows)} plugins in {report['load_ms']} ms"]
    for row, plugin in zip(rows, report["plugins"], strict=True):
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
        for sink, variables in plugin["variables"].items():
            if variables:
                lines.append(f"      {sink} reads: {_variables_line(variables)}")
    chosen = ", ".join(f"{s['name']} ({s['plugin'] or 'missing'})" for s in report["selected"])
    lines.append(f"CAPTURE_SINKS: {chosen or '-'}")
    lines += [f"warning: {warning}" for warning in report["warnings"]]
    if report["errors"]:
        lines.append(f"{len(report['errors'])} problem(s):")
        lines += [f"  - {error}" for error in report["errors"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="capture-ext plugins",
        description="List the installed capture-ext plugins, their distributions and the sinks they register.",
        epilog="Exit status 1 when a plugin failed to load, CAPTURE_SINKS names an unknown sink or a selected "
        "sink's Python package is not installed.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    args = parser.parse_args(argv)
    # Plugin failures are part of the report; keep the log handler from printing them twice.
    plugin_logger = logging.getLogger("capture_ext.core.plugins")
    was_disabled, plugin_logger.disabled = plugin_logger.disabled, True
    try:
        report = collect(os.environ)
    finally:
        plugin_logger.disabled = was_disabled
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(render(report) + "\n")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
