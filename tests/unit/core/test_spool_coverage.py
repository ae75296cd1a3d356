"""Spool recovery paths issue 21's branch coverage found untaken: a damaged record line, a first
segment that cannot be created.
"""

from __future__ import annotations

import logging

import pytest

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
