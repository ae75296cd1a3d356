"""Tiny question-answering models shared by the inference tests, built once per test session.

A plain cached helper rather than a conftest fixture, so the tests that need it own it and no
shared conftest has to change. Models are written to a temporary folder removed at exit.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

#: Words the wired model's answers start and end at (see inference_fn.tiny_model).
START_WORD = "paris"
END_WORD = "france"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_ROOT = Path(tempfile.mkdtemp(prefix="tiny-qa-models-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


@functools.cache
def tiny_model(kind: str = "wired") -> Path:
    """``wired``: answers span START_WORD..END_WORD; ``random``: a plain random model."""
    from inference_fn.tiny_model import build_tiny_model

    if kind == "wired":
        return build_tiny_model(_ROOT / kind, answer_start=START_WORD, answer_end=END_WORD)
    if kind == "random":
        return build_tiny_model(_ROOT / kind, seed=7)
    raise ValueError(f"unknown tiny model kind {kind!r}")
