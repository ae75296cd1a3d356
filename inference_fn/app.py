"""Lambda handler: DistilBERT question answering, each answer captured by capture-ext.

The model is loaded once per execution environment, during init (when ``MODEL_DIR`` is set at
import, as it is in the image), not per request as in the AWS sample this replaces. Requests come
from API Gateway (``POST /nlp-qa``, REST proxy or HTTP API payload) or as direct invocations
with ``{"question": ..., "context": ...}``. Capture goes through ``capture_ext.client``, which is
fail-open: whatever happens to the extension, the answer is the same.

Whatever a request holds, it costs a bounded amount of work and gets a status that names the
problem: 400 for a request that cannot be answered as sent (including lone UTF-16 surrogates,
which no tokenizer takes, and JSON nested past the parser's depth), 413 for one past a size limit
(characters first, then tokens, which bound the model's windows). Rejected requests are captured
too, flagged ``metadata.rejected`` with the status and the error, so that a surge of bad requests
shows up where the good ones are monitored (``QA_CAPTURE_REJECTED=0`` turns that off).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from capture_ext.client import capture, capture_handler
from inference_fn.qa import Answer, InputTooLongError, NoTokensError, QuestionAnswerer

logger = logging.getLogger(__name__)
# Lambda's root logger passes only WARNING and up; the model-load line is worth keeping.
logger.setLevel(logging.getLevelNamesMapping().get(os.environ.get("LOG_LEVEL", "INFO").upper(), logging.INFO))

DEFAULT_MODEL_DIR = "/opt/ml/model"
JSON_HEADERS = {"Content-Type": "application/json"}


#: A UTF-16 surrogate code point: JSON's ``"\ud800"`` escape parses to one, but it is not a character.
_SURROGATE = re.compile("[\ud800-\udfff]")


class BadRequestError(ValueError):
    """The request cannot be answered as sent; the message names the problem."""

    status = 400


class RequestTooLargeError(BadRequestError):
    """The request is past a size limit; the message names the limit."""

    status = 413


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-request bounds and the rejected-request capture switch, from ``QA_*`` variables."""

    max_context_chars: int = 20_000
    max_question_chars: int = 1_000
    max_context_tokens: int = 6_144
    batch_windows: int = 8
    capture_rejected: bool = True
    rejected_body_chars: int = 4_096

    @classmethod
    def from_env(cls) -> Limits:
        defaults = cls()

        def read(name: str, default: int) -> int:
            raw = os.environ.get(name)
            try:
                value = int(raw) if raw else default
            except ValueError:
                logger.error("%s=%r is not an integer; using %d", name, raw, default)
                return default
            return value if value > 0 else default

        switch = os.environ.get("QA_CAPTURE_REJECTED", "1").strip().lower()
        if switch not in {"0", "1", "true", "false", "yes", "no", "on", "off", ""}:
            logger.error("QA_CAPTURE_REJECTED=%r is not a boolean; capturing rejected requests", switch)
        return cls(
            max_context_chars=read("QA_MAX_CONTEXT_CHARS", defaults.max_context_chars),
            max_question_chars=read("QA_MAX_QUESTION_CHARS", defaults.max_question_chars),
            max_context_tokens=read("QA_MAX_CONTEXT_TOKENS", defaults.max_context_tokens),
            batch_windows=read("QA_BATCH_WINDOWS", defaults.batch_windows),
            capture_rejected=switch not in {"0", "false", "no", "off"},
            rejected_body_chars=read("QA_REJECTED_BODY_CHARS", defaults.rejected_body_chars),
        )


class ModelHolder:
    """The one model of this execution environment; loads it on first use, under a lock."""

    def __init__(self, limits: Limits | None = None) -> None:
        self._lock = threading.Lock()
        self._qa: QuestionAnswerer | None = None
        self.limits = limits or LIMITS
        #: How many times a model was loaded in this process (should stay 1).
        self.loads = 0

    def info(self) -> dict[str, str | None] | None:
        """The model's name and version if it is loaded; never loads it."""
        return dict(self._qa.info) if self._qa is not None else None

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
        qa = QuestionAnswerer.from_dir(
            model_dir,
            max_context_tokens=self.limits.max_context_tokens,
            batch_windows=self.limits.batch_windows,
        )
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


LIMITS = Limits.from_env()
MODEL = ModelHolder()


def _is_api_event(event: Any) -> bool:
    return isinstance(event, dict) and any(k in event for k in ("httpMethod", "requestContext", "routeKey"))


def _base64_flag(event: dict[str, Any]) -> bool:
    flag = event.get("isBase64Encoded", False)
    if flag is None or isinstance(flag, bool):
        return bool(flag)
    raise BadRequestError(f"isBase64Encoded must be true or false, not {type(flag).__name__}")


