"""The extension's own ``CAPTURE_*`` settings, read once from the environment and validated.

Each setting is declared once, as a field of :class:`Settings` made by
:func:`capture_ext.variables.setting`: the variable's name, default, meaning and parser live in
the field's metadata, the field's default is that default parsed, and :data:`VARIABLES` is
derived from the fields. So ``Settings()`` and ``Settings.from_env({})`` cannot disagree, and
``docs/configuration.md`` is generated from the same declarations (a drift test keeps it so).

Sinks are not configured here: each sink owns a config object read from ``SinkContext.env`` and
registers its variables with the sink (``register(name, factory, variables=...)``).

A bad value gives one log line naming the variable and the value, then the default is used;
``CAPTURE_STRICT=1`` turns those problems into an init error instead.

Standard library only: the extension reads its configuration before any heavy import.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from capture_ext import wire
from capture_ext.variables import (
    MIB,
    ConfigError,
    Variable,
    boolean,
    choice,
    config_fields,
    csv,
    integer,
    non_negative,
    number,
    parse_size,
    positive_int,
    positive_size,
    setting,
)

__all__ = ["MIB", "VARIABLES", "ConfigError", "Settings", "Variable", "parse_size"]

logger = logging.getLogger(__name__)


def _fraction(raw: str) -> float:
    value = number(raw)
    if not 0.0 <= value <= 1.0:
        raise ConfigError("must be between 0.0 and 1.0")
    return value


def _port(raw: str) -> int:
    value = integer(raw)
    if not 1 <= value <= 65535 or value == 9001:
        raise ConfigError("must be a TCP port in 1..65535 other than 9001 (reserved by Lambda)")
    return value


def _redact(raw: str) -> tuple[tuple[tuple[str, ...], str], ...]:
    from capture_ext.core.redact import parse_rules

    return parse_rules(raw)


def _spool_bytes(raw: str) -> int:
    value = parse_size(raw)
    if value < 0:
        raise ConfigError("must be 0 (spool off) or a positive number of bytes")
    return value


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ConfigError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated configuration. Build it with :meth:`from_env`, never from ``os.environ`` at import."""

    sinks: tuple[str, ...] = setting(
        "CAPTURE_SINKS",
        "s3_jsonl",
        "Comma-separated sink names (built-in or plugin); each sink's own variables are listed below.",
        csv,
    )
    flush_interval_s: float = setting(
        "CAPTURE_FLUSH_INTERVAL_S",
        "60",
        "Maximum age (seconds) of buffered data before a flush is due; `0` flushes after every invoke.",
        non_negative,
    )
    flush_max_records: int = setting(
        "CAPTURE_FLUSH_MAX_RECORDS", "1000", "A flush is due when this many records are buffered.", positive_int
    )
    flush_max_bytes: int = setting(
        "CAPTURE_FLUSH_MAX_BYTES",
        str(5 * MIB),
        "A flush is due when this many bytes are buffered.",
        positive_size,
        default_doc="5 MiB",
    )
    flush_timeout_s: float = setting(
        "CAPTURE_FLUSH_TIMEOUT_S",
        "2",
        "Longest a flush after an invoke may take (billed time), counted from when the runtime is done with the "
        "invoke and never past the invoke's deadline; what is left waits for the next flush.",
        non_negative,
    )
    buffer_max_bytes: int = setting(
        "CAPTURE_BUFFER_MAX_BYTES",
        str(64 * MIB),
        "Hard bound on the record bytes held in memory.",
        positive_size,
        default_doc="64 MiB",
    )
    max_record_bytes: int = setting(
        "CAPTURE_MAX_RECORD_BYTES",
        str(1 * MIB),
        "Largest accepted record (JSON bytes); larger gets 413.",
        positive_size,
        default_doc="1 MiB",
    )
    max_request_bytes: int = setting(
        "CAPTURE_MAX_REQUEST_BYTES",
        str(6 * MIB),
        "Largest accepted request body; larger gets 413.",
        positive_size,
        default_doc="6 MiB",
    )
    sample_rate: float = setting(
        "CAPTURE_SAMPLE_RATE",
        "1.0",
        "Fraction of inferences captured, decided in the client by a hash of `inference_id`.",
        _fraction,
    )
    port: int = setting("CAPTURE_PORT", str(wire.PORT), "Loopback TCP port of the HTTP ingest endpoint.", _port)
    socket_path: str = setting(
        "CAPTURE_SOCKET", wire.SOCKET_PATH, "Unix socket of the fast local transport used by `capture_ext.client`."
    )
    client_timeout_ms: float = setting(
        "CAPTURE_CLIENT_TIMEOUT_MS",
        "5",
        "Function side: the most one `capture()` call may wait for the socket before it returns (fail-open).",
        non_negative,
    )
    warmup: str = setting(
        "CAPTURE_WARMUP",
        "init",
        "When sinks open their clients and load their SDKs: `init` (after registration, overlapping the "
        "function's own init, so the first flush, maybe at SHUTDOWN, is warm) or `lazy` (at the first flush).",
        choice("init", "lazy"),
    )
    hold_socket: bool = setting(
        "CAPTURE_HOLD_SOCKET",
        "0",
        "`1`: leave the handler's socket lines in the kernel until `platform.runtimeDone` (telemetry only), so "
        "the extension takes no CPU from the model while it runs; an invoke that captures more than the socket "
        "buffer (~208 KiB) then waits in `capture()` and keeps lines in the function's outbox. See "
        "docs/guarantees.md.",
        boolean,
    )
    stay_awake: bool = setting(
        "CAPTURE_STAY_AWAKE",
        "0",
        "`1`: as `CAPTURE_HOLD_SOCKET=1`, and with no flush due still wait for the invoke's "
        "`platform.runtimeDone` before going back to `/next`, so the held lines are read after the runtime "
        "is done instead of in the next handler's window; once a client has connected, costs billed "
        "post-runtime time on every invoke (up to the Telemetry API's 25 ms batching). See docs/guarantees.md.",
        boolean,
    )
    strict: bool = setting(
        "CAPTURE_STRICT",
        "0",
        "`1`: a configuration error fails Lambda init instead of disabling the sink loudly.",
        boolean,
    )
    log_level: str = setting("CAPTURE_LOG_LEVEL", "INFO", "Log level of the extension's own logs.", _log_level)
    metrics: bool = setting("CAPTURE_METRICS", "1", "`1`: print one CloudWatch EMF metrics line per flush.", boolean)
    metrics_namespace: str = setting(
        "CAPTURE_METRICS_NAMESPACE", "CaptureExt", "CloudWatch namespace of the EMF metrics."
    )
    shutdown_margin_ms: float = setting(
        "CAPTURE_SHUTDOWN_MARGIN_MS",
        "300",
        "Safety margin kept before a deadline: the SHUTDOWN drain, and a flush after an invoke, stop this early.",
        non_negative,
    )
    runtime_done_timeout_ms: float = setting(
        "CAPTURE_RUNTIME_DONE_TIMEOUT_MS",
        "100",
        "Without telemetry (as under AWS's RIE): how long a due flush waits for the client's handler-start line "
        "(`@capture_handler`) before assuming no done line will come and flushing anyway.",
        non_negative,
    )
    retry_max_attempts: int = setting(
        "CAPTURE_RETRY_MAX_ATTEMPTS", "5", "Attempts per batch and sink within one flush.", positive_int
    )
    disabled_plugins: tuple[str, ...] = setting(
        "CAPTURE_DISABLED_PLUGINS", "", "Comma-separated plugin names not to load.", csv
    )
    breaker_max_s: float = setting(
        "CAPTURE_BREAKER_MAX_S",
        "300",
        "Longest pause of a failing sink's circuit breaker (it doubles from 1 s up to this); a throttling hint "
        "from the service lengthens it up to this bound.",
        non_negative,
    )
    #: Empty in the environment means "beside the socket"; ``__post_init__`` resolves it.
    spool_dir: str = setting(
        "CAPTURE_SPOOL_DIR",
        "",
        "Directory of the write-ahead spool (created 0700; files 0600). Survives an environment reset.",
        default_doc="`capture-ext-spool` beside `CAPTURE_SOCKET` (`/tmp/capture-ext-spool`)",
    )
    spool_max_bytes: int = setting(
        "CAPTURE_SPOOL_MAX_BYTES",
        str(128 * MIB),
        "Bound on the spool's disk use; when full, new records are refused and counted (`spool_full`). `0` = no spool.",
        _spool_bytes,
        default_doc="128 MiB",
    )
    spool_fsync: str = setting(
        "CAPTURE_SPOOL_FSYNC",
        "flush",
        "When spooled data is forced to the device: `never`, `flush` (at every seal and at shutdown) or `always` "
        "(before every acknowledgement). Records are written (to the page cache) before the ack in every mode.",
        choice("never", "flush", "always"),
    )
    redact: tuple[tuple[tuple[str, ...], str], ...] = setting(
        "CAPTURE_REDACT",
        "",
        "Comma-separated field paths masked (`path`) or hashed (`path:hash`) before anything is buffered or "
        "spooled, e.g. `input.context,metadata.user.email:hash` (syntax: docs/guarantees.md); an invalid value "
        "masks `input`, `output` and `metadata` whole.",
        _redact,
        fallback="input,output,metadata",
    )
    redact_key: str = setting(
        "CAPTURE_REDACT_KEY",
        "",
        "HMAC key for `hash` redaction; without it `hash` is plain SHA-256.",
        secret=True,
    )
    # Not CAPTURE_* variables: what Lambda says about the function (AWS_LAMBDA_FUNCTION_NAME and so on).
    function_name: str = "local-function"
    function_version: str = "$LATEST"
    region: str = "us-east-1"
    #: Problems found while reading; each is one line naming the variable and its value.
    problems: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.spool_dir:
            object.__setattr__(
                self, "spool_dir", os.path.join(os.path.dirname(self.socket_path) or ".", "capture-ext-spool")
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every variable; bad values fall back to defaults and are reported."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        # (problem, what is done instead): with CAPTURE_STRICT=1 nothing is done instead, the init fails.
        problems: list[tuple[str, str]] = []
        for attr, var in config_fields(cls):
            raw = env.get(var.name)
            if raw is None:
                continue  # the field's default
            try:
                values[attr] = var.parse(raw)
            except ValueError as exc:
                problem = f"{var.name}={var.shown(raw)} is invalid ({exc})"
                if var.fallback is None:
                    problems.append((problem, f"using the default {var.default!r}"))
                else:  # fail closed instead of falling back to a permissive default
                    problems.append((problem, f"using {var.fallback!r} instead"))
                    values[attr] = var.parse(var.fallback)
        defaults = cls()
        flush_max = values.get("flush_max_bytes", defaults.flush_max_bytes)
        buffer_max = values.get("buffer_max_bytes", defaults.buffer_max_bytes)
        if flush_max > buffer_max:
            problems.append(
                (
                    f"CAPTURE_FLUSH_MAX_BYTES={flush_max} exceeds CAPTURE_BUFFER_MAX_BYTES={buffer_max}",
                    "using CAPTURE_BUFFER_MAX_BYTES",
                )
            )
            values["flush_max_bytes"] = buffer_max
        strict = values.get("strict", defaults.strict)
        return cls(
            **values,
            function_name=env.get("AWS_LAMBDA_FUNCTION_NAME") or defaults.function_name,
            function_version=env.get("AWS_LAMBDA_FUNCTION_VERSION") or defaults.function_version,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or defaults.region,
            problems=tuple(problem if strict else f"{problem}; {instead}" for problem, instead in problems),
        )

    def log_problems(self) -> None:
        for problem in self.problems:
            logger.error("configuration: %s", problem)


#: Every variable of the extension's core, in the order of :class:`Settings`.
VARIABLES: tuple[Variable, ...] = tuple(var for _, var in config_fields(Settings))


def main(argv: list[str] | None = None) -> int:
    from capture_ext.core.config_check import main as check

    return check(argv)


if __name__ == "__main__":
    raise SystemExit(main())
