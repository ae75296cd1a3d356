"""A local AWS Lambda for one function: the Runtime, Extensions and Telemetry APIs, real freezes, resets.

Unlike AWS's Runtime Interface Emulator, it delivers Telemetry API events, answers the caller as
soon as the runtime responds, and SIGSTOPs the sandbox between invokes, so an extension behaves
here as it would on Lambda. See ``LambdaEmulator``.
"""

from capture_ext.emulator.emulator import LambdaEmulator, PendingInvoke
from capture_ext.emulator.model import EmulatorConfig, Faults, InvokeResult, Reply, ShutdownReport
from capture_ext.emulator.telemetry import Delivery
from capture_ext.emulator.telemetry import Faults as TelemetryFaults

__all__ = [
    "Delivery",
    "EmulatorConfig",
    "Faults",
    "InvokeResult",
    "LambdaEmulator",
    "PendingInvoke",
    "Reply",
    "ShutdownReport",
    "TelemetryFaults",
]
