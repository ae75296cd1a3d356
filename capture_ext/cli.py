"""``capture-ext``: one command for the tools around the extension.

Each subcommand lives in its own module with an argparse ``main(argv) -> int``; this file only
dispatches. Each command is imported inside its own function, so ``capture-ext --help`` stays
instant and static checks (mypy, import rules) still see every edge.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from capture_ext.argparsing import OneLineParser

Command = Callable[[list[str]], int]

__all__ = ["OneLineParser", "main"]


def _run(argv: list[str]) -> int:
    from capture_ext.__main__ import main as run_main

    return run_main(argv, prog="capture-ext run")


def _local(argv: list[str]) -> int:
    try:
        from capture_ext.emulator.cli import main as local_main
    except ModuleNotFoundError as exc:  # aiohttp / awslambdaric come with the testing extra
        print(f"capture-ext local: error: needs {exc.name}: pip install 'capture-ext[testing]'", file=sys.stderr)
        return 2
    return local_main(argv)


def _plugins(argv: list[str]) -> int:
    from capture_ext.core.plugins_cli import main as plugins_main

    return plugins_main(argv)


def _report(argv: list[str]) -> int:
    from capture_ext.report import main as report_main

    return report_main(argv)


def _sample_data(argv: list[str]) -> int:
    from capture_ext.report.synth import main as sample_main

    return sample_main(argv)


COMMANDS: dict[str, tuple[Command, str]] = {
    "run": (_run, "run the extension (what /opt/extensions/capture-ext starts)"),
    "local": (_local, "run function + extension in the local Lambda emulator"),
    "plugins": (_plugins, "list installed plugins and the sinks they register"),
    "report": (_report, "drift report over captured data (HTML + violations.json)"),
    "sample-data": (_sample_data, "write synthetic QA capture data (demos, benchmarks)"),
}


def main(argv: list[str] | None = None) -> int:
    from capture_ext import __version__

    argv = sys.argv[1:] if argv is None else argv
    parser = OneLineParser(
        prog="capture-ext",
        description="Inference data capture for AWS Lambda.",
        epilog="Run 'capture-ext COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"capture-ext {__version__}")
    summary = "; ".join(f"{name}: {help_text}" for name, (_, help_text) in COMMANDS.items())
    parser.add_argument("command", choices=sorted(COMMANDS), help=summary)
    if not argv:
        parser.error(f"a command is required: {', '.join(sorted(COMMANDS))}")
    if argv[0] in {"-h", "--help", "--version"}:
        parser.parse_args(argv[:1])  # prints, then exits 0
    if argv[0].startswith("-"):
        parser.error(f"unknown option {argv[0]!r}; the command comes first")
    args = parser.parse_args(argv[:1])
    return COMMANDS[args.command][0](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
