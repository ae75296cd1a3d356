"""Environment variables as typed, documented settings: what core and every sink configure with.

A setting is declared once, as a dataclass field made by :func:`setting`. The field's metadata
holds the :class:`Variable` (name, default text, meaning, parser), and the field's default is
that text parsed, so a config object built with no arguments and one read from an empty
environment cannot disagree. :class:`EnvConfig` reads such a dataclass from an environment
mapping, OpenTelemetry style: an argument given to :meth:`EnvConfig.from_env` wins, the
environment is the default.

A sink registers the variables of its config object with the sink
(``register(name, factory, variables=MyConfig.variables())``), so ``capture-ext plugins`` and
docs/configuration.md list them from the same declaration the sink reads.

Standard library only: sinks and third-party plugins import this without pulling in the
extension's core.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

__all__ = [
    "MIB",
    "ConfigError",
    "EnvConfig",
    "Variable",
    "boolean",
    "choice",
    "config_fields",
    "csv",
    "integer",
    "markdown_table",
    "non_negative",
    "not_blank",
    "number",
    "parse_size",
    "positive_int",
    "positive_number",
    "positive_size",
    "setting",
]

MIB = 1024 * 1024
#: Key of a dataclass field's metadata that holds its :class:`Variable`.
METADATA_KEY = "capture_ext.variable"
HIDDEN = "<hidden>"


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Variable:
    """One documented environment variable."""

    name: str
    #: The value used when the variable is unset, as text (what the docs show).
    default: str
    doc: str
    parse: Callable[[str], Any] = str
    #: Shown in the docs instead of ``default`` when the default is computed.
    default_doc: str = ""
    #: Used instead of ``default`` when the value is invalid and reading is lenient (fail closed).
    fallback: str | None = None
    #: Never logged, printed or shown in an error message.
    secret: bool = False
    #: Unset (or blank) is an error instead of the default.
    required: bool = False

    def shown(self, raw: str) -> str:
        """``raw`` as an error message may show it."""
        return HIDDEN if self.secret else repr(raw)

    def read(self, env: Mapping[str, str]) -> Any:
        """The parsed value of this variable in ``env``; :class:`ConfigError` naming it if unusable."""
        raw = env.get(self.name)
        if self.required and (raw is None or not raw.strip()):
            raise ConfigError(f"{self.name} is not set, and it is required ({self.doc.rstrip('.')})")
        if raw is None:
            return self.parse(self.default)
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{self.name}={self.shown(raw)} is invalid ({exc})") from None


def setting(
    name: str,
    default: str = "",
    doc: str = "",
    parse: Callable[[str], Any] = str,
    *,
    default_doc: str = "",
    fallback: str | None = None,
    secret: bool = False,
    required: bool = False,
) -> Any:
    """A dataclass field read from variable ``name``; its default is ``parse(default)``."""
    var = Variable(name, default, doc, parse, default_doc, fallback, secret, required)
    return field(default=parse(default), metadata={METADATA_KEY: var}, repr=not secret)


def config_fields(cls: type) -> tuple[tuple[str, Variable], ...]:
    """(field name, variable) of every field of dataclass ``cls`` made by :func:`setting`."""
    return tuple((f.name, f.metadata[METADATA_KEY]) for f in dataclasses.fields(cls) if METADATA_KEY in f.metadata)


class EnvConfig:
    """Base of a frozen dataclass whose fields are :func:`setting`\\ s.

    ``from_env`` collects every problem into one :class:`ConfigError` (one line, naming each
    variable), so a sink factory that calls it disables its sink with a message saying what to fix.
    Subclasses normalise or cross-check values in ``__post_init__``, which runs for arguments and
    for the environment alike.
    """

    __slots__ = ()

    @classmethod
    def variables(cls) -> tuple[Variable, ...]:
        """What to pass as ``register(..., variables=...)``."""
        return tuple(var for _, var in config_fields(cls))

    @classmethod
    def from_env(cls, env: Mapping[str, str], /, **given: Any) -> Self:
        """Read every setting from ``env``; a ``given`` value that is not None wins over the variable."""
        known = config_fields(cls)
        unknown = set(given) - {name for name, _ in known}
        if unknown:
            raise TypeError(f"{cls.__name__} has no setting {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        problems: list[str] = []
        for name, var in known:
            if given.get(name) is not None:
                values[name] = given[name]
                if var.required and given[name] == "":
                    problems.append(f"{name}='' was given, but {var.name} is required and cannot be empty")
                continue
            try:
                values[name] = var.read(env)
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(**values)


# -- parsers: each raises ValueError with a short reason; the caller adds the variable ----------
def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError("expected 1/0, true/false, yes/no or on/off")


def integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError("not an integer") from None


def number(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError("not a number") from None


def positive_int(raw: str) -> int:
    value = integer(raw)
    if value <= 0:
        raise ConfigError("must be a positive integer")
    return value


def non_negative(raw: str) -> float:
    value = number(raw)
    if value < 0 or value != value:
        raise ConfigError("must be a number >= 0")
    return value


def positive_number(raw: str) -> float:
    value = number(raw)
    if not value > 0 or value == float("inf"):
        raise ConfigError("must be a number > 0")
    return value


def not_blank(raw: str) -> str:
    if not raw.strip():
        raise ConfigError("must not be empty")
    return raw


def csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def choice(*choices: str) -> Callable[[str], str]:
    """A parser accepting one of ``choices`` (case-insensitive)."""

    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"must be one of {', '.join(choices)}")
        return value

    return parse


#: Units accepted by byte sizes: binary (KiB = 1024) and decimal (KB = 1000), as
#: docs/configuration.md lists them. Case-insensitive; ``5MiB``, ``5 MiB`` and ``5242880`` agree.
SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kib": 1024,
    "mib": MIB,
    "gib": 1024 * MIB,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
}


def parse_size(raw: str) -> int:
    """A number of bytes, optionally with a unit of :data:`SIZE_UNITS` (``64MiB``, ``5MB``)."""
    text = raw.strip().lower()
    amount = text.rstrip("abcdefghijklmnopqrstuvwxyz").strip()
    unit = text[len(amount) :].strip()
    if unit not in SIZE_UNITS or not amount:
        raise ConfigError("expected bytes, optionally with a unit: KiB, MiB, GiB (1024) or KB, MB, GB (1000)")
    try:
        value = float(amount) * SIZE_UNITS[unit]
    except ValueError:
        raise ConfigError(f"{amount!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")) or value != int(value):
        raise ConfigError("must be a whole number of bytes")
    return int(value)


def positive_size(raw: str) -> int:
    value = parse_size(raw)
    if value <= 0:
        raise ConfigError("must be a positive number of bytes")
    return value


# -- documentation ----------------------------------------------------------------------------
def default_cell(var: Variable) -> str:
    """The default as docs/configuration.md shows it."""
    if var.required:
        return "(required)"
    return var.default_doc or (f"`{var.default}`" if var.default else "—")


def meaning_cell(var: Variable) -> str:
    return var.doc + (" Secret: never logged or printed." if var.secret else "")


def markdown_table(variables: Iterable[Variable], used_by: Mapping[str, Iterable[str]] | None = None) -> str:
    """A Markdown table of ``variables``; with ``used_by`` (name -> sinks) a column of the sinks too."""
    if used_by is None:
        rows = ["| variable | default | meaning |", "|---|---|---|"]
        rows += [f"| `{v.name}` | {default_cell(v)} | {meaning_cell(v)} |" for v in variables]
    else:
        rows = ["| variable | default | sinks | meaning |", "|---|---|---|---|"]
        for v in variables:
            sinks = ", ".join(f"`{sink}`" for sink in used_by.get(v.name, ()))
            rows.append(f"| `{v.name}` | {default_cell(v)} | {sinks} | {meaning_cell(v)} |")
    return "\n".join(rows)
