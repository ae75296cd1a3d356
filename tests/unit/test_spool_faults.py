"""The spool when things go wrong: foreign or loose directories, held locks, corrupt segments,
failing writes and syncs, and what closing leaves behind."""

import errno
import logging
import os
import stat

import orjson
import pytest

import capture_ext.core.spool as spool_module
from capture_ext.core.spool import Spool, SpoolError, prepare_directory
from tests.unit.test_spool import die, line, open_spool


def test_a_directory_owned_by_another_user_is_refused(tmp_path, monkeypatch):
    (tmp_path / "spool").mkdir(mode=0o700)
    monkeypatch.setattr(spool_module.os, "getuid", lambda: os.stat(tmp_path).st_uid + 4242)
    with pytest.raises(SpoolError, match=r"belongs to uid \d+, not to this process"):
        prepare_directory(str(tmp_path / "spool"))


def test_a_loose_directory_is_tightened_to_owner_only(tmp_path):
    (tmp_path / "spool").mkdir()
    os.chmod(tmp_path / "spool", 0o755)
    prepare_directory(str(tmp_path / "spool"))
    assert stat.S_IMODE(os.stat(tmp_path / "spool").st_mode) == 0o700


def test_a_process_whose_lock_stays_held_gives_up_with_a_clear_error(tmp_path, monkeypatch):
    holder = open_spool(tmp_path / "spool", env="same")
    monkeypatch.setattr(spool_module, "LOCK_WAIT_S", 0.05)
    with pytest.raises(SpoolError, match=r"could not lock same\.lock"):
        open_spool(tmp_path / "spool", env="same")
    holder.close()
    assert open_spool(tmp_path / "spool", env="same").active.index == 1  # free again once released


def test_a_lock_file_that_keeps_being_replaced_is_an_error_not_a_silent_unlocked_run(tmp_path, monkeypatch):
    real_stat = os.stat

    def stat_after_unlink(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise FileNotFoundError(path)  # as if an adopter unlinked it right after our flock
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(spool_module.os, "stat", stat_after_unlink)
    spool = Spool(str(tmp_path / "spool"), 1_000_000, "never", "env")
    with pytest.raises(SpoolError, match="keeps being replaced"):
        spool.open()


def test_corrupt_lines_are_skipped_and_counted_the_torn_tail_is_cut_and_good_batches_survive(tmp_path, caplog):
    dead = open_spool(tmp_path, "dead")
    ends = dead.append([line(1, "dead"), line(2, "dead")])
    assert ends is not None
    dead.seal("dead-00000001", 1, 2, ends[0] - len(line(1, "dead")) - 1, ends[1])
    path = dead.active.path
    with open(path, "ab") as handle:
        handle.write(b"S{not json\n")  # a seal that is not JSON
        handle.write(b'A{"b": "dead-00000001"}\n')  # an ack without its sink
        handle.write(b'H{"q": "x"}\n')  # a header whose sequence is not a number
        handle.write(b'A{"b": "dead-00000001", "s": "a"}\n')
        handle.write(b"S{")  # torn: no newline
    good_size = os.path.getsize(path) - 2
    die(dead)

    heir = open_spool(tmp_path, "heir")
    with caplog.at_level(logging.WARNING, "capture_ext.core.spool"):
        adopted = heir.adopt()
    assert [(a.batch_id, a.acked, a.count) for a in adopted] == [("dead-00000001", frozenset({"a"}), 2)]
    assert "3 unreadable lines in adopted segments were skipped" in caplog.text
    assert os.path.getsize(path) == good_size  # the torn line is gone from the file too
    assert heir.bytes == heir.active.size + good_size


def test_an_unsealed_run_never_takes_an_id_a_seal_already_used(tmp_path):
    """A seal whose id and sequence disagree must still reserve its id."""
    dead = open_spool(tmp_path, "dead")
    ends = dead.append([line(1, "dead")])
    assert ends is not None
    dead.seal("dead-00000003", 2, 1, ends[0] - len(line(1, "dead")) - 1, ends[0])  # says q=2, is id 3
    dead.append([line(2, "dead")])
    die(dead)
    heir = open_spool(tmp_path, "heir")
    assert [a.batch_id for a in heir.adopt()] == ["dead-00000003", "dead-00000004"]


def test_a_lock_left_without_segments_is_cleaned_up(tmp_path):
    dead = open_spool(tmp_path, "dead")
    dead.close()  # nothing to deliver: segments and lock go
    assert sorted(os.listdir(tmp_path)) == []
    dead = open_spool(tmp_path, "dead")
    os.unlink(dead.active.path)  # the segment is gone (deleted by hand), the lock file is left
    die(dead)
    heir = open_spool(tmp_path, "heir")
    assert heir.adopt() == []
    assert not os.path.exists(tmp_path / "dead.lock")
    assert heir._locks.keys() == {"heir"}


def test_a_segment_vanishing_before_its_size_is_read_is_skipped(tmp_path, monkeypatch):
    dead = open_spool(tmp_path, "dead")
    dead.append([line(1, "dead")])
    die(dead)
    real_getsize = spool_module.os.path.getsize

    def getsize(path):
        if path.endswith(".seg"):
            raise FileNotFoundError(path)
        return real_getsize(path)

    monkeypatch.setattr(spool_module.os.path, "getsize", getsize)
    heir = open_spool(tmp_path, "heir")
    assert heir.adopt() == []
    assert "dead" not in heir._locks  # nothing of it left to hold


def test_a_failed_write_breaks_the_spool_once_and_leaves_no_partial_line(tmp_path, monkeypatch, caplog):
    spool = open_spool(tmp_path / "spool", fsync="never")
    before = spool.active.size

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.os, "write", full)
    with caplog.at_level(logging.ERROR, "capture_ext.core.spool"):
        assert spool.append([line(1)]) is None
        assert spool.append([line(2)]) is None  # broken: refused before any write
    assert spool.broken.startswith("write to") and "No space left" in spool.broken
    assert caplog.text.count("held in memory only") == 1
    assert os.path.getsize(spool.active.path) == before == spool.active.size
    # Everything else becomes a no-op instead of writing into a broken spool.
    assert spool.seal("envA-00000001", 1, 1, 0, 10) is None
    spool.ack("envA-00000001", "s3")
    spool.sealed_all()
    assert not spool.room(1)
    assert spool.describe()["broken"] == spool.broken


