"""What the function-side client needs besides its transport: JSON lines, settings, ids, sampling.

Like ``client.py`` it runs inside the user's function, so it imports only the standard library
(``orjson`` when installed) and nothing here raises into the handler: a value JSON cannot hold is
written as text, an integer beyond 64 bits as its exact digits, and a bad setting falls back to
its default with one warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from typing import Any

try:  # optional accelerator: 20x faster serialisation when present
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised when orjson is absent
    _orjson = None  # type: ignore[assignment]

logger = logging.getLogger("capture_ext.client")


def _default(value: Any) -> Any:
    """Make numpy/torch scalars and arrays, sets and other objects JSON-serialisable."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def _big_ints_as_text(value: Any) -> Any:
    """Integers beyond 64 bits as their exact decimal text, as the extension keeps them."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if _INT64_MIN <= value <= _UINT64_MAX else str(value)
    if isinstance(value, dict):
        return {key: _big_ints_as_text(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_big_ints_as_text(item) for item in value]
    return value


if _orjson is not None:
    _OPTS = _orjson.OPT_SERIALIZE_NUMPY | _orjson.OPT_NON_STR_KEYS

    def _dumps(obj: Any) -> bytes:
        try:
            return _orjson.dumps(obj, default=_default, option=_OPTS)
        except TypeError:
            # orjson cannot write an integer beyond 64 bits: keep its digits instead of losing the record.
            return _orjson.dumps(_big_ints_as_text(obj), default=_default, option=_OPTS)

else:  # pragma: no cover - exercised when orjson is absent

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, default=_default, separators=(",", ":"), ensure_ascii=False).encode()


def _env_float(name: str, default: float) -> float:
    """A finite number from the environment, or ``default`` (never raises into the function)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        logger.warning("capture client: %s=%r is not a finite number; using %s", name, raw, default)
        return default
    return value


def _env_port(name: str, default: int) -> int:
    value = _env_float(name, default)
    if value != int(value) or not 1 <= value <= 65535:
        logger.warning(
            "capture client: %s=%r is not a TCP port (1-65535); using %s", name, os.environ.get(name), default
        )
        return default
    return int(value)


def _uuid4_hex() -> str:
    """``uuid.uuid4().hex`` in a third of the time (it is on every capture call's path)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


def sampled(inference_id: str, rate: float) -> bool:
    """Deterministic sampling: the same ``inference_id`` gets the same decision everywhere."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(inference_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2**64
