"""``python -m capture_ext.core.config``: validate this environment, or print the generated docs tables.

It checks the extension's own variables and those of the sinks named in ``CAPTURE_SINKS``, as
those sinks declared them when they registered, so a missing bucket shows up here and not in a
Lambda log. ``--markdown`` prints both tables of docs/configuration.md from the same declarations.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping

from capture_ext.core.config import VARIABLES, Settings
from capture_ext.variables import ConfigError, Variable, config_fields, markdown_table


def builtin_sink_variables() -> tuple[tuple[Variable, ...], dict[str, list[str]]]:
    """The variables the built-in sinks register, and name -> the sinks that read it.

    Asked through the same registration path as every plugin, so the docs show what the sinks
    declare, not a copy.
    """
    from capture_ext.core.plugins import get_plugin_manager

    plugins = get_plugin_manager(load_entrypoints=True, disabled=())
    found: dict[str, Variable] = {}
    used_by: dict[str, list[str]] = {}
    for sink, variables in sorted(plugins.sink_variables().items()):
        if not plugins.is_builtin_sink(sink):
            continue
        for var in variables:
            found.setdefault(var.name, var)
            used_by.setdefault(var.name, []).append(sink)
    return tuple(found.values()), used_by


def markdown() -> str:
    """The two generated tables of ``docs/configuration.md``: core's, then the built-in sinks'."""
    sink_vars, used_by = builtin_sink_variables()
    return (
        "<!-- BEGIN VARIABLES -->\n"
        + markdown_table(VARIABLES)
        + "\n<!-- END VARIABLES -->\n\n"
        + "<!-- BEGIN SINK VARIABLES -->\n"
        + markdown_table(sink_vars, used_by)
        + "\n<!-- END SINK VARIABLES -->"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m capture_ext.core.config",
        description="Validate the CAPTURE_* variables of this environment (core's and those of the sinks in "
        "CAPTURE_SINKS), or print their documentation.",
    )
    parser.add_argument("--markdown", action="store_true", help="print the generated tables of docs/configuration.md")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown() + "\n")
        return 0
    settings = Settings.from_env()
    problems = list(settings.problems)
    for attr, var in config_fields(Settings):
        value = getattr(settings, attr)
        shown = "<hidden>" if var.secret and value else repr(value)  # secrets stay secret
        sys.stdout.write(f"{var.name}={shown}\n")
    problems += _check_sink_variables(settings, os.environ)
    for problem in problems:
        sys.stderr.write(f"error: {problem}\n")
    return 1 if problems else 0


def _check_sink_variables(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """Print the variables of the sinks in ``CAPTURE_SINKS``; return the problems of their values."""
    from capture_ext.core.plugins import get_plugin_manager

    plugin_logger = logging.getLogger("capture_ext.core.plugins")  # its problems are returned, not logged twice
    was_disabled, plugin_logger.disabled = plugin_logger.disabled, True
    try:
        plugins = get_plugin_manager(load_entrypoints=True, disabled=settings.disabled_plugins)
        declared = plugins.sink_variables()
    finally:
        plugin_logger.disabled = was_disabled
    problems = list(plugins.errors)
    seen: set[str] = set()
    for sink in dict.fromkeys(settings.sinks):
        for var in declared.get(sink, ()):
            try:
                value = var.read(env)
            except ConfigError as exc:
                problems.append(f"sink {sink!r}: {exc}")
                continue
            if var.name not in seen:
                seen.add(var.name)
                sys.stdout.write(f"{var.name}={'<hidden>' if var.secret and value else repr(value)}\n")
    return problems
