"""capture-ext: inference data capture for machine-learning models on AWS Lambda.

Importing this package is cheap on purpose: it runs inside the user's function. The public
names below are resolved lazily, so ``import capture_ext`` pulls in neither pluggy, aiohttp,
boto nor pyarrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from capture_ext.hookspecs import hookimpl
    from capture_ext.models import Batch, Outcome, Sink, SinkContext, WriteResult

__all__ = ["Batch", "Outcome", "Sink", "SinkContext", "WriteResult", "__version__", "hookimpl"]

_LAZY = {
    "hookimpl": "capture_ext.hookspecs",
    "Batch": "capture_ext.models",
    "Outcome": "capture_ext.models",
    "Sink": "capture_ext.models",
    "SinkContext": "capture_ext.models",
    "WriteResult": "capture_ext.models",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'capture_ext' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
