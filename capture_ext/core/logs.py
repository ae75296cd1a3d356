"""The extension's log lines, in the format Lambda's advanced logging controls ask for.

With ``AWS_LAMBDA_LOG_FORMAT=JSON`` Lambda expects every line on stdout/stderr to be one JSON
object, so CloudWatch Logs Insights and log subscriptions can filter on fields; the default
stays plain text. ``AWS_LAMBDA_LOG_LEVEL`` (TRACE, DEBUG, INFO, WARN, ERROR, FATAL) sets the
level unless ``CAPTURE_LOG_LEVEL`` is given, which always wins. Standard library only: this runs
before registration, on the cold-start path.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TextIO

#: Lambda's level names, as Python's.
LAMBDA_LEVELS = {
    "TRACE": "DEBUG",
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARN": "WARNING",
    "WARNING": "WARNING",
    "ERROR": "ERROR",
    "FATAL": "CRITICAL",
    "CRITICAL": "CRITICAL",
}
TEXT_FORMAT = "%(asctime)s [capture-ext] %(levelname)s %(name)s: %(message)s"

#: The request id of the INVOKE being handled, set by the lifecycle; "" between invokes.
current_request_id = ""


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp, level, message, logger, requestId (when known)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
        }
        if current_request_id:
            entry["requestId"] = current_request_id
        if record.exc_info:
            entry["errorType"] = record.exc_info[0].__name__ if record.exc_info[0] else "Exception"
            entry["stackTrace"] = self.formatException(record.exc_info).splitlines()
        elif record.stack_info:
            entry["stackTrace"] = record.stack_info.splitlines()
        return json.dumps(entry, ensure_ascii=False, default=str)


def wants_json(env: Mapping[str, str]) -> bool:
    return env.get("AWS_LAMBDA_LOG_FORMAT", "").strip().upper() == "JSON"


def level_from(env: Mapping[str, str], capture_level: str) -> str:
    """``CAPTURE_LOG_LEVEL`` when set (already validated), else Lambda's level, else INFO."""
    if env.get("CAPTURE_LOG_LEVEL", "").strip():
        return capture_level
    return LAMBDA_LEVELS.get(env.get("AWS_LAMBDA_LOG_LEVEL", "").strip().upper(), capture_level)


def configure(env: Mapping[str, str], capture_level: str, stream: TextIO | None = None) -> None:
    """Install the extension's one log handler on the root logger."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    as_json = wants_json(env)
    handler.setFormatter(JsonFormatter() if as_json else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_from(env, capture_level))
    logging.captureWarnings(True)  # a warnings.warn() would otherwise be a bare multi-line text
    if as_json:
        sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    # A traceback printed by the interpreter would be many lines, none of them JSON.
    logging.getLogger("capture_ext").critical("uncaught %s", kind.__name__, exc_info=(kind, exc, tb))
