"""The emulator's vocabulary: its configuration, the parties in a sandbox, and what an invoke returns."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from capture_ext.emulator.telemetry import Faults as TelemetryFaults

MAX_RESPONSE_BYTES = 6 * 1024 * 1024 + 100  # RIE's limit on a runtime response (6 MiB plus framing slack)
MAX_EXTENSIONS = 10
RIE_ACCOUNT_ID = "012345678912"  # the account in every ARN AWS's RIE hands out
RIE_SHUTDOWN_REASON = "SandboxTerminated"  # RIE's SHUTDOWN reason when it is stopped
RIE_RESET_REASONS = {"failure": "ReleaseFail"}  # RIE's SHUTDOWN reason after a crash (Lambda: "failure")
KillMoment = Literal["init", "invoke", "response", "frozen"]


@dataclass
class Faults:
    """Fault knobs: the conditions capture-ext has to survive on Lambda, on demand.

    ``kill_extension`` names an extension to SIGKILL at ``kill_at`` of invoke number
    ``kill_on_invoke`` (1-based; ``init`` kills it right after it registers): ``invoke`` while the
    handler runs, ``response`` just after the runtime posted its response, ``frozen`` once the
    sandbox is frozen after the invoke.
    """

    telemetry: TelemetryFaults = field(default_factory=TelemetryFaults)
    kill_extension: str | None = None
    kill_at: KillMoment = "response"
    kill_on_invoke: int = 1


@dataclass
class EmulatorConfig:
    """Everything that describes one emulated function."""

    handler: str
    task_root: Path
    extensions_dir: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    function_name: str = "capture-fn"
    function_version: str = "$LATEST"
    memory_mb: int = 1024
    timeout_s: float = 30.0
    region: str = "us-east-1"
    account_id: str = "123456789012"
    telemetry: Literal["on", "stub"] = "on"
    freeze: bool = True
    init_timeout_s: float = 10.0
    shutdown_budget_ms: int = 2000
    runtime_shutdown_ms: int = 300
    python: str = sys.executable
    # The coverage variables let a measured test run measure the function and extensions too.
    inherit_env: tuple[str, ...] = (
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "PYTHONDONTWRITEBYTECODE",
        "COVERAGE_PROCESS_CONFIG",
        "COVERAGE_PROCESS_START",
    )
    faults: Faults = field(default_factory=Faults)
    # Behave as AWS's Runtime Interface Emulator does, observable difference by difference
    # (docs/emulator.md, "RIE mode"): implies telemetry="stub" and freeze=False.
    rie: bool = False

    def __post_init__(self) -> None:
        self.task_root = Path(self.task_root)
        if self.rie:
            self.telemetry, self.freeze, self.account_id = "stub", False, RIE_ACCOUNT_ID
        if self.extensions_dir is not None:
            self.extensions_dir = Path(self.extensions_dir)
        if self.telemetry not in ("on", "stub"):
            raise ValueError(f"telemetry must be 'on' or 'stub', got {self.telemetry!r}")
        if not 0 < self.shutdown_budget_ms <= 60_000:
            raise ValueError(f"shutdown_budget_ms must be in (0, 60000], got {self.shutdown_budget_ms}")
        if "." not in self.handler:
            raise ValueError(f"handler must look like 'module.function', got {self.handler!r}")

    @property
    def function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.function_name}"


class SandboxFailure(Exception):
    """The environment cannot go on (crash, init error): it must be reset."""

    def __init__(self, error_type: str, message: str, reason: str = "failure") -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type, self.message, self.reason = error_type, message, reason


@dataclass(eq=False)
class Agent:
    """A registered extension, seen through its calls to the Extensions API."""

    name: str
    events: frozenset[str]
    external: bool
    identifier: str = field(default_factory=lambda: str(uuid.uuid4()))
    idle: bool = False  # blocked in /event/next with nothing to deliver
    ready: bool = False  # has called /event/next at least once
    errored: str | None = None  # error type from init/error or exit/error
    mailbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    def deliver(self, event: dict[str, Any]) -> None:
        self.idle = False
        self.mailbox.put_nowait(event)


@dataclass
class Reply:
    """What the runtime answered for one invoke."""

    status: Literal["success", "error", "timeout", "failure"]
    body: bytes
    error_type: str | None = None
    content_type: str = "application/json"


@dataclass(eq=False)
class Invocation:
    """One invoke as the sandbox tracks it."""

    number: int
    payload: bytes
    deadline_ms: int
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    trace_id: str = ""
    client_context: str = ""
    cognito_identity: str = ""
    started_at: float = 0.0
    responded_at: float | None = None
    runtime_done_at: float | None = None
    ended_at: float | None = None
    reply: asyncio.Future[Reply] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def answer(self, reply: Reply, at: float) -> None:
        if not self.reply.done():
            self.responded_at = at
            self.reply.set_result(reply)


@dataclass(frozen=True)
class InvokeResult:
    """What a caller of the emulator gets: the answer plus the timings Lambda would bill.

    ``duration_ms`` runs from the invoke to the runtime's response, ``post_runtime_ms`` from the
    response to the moment the last INVOKE subscriber was back in ``/next`` (Lambda's
    ``PostRuntimeExtensionsDuration``); it is ``None`` when the invoke ended in a reset.
    """

    request_id: str
    status: str
    raw: bytes
    error_type: str | None
    duration_ms: float
    post_runtime_ms: float | None
    phase_ms: float
    init_ms: float | None = None
    reset_reason: str | None = None

    @property
    def payload(self) -> Any:
        try:
            return json.loads(self.raw)
        except ValueError:
            return self.raw.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return self.status == "success"


@dataclass(frozen=True)
class ShutdownReport:
    """How an environment ended: why, how long it took, who was SIGKILLed."""

    reason: str
    duration_ms: float
    deadline_ms: int
    exit_codes: dict[str, int | None]
    killed: tuple[str, ...]
    notified: tuple[str, ...]


class ApiError(Exception):
    """An API call the platform refuses: HTTP status plus Lambda's ``{errorMessage, errorType}`` body."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message

    @property
    def body(self) -> dict[str, str]:
        return {"errorMessage": self.message, "errorType": self.error_type}
