"""Running the function and the real extension in the local Lambda emulator, for benchmarks 2 and 3.

The extension is launched as Lambda launches it, from an ``/opt/extensions``-style directory
holding an executable named after the extension; the function runs under ``awslambdaric`` with
the repository as its task root.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from bench._harness import BYTECODE_ENV, CACHE, PYTHON, ROOT

MODEL_CACHE = CACHE
#: Words the offline tokenizer knows (one token each), for a prompt of a known token count.
QUESTION = "what is the capital city of france"
CONTEXT = (
    "paris is the capital and largest city of france it is on the river in the north of the country "
    "many people live there and it was the first city in the country to have a data server the old city "
    "is called the city of the river"
)
CONTEXT_WORDS = CONTEXT.split()


#: Extensions the benchmarks can install: the real one, and a do-nothing one as a baseline.
EXTENSIONS = {"capture-ext": "capture_ext --name capture-ext", "noop": "bench._noop_extension noop"}


def extensions_dir(parent: str, name: str = "capture-ext") -> Path:
    """A directory with one launcher named ``name`` that execs the extension's module."""
    folder = Path(parent) / "extensions"
    folder.mkdir()
    launcher = folder / name
    launcher.write_text(f"#!/bin/sh\ncd {ROOT}\nexec {PYTHON} -m {EXTENSIONS[name]}\n")
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


def qa_event(tokens: int = 60) -> dict[str, str]:
    """A question and context of about ``tokens`` tokens in total ([CLS] q [SEP] c [SEP])."""
    words = tokens - len(QUESTION.split()) - 3
    context = " ".join((CONTEXT_WORDS * (words // len(CONTEXT_WORDS) + 1))[:words])
    return {"question": QUESTION, "context": context}


def model_dir(full_size: bool) -> Path:
    """A QA model folder: DistilBERT's full-size architecture (random weights) or the tiny test one.

    Weights do not change the cost of a forward pass, so random ones time the real architecture
    (6 layers, 768 wide, 12 heads, 30,522-word embedding) without the hub, which is unreachable here.
    """
    from inference_fn.tiny_model import build_tiny_model

    out = MODEL_CACHE / ("distilbert-full-random" if full_size else "distilbert-tiny")
    marker = out / ".complete"
    if marker.exists():
        return out
    build_tiny_model(out)
    if full_size:
        import torch
        from transformers import DistilBertConfig, DistilBertForQuestionAnswering

        torch.manual_seed(0)
        DistilBertForQuestionAnswering(DistilBertConfig()).eval().save_pretrained(out)
        info = {"name": "distilbert-base-architecture", "version": "random-init", "source": "bench._emulated"}
        (out / "model_info.json").write_text(json.dumps(info))
    marker.touch()
    return out


def emulator(handler: str, env: dict[str, str], extension: str | None, tmp: str, **options: Any) -> Any:
    """A ``LambdaEmulator`` for ``handler`` (not started), single-threaded torch, generous init."""
    from capture_ext.emulator import LambdaEmulator

    work = tempfile.mkdtemp(dir=tmp)
    base = {
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "CAPTURE_SOCKET": os.path.join(work, "capture.sock"),
        "CAPTURE_PORT": str(_port()),
        "CAPTURE_SINKS": "file",
        "CAPTURE_FILE_DIR": os.path.join(work, "files"),
        "CAPTURE_METRICS": "0",
        "CAPTURE_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        **BYTECODE_ENV,
        **env,
    }
    ext_dir = extensions_dir(work, extension) if extension else None
    options.setdefault("init_timeout_s", 180.0)
    return LambdaEmulator(handler, ROOT, ext_dir, base, timeout_s=60.0, **options)


def _port() -> int:
    from bench._harness import free_port

    return free_port()
