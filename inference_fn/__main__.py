"""``python -m inference_fn --question ... --context ...``: answer one question locally.

Runs the Lambda handler itself (as a direct invocation), so the answer and the capture call
are exactly what the function does; with an extension listening, the record is captured too.
``--tiny`` builds the offline tiny model first (its answers are meaningless).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL_DIR = "models/distilbert-base-cased-distilled-squad"


@dataclass
class LocalContext:
    """The few Lambda context attributes the handler reads."""

    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_name: str = "inference-fn-local"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference_fn", description=__doc__.splitlines()[0])
    parser.add_argument("--question", required=True)
    parser.add_argument("--context", required=True, help="the text to find the answer in")
    parser.add_argument(
        "--model-dir",
        default=os.environ.get("MODEL_DIR", DEFAULT_MODEL_DIR),
        help="model folder (default: $MODEL_DIR or %(default)s; `make model` fills it)",
    )
    parser.add_argument("--tiny", action="store_true", help="use a freshly built tiny random model (offline)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory(prefix="tiny-qa-") as scratch:
        if args.tiny:
            from inference_fn.tiny_model import build_tiny_model

            args.model_dir = str(build_tiny_model(Path(scratch) / "model"))
            print("note: tiny random model, the answer is meaningless", file=sys.stderr)
        elif not (Path(args.model_dir) / "config.json").is_file():
            parser.error(f"no model in {args.model_dir}: run `make model`, pass --model-dir, or use --tiny")
        os.environ["MODEL_DIR"] = args.model_dir
        from inference_fn import app

        result = app.handler({"question": args.question, "context": args.context}, LocalContext())
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0 if "error" not in result else 2


if __name__ == "__main__":
    sys.exit(main())