def _body_text(event: dict[str, Any]) -> str:
    """The body as text, base64-decoded when the event says so."""
    body = event.get("body")
    if body is None or body == "":
        raise BadRequestError('request body is missing; send {"question": ..., "context": ...}')
    encoded = _base64_flag(event)
    if not isinstance(body, str):
        # API Gateway always sends a string; anything else is a hand-made event.
        kind = "a base64 string (isBase64Encoded is true)" if encoded else "a string of JSON"
        raise BadRequestError(f"request body must be {kind}, not {type(body).__name__}")
    if encoded:
        try:
            return base64.b64decode(body, validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII text, invalid UTF-8
            raise BadRequestError(f"request body is not valid base64-encoded UTF-8: {exc}") from None
    return body


def _parse_json(body: str) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise BadRequestError("request body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers past Python's 4,300-digit limit
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
        raise RequestTooLargeError(f"field '{name}' is {len(value)} characters; the limit is {limit}")
    if surrogate := _SURROGATE.search(value):
        raise BadRequestError(
            f"field '{name}' holds a lone UTF-16 surrogate (U+{ord(surrogate.group()):04X}) "
            f"at character {surrogate.start()}, which is not text; send valid Unicode"
        )
    return value


def parse_request(payload: Any, limits: Limits | None = None) -> tuple[str, str]:
    """Validate ``{"question", "context"}`` and return them; raises BadRequestError naming the problem."""
    limits = limits or LIMITS
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


def _printable(text: str, limit: int) -> str:
    """At most ``limit`` characters, lone surrogates replaced: what a sink can always store."""
    return _SURROGATE.sub("\ufffd", text[:limit])


def _rejected_input(payload: Any, raw: Any, limits: Limits) -> dict[str, Any]:
    """What a rejected request is captured with, bounded whatever the request held.

    A request that parsed to an object keeps its ``question`` and ``context`` strings under their
    own names (cut to the field limits), so ``CAPTURE_REDACT`` rules on ``input.question`` or
    ``input.context`` apply to rejected requests as they do to answered ones. Anything else is kept
    as ``body``: the start of the text as received (``QA_REJECTED_BODY_CHARS``) and its length.
    """
    if isinstance(payload, dict):
        kept = {
            name: _printable(payload[name], limit)
            for name, limit in (("question", limits.max_question_chars), ("context", limits.max_context_chars))
            if isinstance(payload.get(name), str)
        }
        if kept:
            return kept
    if raw is None or isinstance(raw, str):
        text = raw or ""
    else:
        try:
            text = json.dumps(raw, ensure_ascii=False, default=repr)
        except (ValueError, TypeError, RecursionError) as exc:
            text = f"<{type(raw).__name__} that cannot be written as JSON: {type(exc).__name__}>"
    return {"body": _printable(text, limits.rejected_body_chars), "body_chars": len(text)}


def capture_rejected(payload: Any, raw: Any, *, source: str, status: int, error: str, started: float) -> str | None:
    """Capture a refused request, flagged; returns its ``inference_id``, or None when not captured.

    ``payload`` is the parsed request if parsing got that far, ``raw`` the body text (or the direct
    event) as received.
    """
    if not LIMITS.capture_rejected:
        return None
    try:
        inference_id = uuid.uuid4().hex
        capture(
            input=_rejected_input(payload, raw, LIMITS),
            inference_id=inference_id,
            model=MODEL.info(),
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            metadata={"source": source, "rejected": True, "status": status, "error": error},
        )
    except Exception:  # a capture problem must never turn a 400 into a 500
        logger.exception("capturing the rejected request failed; answering anyway")
        return None
    return inference_id


def _api_response(status: int, document: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": JSON_HEADERS, "body": json.dumps(document)}


@capture_handler
def handler(event: Any, context: Any) -> dict[str, Any]:
    """API Gateway proxy events get an HTTP response; direct invocations get the document itself."""
    started = time.perf_counter()
    api = _is_api_event(event)
    source = "api" if api else "direct"
    payload: Any = None
    raw: Any = event.get("body") if api else event
    try:
        if api:
            raw = _body_text(event)
            payload = _parse_json(raw)
        else:
            payload = event
        question, context_text = parse_request(payload)
        result = answer_and_capture(question, context_text, source=source)
    except (BadRequestError, InputTooLongError, NoTokensError) as exc:
        status = 413 if isinstance(exc, InputTooLongError) else getattr(exc, "status", 400)
        logger.info("rejected request (%d): %s", status, exc)
        error: dict[str, Any] = {"error": str(exc)}
        inference_id = capture_rejected(payload, raw, source=source, status=status, error=str(exc), started=started)
        if inference_id is not None:
            error["inference_id"] = inference_id
        return _api_response(status, error) if api else {"statusCode": status, **error}
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