def test_a_seal_that_cannot_be_written_returns_no_location(tmp_path, monkeypatch):
    spool = open_spool(tmp_path / "spool", fsync="never")
    ends = spool.append([line(1)])
    assert ends is not None
    monkeypatch.setattr(spool_module.os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.EIO, "EIO")))
    assert spool.seal("envA-00000001", 1, 1, 0, ends[0]) is None
    assert spool.active.open_batches == 0 and spool.broken


def test_a_failing_fsync_breaks_the_spool(tmp_path, monkeypatch):
    spool = open_spool(tmp_path / "spool", fsync="always")

    def failing(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(spool_module.os, "fsync", failing)
    assert spool.append([line(1)]) is not None  # the write itself happened
    assert spool.broken.startswith("fsync of") and "Input/output error" in spool.broken
    assert spool.append([line(2)]) is None


def test_a_failing_directory_fsync_breaks_the_spool(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd):
        if os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.EIO, "Input/output error")
        return real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", fsync)
    spool = open_spool(tmp_path / "spool", fsync="flush")
    assert spool.broken.startswith(f"fsync of the directory {tmp_path / 'spool'}")


def test_flush_mode_syncs_at_each_seal_only(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync
    spool = open_spool(tmp_path / "spool", fsync="flush")

    def fsync(fd):
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", fsync)
    ends = spool.append([line(1)])
    assert ends is not None and synced == []  # an append alone is not forced to the device
    spool.seal("envA-00000001", 1, 1, 0, ends[0])
    spool.sealed_all()
    assert synced == [spool.active.fd]


def test_closing_with_work_left_keeps_the_files_for_the_next_process(tmp_path):
    spool = open_spool(tmp_path / "spool")
    ends = spool.append([line(1)])
    assert ends is not None
    spool.close(unsealed=1)  # records not yet sealed: they must survive
    assert sorted(os.listdir(tmp_path / "spool")) == ["envA-000001.seg", "envA.lock"]
    assert spool.active.fd == -1 and spool._locks == {}

    spool = open_spool(tmp_path / "other", env="envB")
    ends = spool.append([line(1, "envB")])
    assert ends is not None
    spool.seal("envB-00000001", 1, 1, 0, ends[0])
    spool.close()  # a sealed batch some sink still needs: kept too
    assert "envB-000001.seg" in os.listdir(tmp_path / "other")
    heir = open_spool(tmp_path / "other", env="heir")
    assert [a.batch_id for a in heir.adopt()] == ["envB-00000001"]


def test_closing_with_nothing_left_removes_every_file_including_adopted_ones(tmp_path):
    dead = open_spool(tmp_path, "dead")
    ends = dead.append([line(1, "dead")])
    assert ends is not None
    dead.seal("dead-00000001", 1, 1, 0, ends[0])
    die(dead)
    heir = open_spool(tmp_path, "heir")
    (adopted,) = heir.adopt()
    heir.hold(adopted.location)
    heir.release(adopted.location)
    heir.close()
    assert os.listdir(tmp_path) == []
    assert heir.describe() == {"bytes": 0, "max_bytes": 10_000_000, "segments": 0, "fsync": "flush", "broken": None}


def test_read_back_skips_seal_and_ack_lines_inside_the_range(tmp_path):
    spool = open_spool(tmp_path / "spool")
    ends = spool.append([line(1)])
    assert ends is not None
    spool.ack("other-1", "s3")  # an ack written between two appends of one batch
    ends2 = spool.append([line(2)])
    assert ends2 is not None
    location = spool.seal("envA-00000001", 1, 2, ends[0] - len(line(1)) - 1, ends2[0])
    assert location is not None
    records, size = Spool.read(location)
    assert [r["sequence"] for r in records] == [1, 2] and size == len(line(1)) + len(line(2))
    assert orjson.loads(orjson.dumps(records[0])) == records[0]
