"""Lambda handlers the emulator-driven benchmarks run (task root = the repository).

``plain`` answers exactly as ``inference_fn.app.handler`` does, minus capture: the baseline of
benchmark 2. ``echo`` captures one record of ``event["size"]`` bytes and returns at once, so that
benchmark 3 sees the extension's post-runtime work and nothing else.
"""

from __future__ import annotations

from typing import Any

from capture_ext.client import capture, capture_handler


def plain(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """inference_fn's answer path without the capture call (and without capture_handler)."""
    from inference_fn.app import MODEL, parse_request

    question, context_text = parse_request(event)
    answer = MODEL.get().answer(question, context_text)
    return {"Question": question, "Answer": answer.text, "score": answer.score}


@capture_handler
def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Capture one record of about ``event["size"]`` bytes; no model."""
    size = int(event.get("size", 1024))
    inference_id = capture(
        input={"question": "What is the capital of France?", "context": "x" * max(0, size - 300)},
        output={"answer": "Paris", "score": 0.98},
        model={"name": "bench", "version": "1"},
        latency_ms=1.0,
    )
    return {"inference_id": inference_id}
