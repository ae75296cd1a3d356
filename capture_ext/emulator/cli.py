"""``capture-ext local`` / ``python -m capture_ext.emulator``: the function, its extensions
and an API Gateway front on localhost, serving until Ctrl-C, then a SHUTDOWN as Lambda sends it.

Every bad value is one line on stderr and exit status 2, never a traceback: this is the first
command a new user runs, often on a machine where the usual ports are taken.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from capture_ext.emulator import scope
from capture_ext.emulator.apigw import HEALTH_PATH, INVOKE_PATH, ApiGatewayFront
from capture_ext.emulator.model import Faults, SandboxFailure
from capture_ext.emulator.pool import EnvironmentPool

log = logging.getLogger("capture_ext.local")

PROG = "capture-ext local"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class UsageError(Exception):
    """A bad value found after parsing (a busy port, a missing folder): exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the message already names the option and value.
        self.exit(2, f"{PROG}: error: {message} (see {PROG} --help)\n")


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0-65535; 0 picks a free one)")
    return value


def _number(kind: type, low: float, high: float | None = None) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a{'n integer' if kind is int else ' number'}: {text!r}") from None
        if value < low or (high is not None and value > high) or value != value:
            bound = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def _log_level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"unknown level {text!r}; use one of {', '.join(LOG_LEVELS)}")
    return text.upper()


