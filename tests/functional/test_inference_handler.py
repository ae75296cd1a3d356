"""The Lambda handler on the tiny wired model, its capture checked on a real Unix socket.

The listener below is a plain ``AF_UNIX`` stream server reading the NDJSON lines that
``capture_ext.client`` writes, the same bytes the extension's ingest would receive.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import uuid
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

import capture_ext.client as capture_client
from tests.functional.inference_support import (  # noqa: F401  (fixtures)
    CONTEXT,
    EVENTS,
    EXPECTED,
    QUESTION,
    SocketListener,
    api_event,
    app_fixture,
    capture_env_fixture,
    lambda_context,
    listener_fixture,
)
from tests.qa_models import tiny_model


def test_api_request_is_answered_and_captured(app: Any, listener: SocketListener) -> None:
    context = lambda_context()
    response = app.handler(api_event(json.dumps({"question": QUESTION, "context": CONTEXT})), context)

    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == "application/json"
    body = json.loads(response["body"])
    assert body["Question"] == QUESTION
    assert body["Answer"] == EXPECTED
    assert 0.0 < body["score"] <= 1.0
    assert uuid.UUID(hex=body["inference_id"]).hex == body["inference_id"]

    (record,) = listener.records(1)
    assert record["inference_id"] == body["inference_id"]
    assert record["request_id"] == context.aws_request_id
    assert record["model"] == {"name": "tiny-distilbert-qa-wired", "version": "seed0-paris-france"}
    assert record["input"] == {"question": QUESTION, "context": CONTEXT}
    assert record["output"]["answer"] == EXPECTED
    assert record["output"]["score"] == pytest.approx(body["score"])
    assert CONTEXT[record["output"]["start"] : record["output"]["end"]] == EXPECTED
    assert isinstance(record["latency_ms"], float) and record["latency_ms"] > 0
    assert record["metadata"] == {"source": "api"}
    # The decorator tells the extension the handler is done, for the same request.
    done = [line for line in listener.drain() if capture_client.CONTROL_KEY in line]
    assert done == [{capture_client.CONTROL_KEY: "done", "request_id": context.aws_request_id}]


def test_direct_invocation_returns_the_document(app: Any, listener: SocketListener) -> None:
    result = app.handler({"question": QUESTION, "context": CONTEXT}, lambda_context())
    assert set(result) == {"Question", "Answer", "score", "inference_id"}
    assert result["Answer"] == EXPECTED
    (record,) = listener.records(1)
    assert record["metadata"] == {"source": "direct"}
    assert record["inference_id"] == result["inference_id"]


def test_base64_http_api_body_is_decoded(app: Any, listener: SocketListener) -> None:
    event = api_event(json.dumps({"question": QUESTION, "context": CONTEXT}), b64=True)
    response = app.handler(event, lambda_context())
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["Answer"] == EXPECTED


def test_model_is_loaded_once_across_invocations(app: Any, listener: SocketListener) -> None:
    ids = set()
    for i in range(4):
        context = f"{CONTEXT} Round {i}."
        result = app.handler({"question": QUESTION, "context": context}, lambda_context())
        ids.add(result["inference_id"])
    assert app.MODEL.loads == 1
    assert len(ids) == 4
    assert len({r["request_id"] for r in listener.records(4)}) == 4


def test_model_is_loaded_at_import_when_model_dir_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """In Lambda, MODEL_DIR is set before the runtime imports the handler: the init loads the model."""
    import importlib
    import sys

    import inference_fn

    monkeypatch.setenv("MODEL_DIR", str(tiny_model("wired")))
    # A fresh import, undone afterwards (module table and package attribute) so other tests keep theirs.
    monkeypatch.delitem(sys.modules, "inference_fn.app", raising=False)
    monkeypatch.delattr(inference_fn, "app", raising=False)
    module = importlib.import_module("inference_fn.app")
    assert module.MODEL.loads == 1
    monkeypatch.delitem(sys.modules, "inference_fn.app")
    monkeypatch.delattr(inference_fn, "app")


BAD_BODIES = [
    (None, 400, "request body is missing"),
    ('{"question": "Which city?", "context": ', 400, "request body is not valid JSON"),
    (json.dumps([QUESTION, CONTEXT]), 400, "expected a JSON object"),
    (json.dumps({"context": CONTEXT}), 400, "missing field 'question'"),
    (json.dumps({"question": QUESTION}), 400, "missing field 'context'"),
    (json.dumps({"question": None, "context": CONTEXT}), 400, "missing field 'question'"),
    (json.dumps({"question": "", "context": CONTEXT}), 400, "field 'question' is empty"),
    (json.dumps({"question": QUESTION, "context": " \n\t"}), 400, "field 'context' is empty"),
    (json.dumps({"question": 42, "context": CONTEXT}), 400, "field 'question' must be a string, not int"),
    (json.dumps({"question": QUESTION, "context": "x" * 20_001}), 413, "field 'context' is 20001 characters"),
    (json.dumps({"question": "q" * 1_001, "context": CONTEXT}), 413, "field 'question' is 1001 characters"),
    (
        json.dumps({"question": " ".join(["a"] * 100), "context": CONTEXT}),
        413,
        "question is 100 tokens; the limit is 64",
    ),
]


@pytest.mark.parametrize(("body", "status", "problem"), BAD_BODIES, ids=[p for _, _, p in BAD_BODIES])
def test_bad_requests_get_a_4xx_naming_the_problem(
    app: Any, listener: SocketListener, body: str | None, status: int, problem: str
) -> None:
    context = lambda_context()
    response = app.handler(api_event(body), context)
    assert response["statusCode"] == status
    assert response["headers"]["Content-Type"] == "application/json"
    error = json.loads(response["body"])
    assert problem in error["error"]
    # Nothing was answered, but the refusal is captured, flagged, under the id the caller got.
    (record,) = listener.records(1)
    assert record["inference_id"] == error["inference_id"]
    assert record["request_id"] == context.aws_request_id
    assert record["metadata"] == {"source": "api", "rejected": True, "status": status, "error": error["error"]}
    assert "output" not in record


def test_invalid_base64_is_a_400(app: Any, listener: SocketListener) -> None:
    event = api_event("not base64!!")
    event["isBase64Encoded"] = True
    response = app.handler(event, lambda_context())
    assert response["statusCode"] == 400
    assert "base64" in json.loads(response["body"])["error"]


def test_bad_direct_invocation_names_the_problem(app: Any, listener: SocketListener) -> None:
    response = app.handler({"context": CONTEXT}, lambda_context())
    assert response == {"statusCode": 400, "error": "missing field 'question'", "inference_id": ANY}
    assert app.handler(["not", "a", "dict"], lambda_context())["statusCode"] == 400


@pytest.mark.parametrize("failure", ["no extension", "extension hangs up", "sampled out"])
def test_capture_failure_never_changes_the_answer(
    app: Any, capture_env: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    event = {"question": QUESTION, "context": CONTEXT}
    closer: socket.socket | None = None
    if failure == "extension hangs up":
        # Accepts the connection and closes it at once, like an extension that crashed mid-invoke.
        closer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        closer.bind(str(capture_env))
        closer.listen()
        threading.Thread(target=lambda: closer.accept()[0].close(), daemon=True).start()
    elif failure == "sampled out":
        monkeypatch.setenv("CAPTURE_SAMPLE_RATE", "0")
    try:
        results = [app.handler(dict(event), lambda_context()) for _ in range(3)]
    finally:
        if closer is not None:
            closer.close()
    assert {r["Answer"] for r in results} == {EXPECTED}
    assert len({r["inference_id"] for r in results}) == 3


def test_missing_model_fails_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capture_env: Path) -> None:
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "nothing-here"))
    from inference_fn import app as module

    monkeypatch.setattr(module, "MODEL", module.ModelHolder())
    response = module.handler(api_event(json.dumps({"question": QUESTION, "context": CONTEXT})), lambda_context())
    assert response["statusCode"] == 500
    assert json.loads(response["body"])["error"] == "internal error"
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        module.handler({"question": QUESTION, "context": CONTEXT}, lambda_context())


def documented_status(name: str) -> int | None:
    """The status events/README.md's table gives a sample event (None: the answer document itself)."""
    for line in (EVENTS / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0] == f"`{name}`":
            found = re.search(r"\b\d{3}\b", cells[2])
            return int(found.group()) if found else None
    raise AssertionError(f"{name} is not in events/README.md")


@pytest.mark.parametrize("path", sorted(EVENTS.glob("*.json")), ids=lambda p: p.name)
def test_sample_events(app: Any, listener: SocketListener, path: Path) -> None:
    event = json.loads(path.read_text())
    result = app.handler(event, lambda_context())
    status = documented_status(path.name)
    if status is None:
        assert result["Answer"] == EXPECTED
        return
    assert result["statusCode"] == status
    if status == 200:
        assert json.loads(result["body"])["Answer"] == EXPECTED
    else:
        error = json.loads(result["body"])["error"] if "body" in result else result["error"]
        assert error
