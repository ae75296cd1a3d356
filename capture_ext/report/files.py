"""Find the capture files a report window needs, for the engines that read files themselves.

Local folders are walked here rather than by a library, because a capture copy is user data: a
directory symlink loop must be entered once, not forty times or for ever, and a file reached
twice (through a link) is one file. Hive partitions (``function=``/``dt=``/``hour=``) outside the
window are skipped without being opened. A flat folder of ``*.jsonl`` files (the ``file`` sink's
output) is read whole: it has no partitions. On S3, listing and pruning go through
:func:`capture_ext.report.source.list_files`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from capture_ext.report.source import (
    FORMATS,
    PARTITION_SLACK,
    SUFFIXES,
    SourceError,
    Window,
    list_files,
    locate,
    open_filesystem,
)

if TYPE_CHECKING:
    import pyarrow.fs

FLAT_SUFFIXES = (".jsonl", ".jsonl.gz")


@dataclass(frozen=True)
class Listing:
    fmt: str
    paths: list[str]  # local paths, or s3://bucket/key
    filesystem: pyarrow.fs.FileSystem | None = None  # for s3://


def partition_bounds(window: Window) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """(dt, hour) of the first and last partition that can hold the window (None: unbounded);
    widened by the slack, and unbounded where the slack would leave the years a date can hold."""
    lo = hi = None
    try:
        if window.start is not None:
            t = window.start - PARTITION_SLACK
            lo = (t.strftime("%Y-%m-%d"), t.strftime("%H"))
    except OverflowError:
        lo = None
    try:
        if window.end is not None:
            t = window.end + PARTITION_SLACK
            hi = (t.strftime("%Y-%m-%d"), t.strftime("%H"))
    except OverflowError:
        hi = None
    return lo, hi


def _wanted(parts: dict[str, str], window: Window, function: str | None) -> bool:
    """Whether a folder's partition values (so far) may hold records of the window."""
    if function is not None and "function" in parts and parts["function"] != function:
        return False
    lo, hi = partition_bounds(window)
    dt, hour = parts.get("dt"), parts.get("hour")
    if dt is None:
        return True
    if lo is not None and (dt < lo[0] or (dt == lo[0] and hour is not None and hour < lo[1])):
        return False
    return not (hi is not None and (dt > hi[0] or (dt == hi[0] and hour is not None and hour > hi[1])))


def walk(base: str, suffixes: tuple[str, ...], window: Window, function: str | None) -> list[str]:
    """Files under ``base`` with one of ``suffixes``, each real file once, pruned by partition."""
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    found: list[str] = []
    stack: list[tuple[str, dict[str, str]]] = [(base, {})]
    while stack:
        folder, parts = stack.pop()
        try:
            st = os.stat(folder)
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise SourceError(f"cannot list {folder}: {exc.strerror or exc}") from exc
        if (st.st_dev, st.st_ino) in seen_dirs:
            continue  # a symlink loop, or a second link to a folder already read
        seen_dirs.add((st.st_dev, st.st_ino))
        for entry in sorted(entries, key=lambda e: e.name):
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError:
                continue  # a dangling or looping link
            if is_dir:
                key, sep, value = entry.name.partition("=")
                sub = dict(parts)
                if sep and key in ("function", "dt", "hour"):
                    sub[key] = value
                if _wanted(sub, window, function):
                    stack.append((entry.path, sub))
            elif is_file and entry.name.endswith(suffixes) and _wanted(parts, window, function):
                try:
                    fst = entry.stat()
                except OSError:
                    continue
                if (fst.st_dev, fst.st_ino) not in seen_files:
                    seen_files.add((fst.st_dev, fst.st_ino))
                    found.append(entry.path)
    return sorted(found)


def _flat_jsonl(path: str) -> bool:
    try:
        return any(e.is_file() and e.name.endswith(FLAT_SUFFIXES) for e in os.scandir(path))
    except OSError:
        return False


def find(uri: str, fmt: str, window: Window, function: str | None) -> Listing:
    """The files of ``uri`` (capture prefix, format folder or flat jsonl folder) for ``window``."""
    fs, path = open_filesystem(uri)
    if uri.startswith("s3://"):
        try:
            base, found_fmt = locate(fs, path, fmt)
        except OSError as exc:
            raise SourceError(f"cannot read {uri}: {exc}") from exc
        keys = list_files(fs, base, found_fmt, window, function)
        return Listing(found_fmt, [f"s3://{k}" for k in keys], fs)
    present = [f for f in FORMATS if os.path.isdir(os.path.join(path, f))]
    tail = os.path.basename(path.rstrip("/"))
    if tail in FORMATS or present:
        base, found_fmt = locate(fs, path, fmt)
        return Listing(found_fmt, walk(base, SUFFIXES[found_fmt], window, function))
    if fmt in ("auto", "jsonl") and _flat_jsonl(path):
        return Listing("jsonl", walk(path, FLAT_SUFFIXES, window, function))
    want = " or ".join(f"{path}/{f}/" for f in (FORMATS if fmt == "auto" else (fmt,)))
    raise SourceError(f"no captured data: expected {want}, or *.jsonl files (the file sink's output)")
