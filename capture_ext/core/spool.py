"""The write-ahead spool: accepted records on disk before they are acknowledged.

Layout of ``CAPTURE_SPOOL_DIR`` (directory 0700, files 0600, owned by the extension's user):

- ``<environment_id>.lock``: held with ``flock`` by the live process that owns the id. A lock
  nobody holds means its owner died; the next process to start adopts that id's segments.
- ``<environment_id>-<n:06d>.seg``: append-only segments, one line per entry:
  ``H{...}`` the header, first line of every segment: the highest batch sequence its process had
  sealed before the segment was opened (so the segment alone says which ids are taken),
  ``{...}`` an enriched record (exactly the bytes the sinks will be given),
  ``S{...}`` a seal (batch id, sequence, record count and the byte range of its records),
  ``A{...}`` an acknowledgement (batch id and the sink that is done with it).

Records are appended before the client is answered (one ``write`` per request, or per socket
read); ``CAPTURE_SPOOL_FSYNC`` says when the data is also forced to the device. Segments rotate
only when a batch is sealed, so a batch's records sit in one byte range of one segment and a
replayed batch keeps its id, its records and therefore its S3 keys. A segment is deleted when it
and every older one hold no batch some sink still needs (acknowledgements written in a newer
segment are never lost before the batches they name).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from typing import Any

import orjson

from capture_ext.core.spool_format import (
    ACK,
    HEADER,
    SEAL,
    Adopted,
    Location,
    Scan,
    Segment,
    SpoolError,
    open_file,
    prepare_directory,
    scan_segment,
)

logger = logging.getLogger(__name__)

SEGMENT_BYTES = 8 * 1024 * 1024
#: How long opening the spool waits for its own lock while an adopter briefly holds it.
LOCK_WAIT_S = 2.0


class Spool:
    """Append, seal, acknowledge, read back and delete; all synchronous and short."""

    def __init__(self, directory: str, max_bytes: int, fsync: str, environment_id: str) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.environment_id = environment_id
        self.segments: list[Segment] = []
        self.bytes = 0
        #: Bytes of adopted segments (counted in ``bytes``, not against this process's bound).
        self.adopted_bytes = 0
        self.broken = ""
        self._locks: dict[str, int] = {}
        self._next_index = 1
        #: Highest batch sequence this process has sealed; every new segment starts with it.
        self.last_sequence = 0
        #: Kept free of records so that seal and acknowledgement lines always fit the bound.
        self.control_reserve = min(64 * 1024, max_bytes // 16)

    # -- opening and adoption ------------------------------------------------------------------
    def open(self) -> None:
        prepare_directory(self.directory)
        deadline = time.monotonic() + LOCK_WAIT_S
        # An adopter on a shared volume may hold our new lock file for a moment (and then delete it,
        # seeing no segment): wait for it rather than run without the lock.
        while not self._lock(self.environment_id):
            if time.monotonic() >= deadline:
                raise SpoolError(f"could not lock {self.environment_id}.lock in {self.directory!r}")
            time.sleep(0.01)
        self._rotate()

    def _lock(self, environment_id: str) -> bool:
        """Hold ``<environment_id>.lock``; False when another process holds it.

        A lock file can be unlinked by an adopter between our ``open`` and our ``flock``; a lock
        on an unlinked file protects nothing, so the file we locked must still be the one at the
        path, or we start again with a new one.
        """
        path = os.path.join(self.directory, f"{environment_id}.lock")
        for _ in range(100):
            fd = open_file(path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._locks[environment_id] = fd
                return True
            os.close(fd)
        raise SpoolError(f"the lock file {path!r} keeps being replaced")

    def adopt(self) -> list[Adopted]:
        """Take over the segments of processes that died; return their unfinished batches."""
        found: dict[str, list[tuple[int, str]]] = {}
        for name in os.listdir(self.directory):
            if name.endswith(".seg"):
                env, _, index = name[:-4].rpartition("-")
                # At least the six ASCII digits the spool writes: a shorter ``x-1.seg``, or one
                # numbered in other scripts' digits (``str.isdigit`` takes "²", ``int`` does not),
                # is not ours to cut and delete.
                if env and env != self.environment_id and len(index) >= 6 and index.isascii() and index.isdigit():
                    found.setdefault(env, []).append((int(index), name))
            elif name.endswith(".lock") and name[:-5] != self.environment_id:
                found.setdefault(name[:-5], [])
        dead: list[Segment] = []
        for env in sorted(found):
            if not self._lock(env):
                continue  # a live process owns it (a concurrent environment on a shared volume)
            segments = []
            for number, file_name in sorted(found[env]):
                path = os.path.join(self.directory, file_name)
                try:
                    segments.append(Segment(path, env, number, os.path.getsize(path)))
                except FileNotFoundError:
                    continue  # deleted by the process that adopted it before us, after our listing
            if not segments:
                self._forget(env)
                continue
            size = sum(segment.size for segment in segments)
            if dead and sum(d.size for d in dead) + size > self.max_bytes:
                # Enough for one process: the rest waits for another (or the next) process, so an
                # adopter's own records are never refused for what it inherited (see room()).
                os.close(self._locks.pop(env))
                continue
            dead += segments
        if not dead:
            return []
        scan = Scan()
        readable = []
        for segment in dead:
            try:
                scan_segment(segment, scan)
            except FileNotFoundError:
                continue
            readable.append(segment)
        dead = readable
        self._seal_runs(scan)
        # Our own new segment must come after the adopted ones in deletion order.
        self.segments[:0] = dead
        self.bytes += sum(s.size for s in dead)
        self.adopted_bytes += sum(s.size for s in dead)
        if scan.corrupt:
            logger.warning("spool: %d unreadable lines in adopted segments were skipped", scan.corrupt)
        adopted = [
            Adopted(
                batch_id=batch_id,
                environment_id=seal["e"],
                sequence=seal["q"],
                count=seal["n"],
                location=Location(seal["segment"], seal["s"], seal["t"]),
                acked=frozenset(scan.acks.get(batch_id, ())),
            )
            for batch_id, seal in scan.seals.items()
        ]
        return sorted(adopted, key=lambda a: (a.environment_id, a.sequence))

    def _seal_runs(self, scan: Scan) -> None:
        """Seal records a dead process left unsealed, with ids it can never have used.

        The id is the dead process's next sequence after the highest one any of its segments
        shows, header included: a segment that was just rotated holds no seal, yet its header
        says which ids are taken. Deterministic, so a second crash before this seal line lands
        picks the very same id again.
        """
        for segment, run in scan.runs:
            env = segment.environment_id
            sequence = scan.high.get(env, 0) + 1
            while f"{env}-{sequence:08d}" in scan.seals:  # never reuse an id, whatever the files say
                sequence += 1
            scan.saw_sequence(env, sequence)
            batch_id = f"{env}-{sequence:08d}"
            seal: dict[str, Any] = {"b": batch_id, "e": env, "q": sequence, "n": len(run), "s": run[0][0]}
            seal["t"] = run[-1][1]
            line = SEAL + orjson.dumps(seal) + b"\n"
            fd = open_file(segment.path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, line)
                if self.fsync != "never":
                    os.fsync(fd)
            finally:
                os.close(fd)
            segment.size += len(line)
            seal["segment"] = segment
            scan.seals[batch_id] = seal

    def _forget(self, environment_id: str) -> None:
        fd = self._locks.pop(environment_id, None)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.directory, f"{environment_id}.lock"))
        if fd is not None:
            os.close(fd)

    # -- writing -------------------------------------------------------------------------------
    @property
    def active(self) -> Segment:
        return self.segments[-1]

    def room(self, size: int) -> bool:
        """Whether ``size`` more bytes of this process's records fit (adopted segments do not count)."""
        own = self.bytes - self.adopted_bytes
        return not self.broken and own + size <= self.max_bytes - self.control_reserve

    def append(self, lines: list[bytes]) -> list[int] | None:
        """Write record lines in one call; their end offsets, or None when full or broken."""
        payload = b"\n".join(lines) + b"\n"
        if not self.room(len(payload)):
            return None
        segment = self.active
        start = segment.size
        if not self._write(segment, payload):
            return None
        if self.fsync == "always":
            self._sync(segment)
        ends, offset = [], start
        for line in lines:
            offset += len(line) + 1
            ends.append(offset)
        return ends

    def seal(self, batch_id: str, sequence: int, count: int, start: int, end: int) -> Location | None:
        """Record that ``[start, end)`` of the active segment is batch ``batch_id``."""
        return self.seal_many([(batch_id, sequence, count, start, end)])[0]

    def seal_many(self, batches: list[tuple[str, int, int, int, int]]) -> list[Location | None]:
        """Seal ``(batch_id, sequence, count, start, end)`` batches of the active segment in one write."""
        if self.broken or not batches:
            return [None] * len(batches)
        segment = self.active
        payload = b""
        for batch_id, sequence, count, start, end in batches:
            seal = {"b": batch_id, "e": self.environment_id, "q": sequence, "n": count, "s": start, "t": end}
            self.last_sequence = max(self.last_sequence, sequence)
            payload += SEAL + orjson.dumps(seal) + b"\n"
        if not self._write(segment, payload):
            return [None] * len(batches)
        segment.open_batches += len(batches)
        return [Location(segment, start, end) for _, _, _, start, end in batches]

    def sealed_all(self) -> None:
        """Called after the buffer was sealed: sync if asked to, and rotate a full segment."""
        if self.broken:
            return
        if self.fsync == "flush":
            self._sync(self.active)
        if self.active.size >= min(SEGMENT_BYTES, max(self.max_bytes // 8, 1024)):
            self._rotate()

    def ack(self, batch_id: str, sink: str) -> None:
        if not self.broken:
            self._write(self.active, ACK + orjson.dumps({"b": batch_id, "s": sink}) + b"\n")

    def hold(self, location: Location) -> None:
        """An adopted batch at ``location`` is still needed by some sink."""
        location.segment.open_batches += 1

    def release(self, location: Location) -> None:
        """Every sink is done with the batch at ``location``: delete what is no longer needed."""
        location.segment.open_batches -= 1
        self.release_empty()

    def _write(self, segment: Segment, payload: bytes) -> bool:
        try:
            written = 0
            view = memoryview(payload)
            while written < len(payload):
                written += os.write(segment.fd, view[written:])
        except OSError as exc:
            self._break(f"write to {segment.path} failed: {exc}")
            with contextlib.suppress(OSError):
                os.ftruncate(segment.fd, segment.size)
            return False
        segment.size += written
        self.bytes += written
        return True

    def _sync(self, segment: Segment) -> None:
        try:
            os.fsync(segment.fd)
        except OSError as exc:
            self._break(f"fsync of {segment.path} failed: {exc}")

    def _rotate(self) -> None:
        if self.segments and self.active.fd >= 0 and self.active.environment_id == self.environment_id:
            if self.fsync != "never":
                self._sync(self.active)
            os.close(self.active.fd)
            self.active.fd = -1
        index = self._next_index
        self._next_index += 1
        path = os.path.join(self.directory, f"{self.environment_id}-{index:06d}.seg")
        segment = Segment(path, self.environment_id, index)
        try:
            segment.fd = open_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        except OSError as exc:  # EIO, EMFILE, EDQUOT …: what is on disk stays valid, new records go to memory
            if not self.segments:
                raise  # opening the spool: the caller turns it off
            self._break(f"cannot open a new segment {path}: {exc}")
            return
        self.segments.append(segment)
        self._write(segment, HEADER + orjson.dumps({"q": self.last_sequence}) + b"\n")
        if self.fsync != "never":
            self._sync(segment)
            self._sync_directory()
        if len(self.segments) > 1:
            self.release_empty()

    def _sync_directory(self) -> None:
        """Make a new segment's name durable: fsync of the file does not cover its directory entry."""
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self._break(f"fsync of the directory {self.directory} failed: {exc}")

    def release_empty(self) -> None:
        """Delete the oldest segments while nothing in them is still needed."""
        while len(self.segments) > 1 and self.segments[0].open_batches <= 0:
            self._delete(self.segments.pop(0))

    def _delete(self, segment: Segment) -> None:
        if segment.fd >= 0:
            os.close(segment.fd)
            segment.fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(segment.path)
        self.bytes -= segment.size
        if segment.environment_id != self.environment_id:
            self.adopted_bytes -= segment.size
        env = segment.environment_id
        if env != self.environment_id and not any(s.environment_id == env for s in self.segments):
            self._forget(env)

    def _break(self, reason: str) -> None:
        if not self.broken:
            logger.error("spool: %s; new records are held in memory only from now on", reason)
        self.broken = reason

    # -- reading back --------------------------------------------------------------------------
    @staticmethod
    def read(location: Location) -> tuple[list[dict[str, Any]], int]:
        """The records of the batch at ``location`` and their JSON bytes (runs in a worker thread)."""
        with open(location.segment.path, "rb") as handle:
            handle.seek(location.start)
            data = handle.read(location.end - location.start)
        lines = [line for line in data.split(b"\n") if line[:1] == b"{"]
        return [orjson.loads(line) for line in lines], sum(len(line) for line in lines)

    def close(self, unsealed: int = 0) -> None:
        """Force what was written to the device (unless ``never``) and release the lock.

        When nothing is left to deliver (no open batch, no ``unsealed`` record) the files go too.
        """
        if not unsealed and all(s.open_batches <= 0 for s in self.segments):
            done, self.segments = self.segments, []
            for segment in done:
                self._delete(segment)
            for env in list(self._locks):
                self._forget(env)
        for segment in self.segments:
            if segment.fd >= 0:
                if self.fsync != "never" and not self.broken:
                    self._sync(segment)
                os.close(segment.fd)
                segment.fd = -1
        for env in list(self._locks):
            os.close(self._locks.pop(env))

    def describe(self) -> dict[str, Any]:
        return {
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "segments": len(self.segments),
            "fsync": self.fsync,
            "broken": self.broken or None,
        }
