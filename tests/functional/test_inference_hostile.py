"""Hostile requests to the QA function, through both of its fronts: each gets a 400 or a 413 that names
the problem, never a 500, costs bounded work, and is captured flagged with its error.

The API Gateway front gets the body text as API Gateway passes it; the direct front gets what the
Lambda runtime hands the handler: awslambdaric parses the invoke payload with ``simplejson``, so
``direct()`` does too. Payloads the runtime itself cannot parse (nested 50k deep, a 5,000-digit
number) never reach the handler on that front (``Runtime.UnmarshalError``), so those cases run on
the API front only; tests/e2e/test_inference_hostile.py sends them through both real fronts.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
import simplejson

import capture_ext.client as capture_client
from tests.functional.inference_support import (  # noqa: F401  (fixtures)
    CONTEXT,
    QUESTION,
    SocketListener,
    api_event,
    app_fixture,
    capture_env_fixture,
    lambda_context,
    listener_fixture,
)

DEEP = 50_000


def doc(question: str = json.dumps(QUESTION), context: str = json.dumps(CONTEXT)) -> str:
    """A request document with its two values given as raw JSON text (so escapes stay as sent)."""
    return f'{{"question": {question}, "context": {context}}}'


#: (id, payload text, status, what the error must say, parseable by the runtime for a direct invoke)
PAYLOADS: list[tuple[str, str, int, str, bool]] = [
    ("lone high surrogate", doc(question='"who \\ud800"'), 400, "lone UTF-16 surrogate (U+D800) at character 4", True),
    ("lone low surrogate", doc(context='"Paris \\udc00 France"'), 400, "field 'context' holds a lone", True),
    ("reversed pair", doc(question='"\\udc00\\ud800 who?"'), 400, "(U+DC00) at character 0", True),
    ("body nested 50k", "[" * DEEP + "]" * DEEP, 400, "not valid JSON: nested too deeply", False),
    ("field nested 50k", doc(question="[" * DEEP + "]" * DEEP), 400, "not valid JSON: nested too deeply", False),
    ("object nested 50k", '{"a":' * DEEP + "1" + "}" * DEEP, 400, "not valid JSON: nested too deeply", False),
    ("field nested 500", doc(question="[" * 500 + "]" * 500), 400, "field 'question' must be a string, not list", True),
    ("5000-digit integer", doc(question="1" * 5000), 400, "not valid JSON: Exceeds the limit", False),
    ("NaN question", doc(question="NaN"), 400, "field 'question' must be a string, not float", False),
    ("dots context", doc(context=json.dumps("." * 20_000)), 413, "context is 20000 tokens; the limit is 6144", True),
    ("word context", doc(context=json.dumps("a " * 9_000)), 413, "context is 9000 tokens; the limit is 6144", True),
    ("CJK context", doc(context=json.dumps("北" * 20_000)), 413, "context is 20000 tokens", True),
    ("dots question", doc(question=json.dumps("." * 1_000)), 413, "question is 1000 tokens; the limit is 64", True),
    ("context chars", doc(context=json.dumps("x" * 20_001)), 413, "field 'context' is 20001 characters", True),
    ("question chars", doc(question=json.dumps("q" * 1_001)), 413, "field 'question' is 1001 characters", True),
    ("zero-width context", doc(context=json.dumps("\u200b" * 50)), 400, "field 'context' has no text", True),
    ("control-char question", doc(question=json.dumps("\x00\x01\x7f")), 400, "field 'question' has no text", True),
]


def direct(text: str) -> Any:
    return simplejson.loads(text)


def with_body(body: Any, **fields: Any) -> dict[str, Any]:
    event = api_event(None)
    event.update(body=body, **fields)
    return event


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8", "surrogatepass")).decode()


#: API Gateway events of a shape API Gateway never sends, but a hand-made event or a test tool can.
EVENTS: list[tuple[str, Callable[[], dict[str, Any]], int, str]] = [
    ("base64 flag, dict body", lambda: with_body({"question": QUESTION}, isBase64Encoded=True), 400,
     "request body must be a base64 string (isBase64Encoded is true), not dict"),
    ("base64 flag, list body", lambda: with_body([1, 2], isBase64Encoded=True), 400, "base64 string"),
    ("base64 flag, int body", lambda: with_body(12, isBase64Encoded=True), 400, "base64 string"),
    ("base64 flag, non-ASCII body", lambda: with_body("é" * 8, isBase64Encoded=True), 400,
     "request body is not valid base64-encoded UTF-8"),
    ("base64 flag is a string", lambda: with_body(doc(), isBase64Encoded="true"), 400,
     "isBase64Encoded must be true or false, not str"),
    ("dict body", lambda: with_body({"question": QUESTION, "context": CONTEXT}), 400,
     "request body must be a string of JSON, not dict"),
    ("base64 lone surrogate", lambda: with_body(b64(doc(question='"who \\ud800"')), isBase64Encoded=True), 400,
     "lone UTF-16 surrogate"),
    ("base64 nested 50k", lambda: with_body(b64("[" * DEEP + "]" * DEEP), isBase64Encoded=True), 400,
     "nested too deeply"),
]  # fmt: skip


def error_of(response: dict[str, Any], api: bool) -> tuple[int, dict[str, Any]]:
    if api:
        assert response["headers"]["Content-Type"] == "application/json"
        return response["statusCode"], json.loads(response["body"])
    return response["statusCode"], {k: v for k, v in response.items() if k != "statusCode"}


def rejected_record(listener: SocketListener, inference_id: str) -> dict[str, Any]:
    (record,) = listener.records(1)
    assert record["inference_id"] == inference_id
    return record


@pytest.mark.parametrize("front", ["api", "direct"])
@pytest.mark.parametrize(
    ("text", "status", "problem", "runtime_parses"), [p[1:] for p in PAYLOADS], ids=[p[0] for p in PAYLOADS]
)
def test_hostile_payload_is_refused_naming_the_problem_and_captured(
    app: Any, listener: SocketListener, front: str, text: str, status: int, problem: str, runtime_parses: bool
) -> None:
    if front == "direct" and not runtime_parses:
        pytest.skip("the runtime cannot parse this payload, so it never reaches the handler")
    api = front == "api"
    event = api_event(text) if api else direct(text)
    got_status, error = error_of(app.handler(event, lambda_context()), api)
    assert (got_status, problem in error["error"]) == (status, True), error
    record = rejected_record(listener, error["inference_id"])
    assert record["metadata"] == {"source": front, "rejected": True, "status": status, "error": error["error"]}
    assert "output" not in record
    # What is kept is bounded by the function's own limits, and any sink can store it.
    kept = json.dumps(record["input"], ensure_ascii=False)
    assert len(kept) < 22_000
    kept.encode("utf-8")


@pytest.mark.parametrize(("make", "status", "problem"), [e[1:] for e in EVENTS], ids=[e[0] for e in EVENTS])
def test_malformed_api_event_is_refused_naming_the_problem_and_captured(
    app: Any, listener: SocketListener, make: Callable[[], dict[str, Any]], status: int, problem: str
) -> None:
    got_status, error = error_of(app.handler(make(), lambda_context()), True)
    assert (got_status, problem in error["error"]) == (status, True), error
    record = rejected_record(listener, error["inference_id"])
    assert record["metadata"]["rejected"] is True and record["metadata"]["error"] == error["error"]


def test_rejected_request_keeps_question_and_context_under_their_names(app: Any, listener: SocketListener) -> None:
    """So a CAPTURE_REDACT rule on input.context covers rejected requests too."""
    app.MODEL.get()  # as at init in Lambda, so the record names the model
    context = "paris " * 4_000  # 24,000 characters: over the limit, kept cut to it
    response = app.handler(api_event(json.dumps({"question": QUESTION, "context": context})), lambda_context())
    assert response["statusCode"] == 413
    record = rejected_record(listener, json.loads(response["body"])["inference_id"])
    assert record["input"] == {"question": QUESTION, "context": context[:20_000]}
    assert record["request_id"]
    assert record["model"] == {"name": "tiny-distilbert-qa-wired", "version": "seed0-paris-france"}


def test_unparseable_body_is_kept_as_its_start_and_length(app: Any, listener: SocketListener) -> None:
    body = '{"question": "who \\ud800' + "x" * 10_000
    response = app.handler(api_event(body), lambda_context())
    record = rejected_record(listener, json.loads(response["body"])["inference_id"])
    assert record["input"] == {"body": body[:4_096], "body_chars": len(body)}


def test_a_lone_surrogate_in_a_direct_event_is_stored_replaced(app: Any, listener: SocketListener) -> None:
    response = app.handler({"question": "who \ud800 is", "context": CONTEXT}, lambda_context())
    assert response["statusCode"] == 400
    record = rejected_record(listener, response["inference_id"])
    assert record["input"] == {"question": "who \ufffd is", "context": CONTEXT}


def test_rejected_capture_can_be_turned_off(
    app: Any, listener: SocketListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QA_CAPTURE_REJECTED", "0")
    monkeypatch.setattr(app, "LIMITS", app.Limits.from_env())
    response = app.handler(api_event(doc(question='"who \\ud800"')), lambda_context())
    assert response["statusCode"] == 400
    assert "inference_id" not in json.loads(response["body"])
    assert all(capture_client.CONTROL_KEY in line for line in listener.drain())


def test_a_failing_capture_never_turns_a_rejection_into_an_error(
    app: Any, listener: SocketListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("capture is broken")

    monkeypatch.setattr(app, "capture", broken)
    response = app.handler(api_event(doc(question='"who \\ud800"')), lambda_context())
    assert response["statusCode"] == 400
    assert set(json.loads(response["body"])) == {"error"}
