"""The spool's files: what a segment line is, and reading a segment back after a crash.

The layout is described in ``spool.py``; this module holds the pieces that know the bytes on
disk (the types of line, the directory's and files' permissions, the scan of a segment), so
the spool itself is about appending, sealing, acknowledging and deleting.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

import orjson

SEAL, ACK, HEADER = b"S", b"A", b"H"


class SpoolError(OSError):
    """The spool directory or a segment cannot be used safely."""


@dataclass(slots=True, eq=False)
class Segment:
    path: str
    environment_id: str
    index: int
    size: int = 0
    #: Sealed batches in this segment that some sink still needs.
    open_batches: int = 0
    fd: int = -1


@dataclass(frozen=True, slots=True)
class Location:
    """Where a batch's record lines are: ``[start, end)`` of one segment."""

    segment: Segment
    start: int
    end: int


@dataclass(slots=True)
class Adopted:
    """A batch left by a dead process, with the sinks that had not acknowledged it."""

    batch_id: str
    environment_id: str
    sequence: int
    count: int
    location: Location
    #: Sinks that had acknowledged it (delivered, or dropped it as fatal) before the crash.
    acked: frozenset[str]


@dataclass(slots=True)
class Scan:
    """What reading a dead process's segments found: seals, acknowledgements, damage, unsealed runs."""

    seals: dict[str, dict[str, Any]] = field(default_factory=dict)
    acks: dict[str, set[str]] = field(default_factory=dict)
    corrupt: int = 0
    #: Per environment: the highest batch sequence any of its segments shows (seal or header).
    high: dict[str, int] = field(default_factory=dict)
    #: Unsealed record runs left at the end of a segment: (segment, [(start, end), ...]).
    runs: list[tuple[Segment, list[tuple[int, int]]]] = field(default_factory=list)

    def saw_sequence(self, environment_id: str, sequence: int) -> None:
        self.high[environment_id] = max(self.high.get(environment_id, 0), sequence)


def open_file(path: str, flags: int) -> int:
    """A segment or lock file, 0600, never through a symlink, never inherited by a child."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def prepare_directory(path: str) -> None:
    """Create ``path`` 0700, or refuse one that is a symlink, not ours, or not a directory."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise SpoolError(f"CAPTURE_SPOOL_DIR={path!r} is not a directory (a symlink is refused)")
    if info.st_uid != os.getuid():
        raise SpoolError(f"CAPTURE_SPOOL_DIR={path!r} belongs to uid {info.st_uid}, not to this process")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


def scan_segment(segment: Segment, scan: Scan) -> None:
    """Read the header, seals and acks; remember records no seal of this segment covers.

    A record is sealed when it lies inside the byte range of a seal line of its segment, not
    merely because a seal line follows it: one flush writes several seals, and a kill between
    two of them leaves records *before* the last seal line that no seal covers.
    """
    with open(segment.path, "rb") as handle:
        data = handle.read()
    position = 0
    records: list[tuple[int, int]] = []  # (start, end) of every record line
    covered: list[tuple[int, int]] = []  # [s, t) of every seal of this segment
    while position < len(data):
        end = data.find(b"\n", position)
        if end < 0:
            break  # a torn last line: never acknowledged, dropped below
        line = data[position:end]
        try:
            if line[:1] == b"{":
                records.append((position, end + 1))
            elif line[:1] == SEAL:
                seal = orjson.loads(line[1:])
                seal["segment"] = segment
                scan.seals[seal["b"]] = seal
                scan.saw_sequence(seal["e"], int(seal["q"]))
                covered.append((int(seal["s"]), int(seal["t"])))
            elif line[:1] == ACK:
                ack = orjson.loads(line[1:])
                scan.acks.setdefault(ack["b"], set()).add(ack["s"])
            elif line[:1] == HEADER:
                scan.saw_sequence(segment.environment_id, int(orjson.loads(line[1:])["q"]))
            else:  # a record whose first byte was damaged, or nothing the spool writes: counted
                raise ValueError("unknown line type")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            scan.corrupt += 1
        position = end + 1
    segment.size = position
    if position < len(data):
        os.truncate(segment.path, position)
    run: list[tuple[int, int]] = []
    for start, end in records:  # uncovered records, in runs that no sealed record interrupts
        if any(low <= start and end <= high for low, high in covered):
            if run:
                scan.runs.append((segment, run))
                run = []
        else:
            run.append((start, end))
    if run:
        scan.runs.append((segment, run))