def _folder(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder" if path.exists() else f"{text!r} does not exist")
    return path.resolve()


def _handler(text: str) -> str:
    module, dot, function = text.rpartition(".")
    if not dot or not module or not function:
        raise argparse.ArgumentTypeError(f"expected module.function, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Run a Lambda function and its extensions locally: Runtime, Extensions and Telemetry APIs, "
        "real freezes between invokes, up to --concurrency environments, an API Gateway front. "
        "Ports and capture-ext's socket and spool are private to each run unless given. "
        "Ctrl-C sends SHUTDOWN and exits.",
        epilog="With capture-ext from a source checkout: capture-ext local --extensions-dir extensions "
        "--env CAPTURE_EXT_HOME=$PWD --env CAPTURE_EXT_PYTHON=$(command -v python) --env MODEL_DIR=... "
        "--env CAPTURE_S3_BUCKET=... (the launcher finds the extension's code in CAPTURE_EXT_HOME, "
        "/opt/capture-ext in the layer). Between invokes the sandbox is frozen, as on Lambda, so the "
        f"extension's own /v1/health cannot answer; GET {HEALTH_PATH} on the front thaws each idle "
        "environment to ask it.",
    )
    parser.add_argument(
        "--handler", type=_handler, default="inference_fn.app.handler", help="module.function (default: %(default)s)"
    )
    parser.add_argument("--task-root", type=_folder, default=Path(), help="the function code (LAMBDA_TASK_ROOT)")
    parser.add_argument(
        "--extensions-dir",
        type=_folder,
        default=None,
        help="its executables start as /opt/extensions",
    )
    parser.add_argument("--env", type=_env_pair, action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--port", type=_port, default=0, help="API Gateway front port on 127.0.0.1 (default: any free)")
    parser.add_argument("--route", action="append", default=None, metavar="METHOD:/PATH", help="default POST:/nlp-qa")
    parser.add_argument(
        "--runtime-api-port",
        type=_port,
        default=0,
        help="first AWS_LAMBDA_RUNTIME_API port (default: any)",
    )
    parser.add_argument(
        "--concurrency",
        type=_number(int, 1, 64),
        default=1,
        help="at most this many environments, each started when all others are busy (default: %(default)s)",
    )
    parser.add_argument("--telemetry", choices=["on", "stub"], default="on", help="stub answers like AWS's RIE")
    parser.add_argument(
        "--rie",
        action="store_true",
        help="behave like AWS's Runtime Interface Emulator (docs/emulator.md, RIE mode): start at the first invoke, "
        "hold the response until the extensions are done, no freeze, no telemetry",
    )
    parser.add_argument("--no-freeze", action="store_true", help="do not SIGSTOP the sandbox between invokes")
    parser.add_argument("--timeout", type=_number(float, 0.001), default=30.0, help="function timeout in seconds")
    parser.add_argument(
        "--init-timeout", type=_number(float, 0.001), default=10.0, help="init limit in s (Lambda: 10; retried once)"
    )
    parser.add_argument("--memory", type=_number(int, 128, 10240), default=1024, help="memory size reported in MB")
    parser.add_argument("--function-name", default="capture-fn")
    parser.add_argument(
        "--shutdown-budget-ms", type=_number(int, 1, 60000), default=2000, help="total SHUTDOWN budget (Lambda: 2000)"
    )
    parser.add_argument("--log-level", type=_log_level, default="INFO", help=f"one of {', '.join(LOG_LEVELS)}")
    return parser


def _routes(specs: list[str] | None) -> list[tuple[str, str]]:
    routes = []
    for spec in specs or ["POST:/nlp-qa"]:
        method, sep, path = spec.partition(":")
        if not sep or not method.isalpha() or not path.startswith("/"):
            raise UsageError(f"--route must look like POST:/path, got {spec!r}")
        routes.append((method.upper(), path))
    return routes


def _bind_error(exc: OSError, what: str, port: int) -> UsageError:
    if exc.errno == errno.EADDRINUSE:
        return UsageError(f"{what} port {port} on 127.0.0.1 is busy; pick another or 0 for any free port")
    return UsageError(f"cannot listen on 127.0.0.1:{port} for {what}: {exc.strerror or exc}")


async def serve(args: argparse.Namespace) -> int:
    routes = _routes(args.route)
    if args.rie and args.concurrency > 1:
        raise UsageError("--rie runs one environment, as AWS's RIE does; leave out --concurrency")
    try:
        pool = EnvironmentPool(
            args.handler,
            args.task_root,
            args.extensions_dir,
            dict(args.env),
            concurrency=args.concurrency,
            telemetry=args.telemetry,
            freeze=not args.no_freeze,
            timeout_s=args.timeout,
            runtime_api_port=args.runtime_api_port,
            memory_mb=args.memory,
            init_timeout_s=args.init_timeout,
            function_name=args.function_name,
            shutdown_budget_ms=args.shutdown_budget_ms,
            faults=Faults(),
            rie=args.rie,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def exit_now() -> None:
        print("second interrupt: killing every process of the emulator and exiting now", file=sys.stderr, flush=True)
        scope.kill_scope(scope.EMULATOR_SCOPE)
        os._exit(130)

    def first_signal(sig: signal.Signals) -> None:
        print(
            f"{sig.name}: shutting down (invokes in flight are answered with an error); "
            "press Ctrl-C again to exit at once",
            file=sys.stderr,
            flush=True,
        )
        for again in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(again, exit_now)
        pool.interrupt(f"the emulator received {sig.name}")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, first_signal, sig)
    front = ApiGatewayFront(pool, routes)
    try:
        try:
            url = await front.start(args.port)
        except OSError as exc:
            raise _bind_error(exc, "the API Gateway front", args.port) from None
        try:
            # RIE starts the environment inside the first invoke; Lambda mode shows init errors now.
            slot = await (pool.start() if args.rie else pool.init())
        except OSError as exc:
            raise _bind_error(exc, "the Runtime API", args.runtime_api_port) from None
        except SandboxFailure as failure:
            print(f"init failed: {failure.error_type}: {failure.message}", file=sys.stderr)
            for line in pool.logs("runtime")[-20:]:
                print(f"  | {line}", file=sys.stderr)
            return 1
        emu = slot.emulator
        state = "not started yet (RIE mode: at the first invoke)" if args.rie else "initialised"
        print(f"Lambda APIs on http://{emu.runtime_api}; function {args.handler} {state}")
        print(f"  environment 0: /tmp is {slot.tmp}; CAPTURE_PORT={slot.capture_port}; "
              f"CAPTURE_SOCKET={emu.config.env['CAPTURE_SOCKET']}")  # fmt: skip
        if args.concurrency > 1:
            print(f"  up to {args.concurrency} environments, each started when all others are busy")
        for method, path in routes:
            print(f"  {method} {url}{path}")
        print(f"  POST {url}{INVOKE_PATH}  (direct invoke)")
        print(f"  GET  {url}{HEALTH_PATH}  (capture-ext health of each idle environment, thawed for the call)")
        print(
            f"try: curl -s -X POST {url}{routes[0][1]} -H 'Content-Type: application/json' "
            """-d '{"question": "Who wrote it?", "context": "It was written by Ada."}'"""
        )
        print("Ctrl-C to shut down", flush=True)
        await stop.wait()
    finally:
        await front.close()
        await pool.shutdown()
        await pool.close()
    for slot in pool.environments:
        # An environment ended by the interrupt itself is already retired: its report is its last.
        boxes = slot.emulator.environments
        report = slot.shutdown_report or (boxes[-1].report if boxes else None)
        if report is not None:
            killed = ", ".join(report.killed) or "none"
            print(f"\nSHUTDOWN ({report.reason}) of environment {slot.index} took {report.duration_ms:.0f} ms; "
                  f"SIGKILLed: {killed}; invokes served: {slot.invokes}")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(serve(args))
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 130


if __name__ == "__main__":
    sys.exit(main())
