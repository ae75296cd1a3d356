"""``capture-ext local`` / ``python -m capture_ext.emulator``: the function, its extensions
and an API Gateway front on localhost, serving until Ctrl-C, then a SHUTDOWN as Lambda sends it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from capture_ext.emulator.apigw import ApiGatewayFront
from capture_ext.emulator.emulator import LambdaEmulator
from capture_ext.emulator.model import Faults, SandboxFailure

log = logging.getLogger("capture_ext.local")


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capture-ext local",
        description="Run a Lambda function and its extensions locally: Runtime, Extensions and Telemetry APIs, "
        "real freezes between invokes, an API Gateway front. Ctrl-C sends SHUTDOWN and exits.",
        epilog="With capture-ext from a source checkout: capture-ext local --extensions-dir extensions "
        "--env CAPTURE_EXT_HOME=$PWD --env CAPTURE_EXT_PYTHON=$(command -v python) --env MODEL_DIR=... "
        "--env CAPTURE_S3_BUCKET=... (the launcher finds the extension's code in CAPTURE_EXT_HOME, "
        "/opt/capture-ext in the layer).",
    )
    parser.add_argument("--handler", default="inference_fn.app.handler", help="module.function (default: %(default)s)")
    parser.add_argument("--task-root", type=Path, default=Path(), help="the function code (LAMBDA_TASK_ROOT)")
    parser.add_argument(
        "--extensions-dir", type=Path, default=None, help="directory whose executables are started as /opt/extensions"
    )
    parser.add_argument("--env", type=_env_pair, action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--port", type=int, default=3000, help="API Gateway front port on 127.0.0.1 (0 = any)")
    parser.add_argument("--route", action="append", default=None, metavar="METHOD:/PATH", help="default POST:/nlp-qa")
    parser.add_argument(
        "--runtime-api-port", type=int, default=9001, help="AWS_LAMBDA_RUNTIME_API port on 127.0.0.1 (0 = any)"
    )
    parser.add_argument("--telemetry", choices=["on", "stub"], default="on", help="stub answers like AWS's RIE")
    parser.add_argument("--no-freeze", action="store_true", help="do not SIGSTOP the sandbox between invokes")
    parser.add_argument("--timeout", type=float, default=30.0, help="function timeout in seconds")
    parser.add_argument(
        "--init-timeout", type=float, default=10.0, help="init limit in s (Lambda: 10; then retried once)"
    )
    parser.add_argument("--memory", type=int, default=1024, help="memory size reported in MB")
    parser.add_argument("--function-name", default="capture-fn")
    parser.add_argument("--shutdown-budget-ms", type=int, default=2000, help="total SHUTDOWN budget (Lambda: 2000)")
    parser.add_argument("--log-level", default="INFO")
    return parser


async def serve(args: argparse.Namespace) -> int:
    routes = []
    for spec in args.route or ["POST:/nlp-qa"]:
        method, sep, path = spec.partition(":")
        if not sep or not path.startswith("/"):
            raise SystemExit(f"--route must look like POST:/path, got {spec!r}")
        routes.append((method.upper(), path))
    emulator = LambdaEmulator(
        args.handler,
        args.task_root.resolve(),
        args.extensions_dir.resolve() if args.extensions_dir else None,
        dict(args.env),
        telemetry=args.telemetry,
        freeze=not args.no_freeze,
        timeout_s=args.timeout,
        runtime_api_port=args.runtime_api_port,
        memory_mb=args.memory,
        init_timeout_s=args.init_timeout,
        function_name=args.function_name,
        shutdown_budget_ms=args.shutdown_budget_ms,
        faults=Faults(),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await emulator.start()
    front = ApiGatewayFront(emulator, routes)
    try:
        url = await front.start(args.port)
        try:
            await emulator.init()
        except SandboxFailure as failure:
            print(f"init failed: {failure.error_type}: {failure.message}", file=sys.stderr)
            for line in emulator.logs("runtime")[-20:]:
                print(f"  | {line}", file=sys.stderr)
            return 1
        print(f"Lambda APIs on http://{emulator.runtime_api}; function {args.handler} initialised")
        for method, path in routes:
            print(f"  {method} {url}{path}")
        print(f"  POST {url}/2015-03-31/functions/function/invocations  (direct invoke)")
        print(
            f"try: curl -s -X POST {url}{routes[0][1]} -H 'Content-Type: application/json' "
            """-d '{"question": "Who wrote it?", "context": "It was written by Ada."}'"""
        )
        print("Ctrl-C to shut down", flush=True)
        await stop.wait()
    finally:
        await front.close()
        report = await emulator.shutdown()
        await emulator.close()
    served = len(emulator.results)
    if report is not None:
        killed = ", ".join(report.killed) or "none"
        print(f"\nSHUTDOWN (spindown) took {report.duration_ms:.0f} ms; SIGKILLed: {killed}; invokes served: {served}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(serve(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
