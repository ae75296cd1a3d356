"""The extension's log format and level under Lambda's advanced logging controls."""

import io
import json
import logging

import pytest

from capture_ext.core import logs
from capture_ext.core.lambda_api import Event


@pytest.fixture(autouse=True)
def _restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logs.current_request_id = ""


@pytest.mark.parametrize(
    ("env", "level"),
    [
        ({}, "INFO"),
        ({"AWS_LAMBDA_LOG_LEVEL": "WARN"}, "WARNING"),
        ({"AWS_LAMBDA_LOG_LEVEL": "trace"}, "DEBUG"),
        ({"AWS_LAMBDA_LOG_LEVEL": "FATAL"}, "CRITICAL"),
        ({"AWS_LAMBDA_LOG_LEVEL": "DEBUG", "CAPTURE_LOG_LEVEL": "ERROR"}, "ERROR"),  # ours wins
        ({"AWS_LAMBDA_LOG_LEVEL": "nonsense"}, "INFO"),
    ],
)
def test_level(env, level):
    capture_level = env.get("CAPTURE_LOG_LEVEL", "INFO")
    assert logs.level_from(env, capture_level) == level


def test_json_lines_carry_the_request_id_and_keep_tracebacks_on_one_line():
    stream = io.StringIO()
    logs.configure({"AWS_LAMBDA_LOG_FORMAT": "json"}, "INFO", stream)
    log = logging.getLogger("capture_ext.test")
    log.info("before any invoke")
    logs.current_request_id = "req-1"
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("failed: %s", "multi\nline")
    log.debug("not shown at INFO")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "before any invoke" and "requestId" not in first
    assert first["level"] == "INFO" and first["logger"] == "capture_ext.test"
    assert first["timestamp"].endswith("Z") and len(first["timestamp"]) == len("2026-01-01T00:00:00.000Z")
    assert second["requestId"] == "req-1" and second["errorType"] == "ValueError"
    assert second["message"] == "failed: multi\nline"
    assert any("boom" in line for line in second["stackTrace"])


def test_plain_text_stays_the_default():
    stream = io.StringIO()
    logs.configure({}, "INFO", stream)
    logging.getLogger("capture_ext.test").warning("hello")
    assert stream.getvalue().rstrip().endswith("[capture-ext] WARNING capture_ext.test: hello")


def test_invoke_event_carries_its_trace_header():
    body = json.dumps(
        {"eventType": "INVOKE", "requestId": "r", "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1"}}
    )
    assert Event.parse(body.encode()).trace_id == "Root=1"
    assert Event.parse(b'{"eventType": "SHUTDOWN"}').trace_id == ""
