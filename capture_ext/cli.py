"""``capture-ext``: one command for the tools around the extension.

Each subcommand lives in its own module with an argparse ``main(argv) -> int``; this file only
dispatches, importing the chosen module lazily so ``capture-ext --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("capture_ext.__main__", "run the extension (what /opt/extensions/capture-ext starts)"),
    "local": ("capture_ext.testing.emulator.cli", "run function + extension in the local Lambda emulator"),
    "plugins": ("capture_ext.core.plugins_cli", "list installed plugins and the sinks they register"),
    "report": ("capture_ext.report", "drift report over captured data (HTML + violations.json)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="capture-ext",
        description="Inference data capture for AWS Lambda.",
        epilog="Run 'capture-ext COMMAND --help' for the options of a command.",
    )
    summary = "; ".join(f"{name}: {help_text}" for name, (_, help_text) in COMMANDS.items())
    parser.add_argument("command", choices=sorted(COMMANDS), help=summary)
    if not argv or argv[0] in {"-h", "--help"}:
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    module = importlib.import_module(COMMANDS[args.command][0])
    result: int = module.main(argv[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())
