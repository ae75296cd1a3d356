"""Lambda handler: DistilBERT question answering, each answer captured by capture-ext.

The model is loaded once per execution environment, during init (when ``MODEL_DIR`` is set at
import, as it is in the image), not per request as in the AWS sample this replaces. Requests come
from API Gateway (``POST /nlp-qa``, REST proxy or HTTP API payload) or as direct invocations
with ``{"question": ..., "context": ...}``. Capture goes through ``capture_ext.client``, which is
fail-open: whatever happens to the extension, the answer is the same.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from capture_ext.client import capture, capture_handler
from inference_fn.qa import Answer, QuestionAnswerer, QuestionTooLongError

logger = logging.getLogger(__name__)
# Lambda's root logger passes only WARNING and up; the model-load line is worth keeping.
logger.setLevel(logging.getLevelNamesMapping().get(os.environ.get("LOG_LEVEL", "INFO").upper(), logging.INFO))

DEFAULT_MODEL_DIR = "/opt/ml/model"
JSON_HEADERS = {"Content-Type": "application/json"}


class BadRequestError(ValueError):
    """The request cannot be answered as sent; the message names the problem."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_context_chars: int = 20_000
    max_question_chars: int = 1_000

    @classmethod
    def from_env(cls) -> Limits:
        def read(name: str, default: int) -> int:
            raw = os.environ.get(name)
            try:
                value = int(raw) if raw else default
            except ValueError:
                logger.error("%s=%r is not an integer; using %d", name, raw, default)
                return default
            return value if value > 0 else default

        return cls(read("QA_MAX_CONTEXT_CHARS", 20_000), read("QA_MAX_QUESTION_CHARS", 1_000))


class ModelHolder:
    """The one model of this execution environment; loads it on first use, under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._qa: QuestionAnswerer | None = None
        #: How many times a model was loaded in this process (should stay 1).
        self.loads = 0

    def get(self) -> QuestionAnswerer:
        if self._qa is None:
            with self._lock:
                if self._qa is None:
                    self._qa = self._load()
        return self._qa

    def _load(self) -> QuestionAnswerer:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        model_dir = os.environ.get("MODEL_DIR", DEFAULT_MODEL_DIR)
        started = time.perf_counter()
        qa = QuestionAnswerer.from_dir(model_dir)
        for key, env in (("name", "MODEL_NAME"), ("version", "MODEL_VERSION")):
            if os.environ.get(env):
                qa.info[key] = os.environ[env]
        self.loads += 1
        logger.info(
            "model %s (version %s) loaded from %s in %.0f ms",
            qa.info["name"],
            qa.info["version"],
            model_dir,
            (time.perf_counter() - started) * 1000,
        )
        return qa


MODEL = ModelHolder()
LIMITS = Limits.from_env()


def _is_api_event(event: Any) -> bool:
    return isinstance(event, dict) and any(k in event for k in ("httpMethod", "requestContext", "routeKey"))


def _api_body(event: dict[str, Any]) -> Any:
    body = event.get("body")
    if body is None or body == "":
        raise BadRequestError('request body is missing; send {"question": ..., "context": ...}')
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise BadRequestError(f"request body is not valid base64-encoded UTF-8: {exc}") from None
    try:
        return json.loads(body)
    except (json.JSONDecodeError, TypeError) as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from None


def _field(payload: dict[str, Any], name: str, limit: int) -> str:
    if name not in payload or payload[name] is None:
        raise BadRequestError(f"missing field '{name}'")
    value = payload[name]
    if not isinstance(value, str):
        raise BadRequestError(f"field '{name}' must be a string, not {type(value).__name__}")
    if not value.strip():
        raise BadRequestError(f"field '{name}' is empty")
    if len(value) > limit:
        raise BadRequestError(f"field '{name}' is {len(value)} characters; the limit is {limit}")
    return value


def parse_request(payload: Any, limits: Limits = LIMITS) -> tuple[str, str]:
    """Validate ``{"question", "context"}`` and return them; raises BadRequestError naming the problem."""
    if not isinstance(payload, dict):
        raise BadRequestError('expected a JSON object {"question": ..., "context": ...}, got ' + type(payload).__name__)
    question = _field(payload, "question", limits.max_question_chars)
    context = _field(payload, "context", limits.max_context_chars)
    return question, context


def answer_and_capture(question: str, context: str, *, source: str) -> dict[str, Any]:
    """Answer, capture (fail-open) and return the response document."""
    qa = MODEL.get()
    started = time.perf_counter()
    answer: Answer = qa.answer(question, context)
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    inference_id = uuid.uuid4().hex
    result = {"Question": question, "Answer": answer.text, "score": answer.score, "inference_id": inference_id}
    try:
        capture(
            input={"question": question, "context": context},
            output={"answer": answer.text, "score": answer.score, "start": answer.start, "end": answer.end},
            inference_id=inference_id,
            model=dict(qa.info),
            latency_ms=latency_ms,
            metadata={"source": source},
        )
    except Exception:  # the client is fail-open already; this is belt and braces for the answer
        logger.exception("capture failed; answering anyway")
    return result


def _api_response(status: int, document: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": JSON_HEADERS, "body": json.dumps(document)}


@capture_handler
def handler(event: Any, context: Any) -> dict[str, Any]:
    """API Gateway proxy events get an HTTP response; direct invocations get the document itself."""
    api = _is_api_event(event)
    try:
        payload = _api_body(event) if api else event
        question, context_text = parse_request(payload)
        result = answer_and_capture(question, context_text, source="api" if api else "direct")
    except (BadRequestError, QuestionTooLongError) as exc:
        logger.info("bad request: %s", exc)
        error = {"error": str(exc)}
        return _api_response(400, error) if api else {"statusCode": 400, **error}
    except Exception:
        if not api:
            raise
        request_id = getattr(context, "aws_request_id", None)
        logger.exception("inference failed (request %s)", request_id)
        return _api_response(500, {"error": "internal error", "request_id": request_id})
    return _api_response(200, result) if api else result


if os.environ.get("MODEL_DIR"):
    # Init phase: load now, so the first request does not pay for it and a missing model fails
    # the init (loudly, with the path) instead of every request.
    MODEL.get()
