"""``CAPTURE_REDACT``: field paths masked or hashed before a record is buffered or spooled.

Syntax: a comma-separated list of ``path[:mode]``.

- ``path`` is dot-separated keys from the record's top level, e.g. ``input.context`` or
  ``metadata.user.email``. ``*`` matches every key of an object. A list met on the way is
  entered element by element (``input.documents.text`` reaches ``text`` in every document).
  Unknown top-level fields of a record live under ``metadata`` (``metadata.<field>``).
- ``mode`` is ``mask`` (default: the value becomes ``"[REDACTED]"``) or ``hash`` (the value
  becomes ``"sha256:<hex>"`` of its UTF-8 text, or of its canonical JSON when it is not a string;
  keyed with HMAC when ``CAPTURE_REDACT_KEY`` is set, so equal values still join but cannot be
  guessed from a dictionary).

The first segment must be ``input``, ``output``, ``metadata`` or ``model``: the identifiers the
extension needs (``inference_id``, ``request_id``, timestamps) cannot be redacted. Runs before
the ``capture_prepare_record`` hooks, so plugins never see a redacted value either.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

MASK = "[REDACTED]"
ROOTS = frozenset({"input", "output", "metadata", "model"})
MODES = ("mask", "hash")

Rule = tuple[tuple[str, ...], str]


def parse_rules(raw: str) -> tuple[Rule, ...]:
    """Parse ``CAPTURE_REDACT``; raises ValueError naming the bad entry."""
    rules: list[Rule] = []
    for entry in raw.split(","):
        entry = entry.strip()
        if not entry:
            continue
        path, _, mode = entry.partition(":")
        mode = (mode or "mask").strip().lower()
        if mode not in MODES:
            raise ValueError(f"entry {entry!r}: mode must be mask or hash")
        segments = tuple(part.strip() for part in path.split("."))
        if any(not part for part in segments):
            raise ValueError(f"entry {entry!r}: empty path segment")
        if segments[0] not in ROOTS:
            raise ValueError(f"entry {entry!r}: a path starts with one of {', '.join(sorted(ROOTS))}")
        rules.append((segments, mode))
    return tuple(rules)


class Redactor:
    """Applies the rules in place; cost is proportional to the paths, not to the record."""

    def __init__(self, rules: Sequence[Rule], key: str = "") -> None:
        self.rules = tuple(rules)
        self._key = key.encode()

    def __bool__(self) -> bool:
        return bool(self.rules)

    def apply(self, record: dict[str, Any]) -> None:
        for segments, mode in self.rules:
            self._walk(record, segments, mode)

    def _walk(self, node: Any, segments: tuple[str, ...], mode: str) -> None:
        if isinstance(node, list):
            for item in node:
                self._walk(item, segments, mode)
            return
        if not isinstance(node, dict):
            return
        head, rest = segments[0], segments[1:]
        keys = list(node) if head == "*" else ([head] if head in node else [])
        for key in keys:
            if rest:
                self._walk(node[key], rest, mode)
            elif node[key] is not None:
                node[key] = self._replace(node[key], mode)

    def _replace(self, value: Any, mode: str) -> str:
        if mode == "mask":
            return MASK
        import orjson

        data = value.encode() if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        if self._key:
            return "sha256:" + hmac.new(self._key, data, hashlib.sha256).hexdigest()
        return "sha256:" + hashlib.sha256(data).hexdigest()
