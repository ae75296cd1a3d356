"""Spool recovery paths issue 21's branch coverage found untaken: a damaged record line, a first
segment that cannot be created.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

import pytest

from capture_ext.core.spool_format import Scan, Segment, open_file, prepare_directory, scan_segment
from tests.unit.core.test_spool import die, line, open_spool


def test_a_record_line_whose_first_byte_is_damaged_is_counted_not_silently_dropped(tmp_path, caplog) -> None:
    """Regression (found by the coverage work): a line of no known type was skipped without being
    counted, so a record whose leading ``{`` was damaged vanished from every count."""
    dead = open_spool(tmp_path, "dead")
    assert dead.append([line(1, "dead"), line(2, "dead"), line(3, "dead")]) is not None
    path = dead.active.path
    die(dead)
    with open(path, "rb") as handle:
        data = handle.read()
    second = data.index(line(2, "dead"))
    with open(path, "r+b") as handle:
        handle.seek(second)
        handle.write(b"#")  # the second record's "{" damaged on disk

    heir = open_spool(tmp_path, "heir")
    with caplog.at_level(logging.WARNING, "capture_ext.core.spool"):
        adopted = heir.adopt()
    assert sum(a.count for a in adopted) == 2  # the two intact records are recovered
    assert "spool: 1 unreadable lines in adopted segments were skipped" in caplog.text


def test_a_first_segment_that_cannot_be_created_fails_the_open_for_the_caller_to_see(tmp_path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir(mode=0o700)
    (directory / "envA-000001.seg").mkdir()  # something in the way of the first segment
    with pytest.raises(IsADirectoryError):
        open_spool(directory)


# The on-disk format's edges (core/spool_format.py), written against the mutants `make mutate`
# left alive there.


@pytest.mark.parametrize("mode", [0o701, 0o710, 0o600, 0o711])
def test_a_spool_directory_with_any_mode_but_0700_is_set_to_0700(tmp_path, mode: int) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    os.chmod(directory, mode)
    prepare_directory(str(directory))
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700


def test_a_segment_or_lock_path_that_is_a_symlink_is_never_followed(tmp_path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"not ours")
    os.chmod(target, 0o644)
    os.symlink(target, tmp_path / "seg")
    with pytest.raises(OSError) as raised:
        open_file(str(tmp_path / "seg"), os.O_RDWR | os.O_CREAT | os.O_APPEND)
    assert raised.value.errno == errno.ELOOP
    assert target.read_bytes() == b"not ours" and stat.S_IMODE(os.stat(target).st_mode) == 0o644


def test_a_new_segment_file_is_0600_and_not_inherited(tmp_path) -> None:
    fd = open_file(str(tmp_path / "seg"), os.O_RDWR | os.O_CREAT | os.O_APPEND)
    try:
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        assert os.get_inheritable(fd) is False
    finally:
        os.close(fd)


def test_the_highest_sequence_seen_is_kept_whatever_the_order_of_the_lines() -> None:
    scan = Scan()
    scan.saw_sequence("a", 5)
    scan.saw_sequence("b", 9)
    scan.saw_sequence("a", 3)
    assert scan.high == {"a": 5, "b": 9}


def test_an_empty_first_line_is_counted_as_damage_and_the_records_after_it_are_kept(tmp_path) -> None:
    """A segment whose header line was reduced to its newline is not a torn end: reading it as one
    would truncate the segment to nothing and lose every record after it."""
    records = b'{"n":1}\n{"n":2}\n'
    path = tmp_path / "envA-00000001.seg"
    path.write_bytes(b"\n" + records)
    segment = Segment(str(path), "envA", 1)
    scan = Scan()
    scan_segment(segment, scan)
    assert scan.corrupt == 1
    assert [(s is segment, run) for s, run in scan.runs] == [(True, [(1, 9), (9, 17)])]
    assert segment.size == 17 and path.read_bytes() == b"\n" + records


def test_a_torn_last_line_is_cut_off_and_the_segment_ends_at_the_last_newline(tmp_path) -> None:
    path = tmp_path / "envA-00000001.seg"
    path.write_bytes(b'H{"q":4}\n{"n":1}\n{"n"')
    segment = Segment(str(path), "envA", 1)
    scan = Scan()
    scan_segment(segment, scan)
    assert (scan.corrupt, scan.high, segment.size) == (0, {"envA": 4}, 17)
    assert path.read_bytes() == b'H{"q":4}\n{"n":1}\n'
    assert [run for _, run in scan.runs] == [[(9, 17)]]
