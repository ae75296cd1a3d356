"""``python -m capture_ext``: run the capture extension (what /opt/extensions/capture-ext starts).

Start-up is the function's cold start, so this module imports as little as possible before
registering with the Extensions API; sinks import their SDKs on first use.
"""

from __future__ import annotations

import time

STARTED_AT = time.monotonic()

import argparse  # noqa: E402 - the start time is taken before any import on purpose
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def parse_args(argv: list[str] | None, prog: str = "python -m capture_ext") -> argparse.Namespace:
    from capture_ext.cli import OneLineParser

    parser = OneLineParser(
        prog=prog,
        description="Run the capture-ext Lambda extension. Needs AWS_LAMBDA_RUNTIME_API; "
        "configured through CAPTURE_* environment variables (docs/configuration.md).",
    )
    parser.add_argument(
        "--name",
        default="capture-ext",
        help="extension name to register (Lambda requires the launcher's file name; default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str = "python -m capture_ext") -> int:
    args = parse_args(argv, prog)
    from capture_ext.core import logs
    from capture_ext.core.config import Settings

    settings = Settings.from_env()
    # Plain text, or one JSON object per line under Lambda's AWS_LAMBDA_LOG_FORMAT=JSON.
    logs.configure(os.environ, settings.log_level)
    log = logging.getLogger("capture_ext")
    runtime_api = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not runtime_api:  # the only place it is read: the lifecycle is handed the address
        log.error("AWS_LAMBDA_RUNTIME_API is not set: capture-ext runs only as a Lambda extension")
        return 2
    # Register first, with the standard library only: Lambda starts the function's runtime as soon
    # as every extension has registered, so nothing else may stand before this call.
    from capture_ext.core.registration import LambdaAPIError, register_blocking

    try:
        registration = register_blocking(runtime_api, args.name)
    except (LambdaAPIError, OSError, ValueError) as exc:
        log.error("could not register as extension %r: %s", args.name, exc)
        return 1
    log.info("registered as %r in %.1f ms", args.name, (time.monotonic() - STARTED_AT) * 1000)

    import asyncio

    from capture_ext.core.lifecycle import Extension, install_signal_handlers

    extension = Extension(settings, registration, runtime_api, started_at=STARTED_AT)

    async def run() -> int:
        task = asyncio.current_task()
        if task is not None:
            install_signal_handlers(asyncio.get_running_loop(), task)
        try:
            code = await extension.run()
        except asyncio.CancelledError:
            logging.getLogger("capture_ext").warning("stopped by a signal outside a SHUTDOWN event")
            return 1
        if extension.shut_down:
            # The drain is over and the spool is closed: leave now. asyncio.run's teardown (waiting
            # for worker threads) and interpreter finalisation can take longer than the few
            # milliseconds left before Lambda's SIGKILL.
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
