"""Every ``CAPTURE_*`` setting of the extension, read once from the environment and validated.

The table :data:`VARIABLES` is the single source of truth: :class:`Settings` is built from it,
``docs/configuration.md`` documents it, and a drift test keeps the two in step. A bad value
gives one log line naming the variable and the value, then the default is used (or, for
settings a sink requires, that sink is disabled); ``CAPTURE_STRICT=1`` turns those problems
into an init error instead.

Standard library only: the extension reads its configuration before any heavy import.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from capture_ext import wire

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


class ConfigError(ValueError):
    """A setting has a value the extension cannot use."""


@dataclass(frozen=True, slots=True)
class Variable:
    """One documented environment variable."""

    name: str
    default: str
    doc: str
    parse: Callable[[str], Any] = str
    #: The attribute of :class:`Settings` it fills.
    attr: str = ""
    #: Shown in the docs instead of ``default`` when the default is computed.
    default_doc: str = ""
    #: Used instead of ``default`` when the value is invalid (fail closed, e.g. for redaction).
    fallback: str | None = None


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError("expected 1/0, true/false, yes/no or on/off")


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError("not an integer") from None


def _float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError("not a number") from None


def _positive_int(raw: str) -> int:
    value = _int(raw)
    if value <= 0:
        raise ConfigError("must be a positive integer")
    return value


#: Units accepted by the byte-size settings: binary (KiB = 1024) and decimal (KB = 1000), as
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
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz").strip()
    unit = text[len(number) :].strip()
    if unit not in SIZE_UNITS or not number:
        raise ConfigError("expected bytes, optionally with a unit: KiB, MiB, GiB (1024) or KB, MB, GB (1000)")
    try:
        value = float(number) * SIZE_UNITS[unit]
    except ValueError:
        raise ConfigError(f"{number!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")) or value != int(value):
        raise ConfigError("must be a whole number of bytes")
    return int(value)


def _positive_size(raw: str) -> int:
    value = parse_size(raw)
    if value <= 0:
        raise ConfigError("must be a positive number of bytes")
    return value


def _non_negative_float(raw: str) -> float:
    value = _float(raw)
    if value < 0 or value != value:
        raise ConfigError("must be a number >= 0")
    return value


def _fraction(raw: str) -> float:
    value = _float(raw)
    if not 0.0 <= value <= 1.0:
        raise ConfigError("must be between 0.0 and 1.0")
    return value


def _port(raw: str) -> int:
    value = _int(raw)
    if not 1 <= value <= 65535 or value == 9001:
        raise ConfigError("must be a TCP port in 1..65535 other than 9001 (reserved by Lambda)")
    return value


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"must be one of {', '.join(choices)}")
        return value

    return parse


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


VARIABLES: tuple[Variable, ...] = (
    Variable("CAPTURE_SINKS", "s3_jsonl", "Comma-separated sink names (built-in or plugin).", _csv, "sinks"),
    Variable(
        "CAPTURE_S3_BUCKET", "", "Bucket for the S3 sinks (required by `s3_jsonl` and `s3_parquet`).", str, "s3_bucket"
    ),
    Variable("CAPTURE_S3_PREFIX", "inference-capture", "Key prefix for the S3 sinks.", str, "s3_prefix"),
    Variable(
        "CAPTURE_JSONL_FORMAT",
        "capture",
        "`capture` (enriched records, under `jsonl/`) or `sagemaker` (SageMaker Data Capture schema, under "
        "`sagemaker/`) for `s3_jsonl`.",
        _choice("capture", "sagemaker"),
        "jsonl_format",
    ),
    Variable(
        "CAPTURE_SAGEMAKER_LAYOUT",
        "hive",
        "Key layout of `CAPTURE_JSONL_FORMAT=sagemaker`: `hive` (`function=/dt=/hour=/<batch>.jsonl.gz`) or "
        "`sagemaker` (SageMaker's `<function>/AllTraffic/yyyy/mm/dd/hh/<batch>.jsonl`, uncompressed).",
        _choice("hive", "sagemaker"),
        "sagemaker_layout",
    ),
    Variable(
        "CAPTURE_LOG_GROUP",
        "",
        "CloudWatch Logs group of the `cloudwatch` sink.",
        str,
        "log_group",
        "`/aws/capture-ext/<function>`",
    ),
    Variable(
        "CAPTURE_LOG_GROUP_CREATE",
        "1",
        "`1`: create the log group when it is missing (needs `logs:CreateLogGroup`).",
        _bool,
        "log_group_create",
    ),
    Variable(
        "CAPTURE_FIREHOSE_STREAM",
        "",
        "Delivery stream of the `firehose` sink (required by it).",
        str,
        "firehose_stream",
    ),
    Variable(
        "CAPTURE_FILE_DIR", "/tmp/capture-ext/files", "Directory of the `file` sink (JSON Lines).", str, "file_dir"
    ),
    Variable(
        "CAPTURE_FLUSH_INTERVAL_S",
        "60",
        "Maximum age (seconds) of buffered data before a flush is due; `0` flushes after every invoke.",
        _non_negative_float,
        "flush_interval_s",
    ),
    Variable(
        "CAPTURE_FLUSH_MAX_RECORDS",
        "1000",
        "A flush is due when this many records are buffered.",
        _positive_int,
        "flush_max_records",
    ),
    Variable(
        "CAPTURE_FLUSH_MAX_BYTES",
        str(5 * MIB),
        "A flush is due when this many bytes are buffered.",
        _positive_size,
        "flush_max_bytes",
        "5 MiB",
    ),
    Variable(
        "CAPTURE_FLUSH_TIMEOUT_S",
        "2",
        "Longest a flush after an invoke may take (billed time), counted from when the runtime is done with the "
        "invoke and never past the invoke's deadline; what is left waits for the next flush.",
        _non_negative_float,
        "flush_timeout_s",
    ),
    Variable(
        "CAPTURE_BUFFER_MAX_BYTES",
        str(64 * MIB),
        "Hard bound on the record bytes held in memory.",
        _positive_size,
        "buffer_max_bytes",
        "64 MiB",
    ),
    Variable(
        "CAPTURE_MAX_RECORD_BYTES",
        str(1 * MIB),
        "Largest accepted record (JSON bytes); larger gets 413.",
        _positive_size,
        "max_record_bytes",
        "1 MiB",
    ),
    Variable(
        "CAPTURE_MAX_REQUEST_BYTES",
        str(6 * MIB),
        "Largest accepted request body; larger gets 413.",
        _positive_size,
        "max_request_bytes",
        "6 MiB",
    ),
    Variable(
        "CAPTURE_SAMPLE_RATE",
        "1.0",
        "Fraction of inferences captured, decided in the client by a hash of `inference_id`.",
        _fraction,
        "sample_rate",
    ),
    Variable("CAPTURE_PORT", str(wire.PORT), "Loopback TCP port of the HTTP ingest endpoint.", _port, "port"),
    Variable(
        "CAPTURE_SOCKET",
        wire.SOCKET_PATH,
        "Unix socket of the fast local transport used by `capture_ext.client`.",
        str,
        "socket_path",
    ),
    Variable(
        "CAPTURE_CLIENT_TIMEOUT_MS",
        "5",
        "Function side: the most one `capture()` call may wait for the socket before it returns (fail-open).",
        _non_negative_float,
        "client_timeout_ms",
    ),
    Variable(
        "CAPTURE_WARMUP",
        "init",
        "When sinks open their clients and load their SDKs: `init` (after registration, overlapping the "
        "function's own init, so the first flush, maybe at SHUTDOWN, is warm) or `lazy` (at the first flush).",
        _choice("init", "lazy"),
        "warmup",
    ),
    Variable(
        "CAPTURE_HOLD_SOCKET",
        "0",
        "`1`: leave the handler's socket lines in the kernel until `platform.runtimeDone` (telemetry only), so "
        "the extension takes no CPU from the model while it runs; an invoke that captures more than the socket "
        "buffer (~208 KiB) then waits in `capture()` and keeps lines in the function's outbox. See "
        "docs/guarantees.md.",
        _bool,
        "hold_socket",
    ),
    Variable(
        "CAPTURE_STRICT",
        "0",
        "`1`: a configuration error fails Lambda init instead of disabling the sink loudly.",
        _bool,
        "strict",
    ),
    Variable("CAPTURE_LOG_LEVEL", "INFO", "Log level of the extension's own logs.", _log_level, "log_level"),
    Variable("CAPTURE_METRICS", "1", "`1`: print one CloudWatch EMF metrics line per flush.", _bool, "metrics"),
    Variable(
        "CAPTURE_METRICS_NAMESPACE", "CaptureExt", "CloudWatch namespace of the EMF metrics.", str, "metrics_namespace"
    ),
    Variable(
        "CAPTURE_SHUTDOWN_MARGIN_MS",
        "300",
        "Safety margin kept before a deadline: the SHUTDOWN drain, and a flush after an invoke, stop this early.",
        _non_negative_float,
        "shutdown_margin_ms",
    ),
    Variable(
        "CAPTURE_RUNTIME_DONE_TIMEOUT_MS",
        "100",
        "Without telemetry (as under AWS's RIE): how long a due flush waits for the client's handler-start line "
        "(`@capture_handler`) before assuming no done line will come and flushing anyway.",
        _non_negative_float,
        "runtime_done_timeout_ms",
    ),
    Variable(
        "CAPTURE_RETRY_MAX_ATTEMPTS",
        "5",
        "Attempts per batch and sink within one flush.",
        _positive_int,
        "retry_max_attempts",
    ),
    Variable("CAPTURE_DISABLED_PLUGINS", "", "Comma-separated plugin names not to load.", _csv, "disabled_plugins"),
    Variable(
        "CAPTURE_BREAKER_MAX_S",
        "300",
        "Longest pause of a failing sink's circuit breaker (it doubles from 1 s up to this); a throttling hint "
        "from the service lengthens it up to this bound.",
        _non_negative_float,
        "breaker_max_s",
    ),
    Variable(
        "CAPTURE_SPOOL_DIR",
        "",
        "Directory of the write-ahead spool (created 0700; files 0600). Survives an environment reset.",
        str,
        "spool_dir",
        "`capture-ext-spool` beside `CAPTURE_SOCKET` (`/tmp/capture-ext-spool`)",
    ),
    Variable(
        "CAPTURE_SPOOL_MAX_BYTES",
        str(128 * MIB),
        "Bound on the spool's disk use; when full, new records are refused and counted (`spool_full`). `0` = no spool.",
        _spool_bytes,
        "spool_max_bytes",
        "128 MiB",
    ),
    Variable(
        "CAPTURE_SPOOL_FSYNC",
        "flush",
        "When spooled data is forced to the device: `never`, `flush` (at every seal and at shutdown) or `always` "
        "(before every acknowledgement). Records are written (to the page cache) before the ack in every mode.",
        _choice("never", "flush", "always"),
        "spool_fsync",
    ),
    Variable(
        "CAPTURE_REDACT",
        "",
        "Comma-separated field paths masked (`path`) or hashed (`path:hash`) before anything is buffered or "
        "spooled, e.g. `input.context,metadata.user.email:hash` (syntax: docs/guarantees.md); an invalid value "
        "masks `input`, `output` and `metadata` whole.",
        _redact,
        "redact",
        fallback="input,output,metadata",
    ),
    Variable(
        "CAPTURE_REDACT_KEY",
        "",
        "HMAC key for `hash` redaction (never logged); without it `hash` is plain SHA-256.",
        str,
        "redact_key",
    ),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated configuration. Build it with :meth:`from_env`, never from ``os.environ`` at import."""

    sinks: tuple[str, ...] = ("s3_jsonl",)
    s3_bucket: str = ""
    s3_prefix: str = "inference-capture"
    jsonl_format: str = "capture"
    sagemaker_layout: str = "hive"
    log_group: str = ""
    log_group_create: bool = True
    firehose_stream: str = ""
    file_dir: str = "/tmp/capture-ext/files"
    flush_interval_s: float = 60.0
    flush_max_records: int = 1000
    flush_max_bytes: int = 5 * MIB
    flush_timeout_s: float = 2.0
    buffer_max_bytes: int = 64 * MIB
    max_record_bytes: int = 1 * MIB
    max_request_bytes: int = 6 * MIB
    sample_rate: float = 1.0
    port: int = 9009
    socket_path: str = wire.SOCKET_PATH
    client_timeout_ms: float = 5.0
    warmup: str = "init"
    hold_socket: bool = False
    strict: bool = False
    log_level: str = "INFO"
    metrics: bool = True
    metrics_namespace: str = "CaptureExt"
    shutdown_margin_ms: float = 300.0
    runtime_done_timeout_ms: float = 100.0
    retry_max_attempts: int = 5
    disabled_plugins: tuple[str, ...] = ()
    breaker_max_s: float = 300.0
    spool_dir: str = ""
    spool_max_bytes: int = 128 * MIB
    spool_fsync: str = "flush"
    redact: tuple[tuple[tuple[str, ...], str], ...] = ()
    redact_key: str = field(default="", repr=False)
    function_name: str = "local-function"
    function_version: str = "$LATEST"
    region: str = "us-east-1"
    #: Problems found while reading; each is one line naming the variable and its value.
    problems: tuple[str, ...] = field(default=())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every variable; bad values fall back to defaults and are reported."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        # (problem, what is done instead): with CAPTURE_STRICT=1 nothing is done instead, the init fails.
        problems: list[tuple[str, str]] = []
        for var in VARIABLES:
            raw = env.get(var.name)
            if raw is None:
                values[var.attr] = var.parse(var.default)
                continue
            try:
                values[var.attr] = var.parse(raw)
            except (ValueError, ConfigError) as exc:
                shown = "<hidden>" if var.attr.endswith("_key") else repr(raw)
                if var.fallback is None:
                    problems.append((f"{var.name}={shown} is invalid ({exc})", f"using the default {var.default!r}"))
                    values[var.attr] = var.parse(var.default)
                else:  # fail closed instead of falling back to a permissive default
                    problems.append((f"{var.name}={shown} is invalid ({exc})", f"using {var.fallback!r} instead"))
                    values[var.attr] = var.parse(var.fallback)
        function_name = env.get("AWS_LAMBDA_FUNCTION_NAME", "local-function")
        if not values["log_group"]:
            values["log_group"] = f"/aws/capture-ext/{function_name}"
        values["s3_prefix"] = values["s3_prefix"].strip("/")
        if not values["spool_dir"]:
            values["spool_dir"] = os.path.join(os.path.dirname(values["socket_path"]) or ".", "capture-ext-spool")
        if values["flush_max_bytes"] > values["buffer_max_bytes"]:
            problems.append(
                (
                    f"CAPTURE_FLUSH_MAX_BYTES={values['flush_max_bytes']} exceeds CAPTURE_BUFFER_MAX_BYTES="
                    f"{values['buffer_max_bytes']}",
                    "using CAPTURE_BUFFER_MAX_BYTES",
                )
            )
            values["flush_max_bytes"] = values["buffer_max_bytes"]
        return cls(
            **values,
            function_name=function_name,
            function_version=env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            problems=tuple(problem if values["strict"] else f"{problem}; {instead}" for problem, instead in problems),
        )

    def log_problems(self) -> None:
        for problem in self.problems:
            logger.error("configuration: %s", problem)


def markdown_table() -> str:
    """The variables table of ``docs/configuration.md`` (regenerate it with ``--markdown``)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for var in VARIABLES:
        default = var.default_doc or (f"`{var.default}`" if var.default else "—")
        rows.append(f"| `{var.name}` | {default} | {var.doc} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m capture_ext.core.config",
        description="Validate the CAPTURE_* variables of this environment, or print their documentation.",
    )
    parser.add_argument("--markdown", action="store_true", help="print the variables table of docs/configuration.md")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown_table() + "\n")
        return 0
    settings = Settings.from_env()
    for problem in settings.problems:
        sys.stderr.write(f"error: {problem}\n")
    for var in VARIABLES:
        value = getattr(settings, var.attr)
        shown = "<hidden>" if var.attr.endswith("_key") and value else repr(value)  # secrets stay secret
        sys.stdout.write(f"{var.name}={shown}\n")
    return 1 if settings.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
