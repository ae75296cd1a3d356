"""The spool when things go wrong: foreign or loose directories, held locks, corrupt segments,
failing writes and syncs, and what closing leaves behind."""

import contextlib
import errno
import fcntl
import logging
import os
import stat
from types import SimpleNamespace

import orjson
import pytest

import capture_ext.core.spool as spool_module
from capture_ext.core.spool import Spool, SpoolError, prepare_directory
from capture_ext.core.spool_format import open_file
from tests.unit.core.test_spool import die, line, open_spool


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


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o000])
def test_a_new_directory_is_owner_only_from_the_instant_it_exists(tmp_path, monkeypatch, umask):
    """Created 0700 by ``mkdir`` itself, not loosened by the umask and tightened after: no other
    user can enter it in between (every chmod is recorded here, and none may be needed)."""
    chmods: list[str] = []
    monkeypatch.setattr(spool_module.os, "chmod", lambda path, mode: chmods.append(path))
    previous = os.umask(umask)
    try:
        prepare_directory(str(tmp_path / "new" / "spool"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "spool").st_mode) == 0o700
    assert chmods == []


def test_a_new_segment_or_lock_file_is_0600_from_the_instant_it_exists(tmp_path, monkeypatch):
    """Created 0600 by ``open`` itself; the ``fchmod`` after it (for a file that existed, looser)
    is made to do nothing here, and the umask to take nothing away."""
    monkeypatch.setattr(spool_module.os, "fchmod", lambda fd, mode: None)
    previous = os.umask(0)
    try:
        fd = open_file(str(tmp_path / "env-000001.seg"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    finally:
        os.umask(previous)
    os.close(fd)
    assert stat.S_IMODE(os.stat(tmp_path / "env-000001.seg").st_mode) == 0o600


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
    assert [r.getMessage() for r in caplog.records] == ["spool: 3 unreadable lines in adopted segments were skipped"]
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
    assert [r.getMessage() for r in caplog.records] == [
        f"spool: {spool.broken}; new records are held in memory only from now on"
    ]
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


# -- exact values, written where mutation testing found room ----------------------------------


def sealed_dead_spool(directory, env, batches=1, pad=0, max_bytes=16384):
    """A process that sealed ``batches`` batches of two records, each in its own segment, then died."""
    dead = open_spool(directory, env, max_bytes=max_bytes)
    for n in range(batches):
        first = dead.active.size
        ends = dead.append([line(2 * n + 1, env) + b" " * pad, line(2 * n + 2, env)])
        assert ends is not None
        assert dead.seal(f"{env}-{n + 1:08d}", n + 1, 2, first, ends[1]) is not None
        dead._rotate()
    die(dead)
    return dead


def test_adopted_segments_are_deleted_one_by_one_and_the_lock_goes_with_the_last(tmp_path):
    dead = sealed_dead_spool(tmp_path, "dead", batches=2)
    heir = open_spool(tmp_path, "heir")
    first, second = heir.adopt()
    for adopted in (first, second):
        heir.hold(adopted.location)
    adopted_bytes, own = heir.adopted_bytes, heir.active.size
    assert heir.bytes == own + adopted_bytes
    lock_fd = heir._locks["dead"]
    os.unlink(first.location.segment.path)  # gone already (another adopter, an operator): not an error
    heir.release(first.location)
    assert heir.adopted_bytes == adopted_bytes - first.location.segment.size
    assert "dead" in heir._locks and os.path.exists(tmp_path / "dead.lock")  # its second segment remains
    heir.release(second.location)
    assert heir.adopted_bytes == 0 and heir.bytes == own and "dead" not in heir._locks
    assert sorted(os.listdir(tmp_path)) == sorted(["heir.lock", os.path.basename(heir.active.path)])
    with pytest.raises(OSError):
        os.fstat(lock_fd)  # the lock's descriptor is closed, not leaked
    assert dead.segments  # (the dead process's own view is untouched)


def test_a_segment_stays_until_every_batch_sealed_or_held_in_it_is_released(tmp_path):
    spool = open_spool(tmp_path)
    ends = spool.append([line(1), line(2)])
    assert ends is not None
    one, two = spool.seal_many([("envA-00000001", 1, 1, 0, ends[0]), ("envA-00000002", 2, 1, ends[0], ends[1])])
    assert one is not None and two is not None
    spool.hold(one)  # a sink needs it again (as after adoption)
    spool._rotate()
    path = one.segment.path
    spool.release(one)
    spool.release(two)
    assert os.path.exists(path)
    spool.release(one)
    assert not os.path.exists(path)


def test_runs_of_unsealed_records_are_sealed_with_exact_lines_and_synced_unless_never(tmp_path, monkeypatch):
    dead = open_spool(tmp_path, "dead")
    ends = dead.append([line(1, "dead"), line(2, "dead"), line(3, "dead"), line(4, "dead")])
    assert ends is not None
    dead.seal("dead-00000005", 5, 1, ends[1], ends[2])  # the third record only
    path = dead.active.path
    header = ends[0] - len(line(1, "dead")) - 1
    die(dead)
    synced: list[int] = []
    monkeypatch.setattr(spool_module.os, "fsync", synced.append)
    heir = open_spool(tmp_path, "heir", fsync="never")
    adopted = {a.batch_id: a for a in heir.adopt()}
    assert sorted(adopted) == ["dead-00000005", "dead-00000006", "dead-00000007"] and synced == []
    with open(path, "rb") as handle:
        data = handle.read()
    seals = [orjson.loads(x[1:]) for x in data.splitlines() if x[:1] == b"S"]
    assert seals[1:] == [
        {"b": "dead-00000006", "e": "dead", "q": 6, "n": 2, "s": header, "t": ends[1]},
        {"b": "dead-00000007", "e": "dead", "q": 7, "n": 1, "s": ends[2], "t": ends[3]},
    ]
    assert data.endswith(b"\n") and adopted["dead-00000007"].location.segment.size == len(data)
    die(heir)
    flushing = open_spool(tmp_path, "third", fsync="flush")
    synced.clear()
    assert len(flushing.adopt()) == 3 and synced == []  # nothing left to seal: nothing synced


def test_a_run_sealed_by_an_adopter_is_synced_unless_never(tmp_path, monkeypatch):
    dead = open_spool(tmp_path, "dead")
    assert dead.append([line(1, "dead")]) is not None
    die(dead)
    synced: list[int] = []
    monkeypatch.setattr(spool_module.os, "fsync", synced.append)
    heir = open_spool(tmp_path, "heir", fsync="flush")
    synced.clear()
    assert [a.batch_id for a in heir.adopt()] == ["dead-00000001"] and len(synced) == 1


def test_records_with_spaces_in_their_strings_are_read_back_whole(tmp_path):
    spool = open_spool(tmp_path)
    record = orjson.dumps({"q": "a b\tc", "n": 1})
    ends = spool.append([record])
    assert ends is not None
    location = spool.seal("envA-00000001", 1, 1, 0, ends[0])
    assert location is not None
    assert Spool.read(location) == ([{"q": "a b\tc", "n": 1}], len(record))


def test_environments_with_dashes_are_adopted_and_a_lock_without_segments_does_not_stop_the_others(tmp_path):
    (tmp_path / "a-gone.lock").write_bytes(b"")  # sorts first: a process that died before writing
    os.chmod(tmp_path / "a-gone.lock", 0o600)
    sealed_dead_spool(tmp_path, "dead-env-1")
    heir = open_spool(tmp_path, "heir")
    assert [a.batch_id for a in heir.adopt()] == ["dead-env-1-00000001"]
    assert not os.path.exists(tmp_path / "a-gone.lock") and "a-gone" not in heir._locks


def test_the_first_dead_spool_is_adopted_whatever_its_size_and_a_smaller_later_one_fits_beside(tmp_path):
    sealed_dead_spool(tmp_path, "dead0", batches=3, pad=3000, max_bytes=64_000)  # ~9 KB, over the heir's bound
    sealed_dead_spool(tmp_path, "dead1", batches=3, pad=3000, max_bytes=64_000)
    sealed_dead_spool(tmp_path, "dead2")  # small
    heir = open_spool(tmp_path, "heir", max_bytes=8_000)
    assert sorted({a.environment_id for a in heir.adopt()}) == ["dead0"]
    second = open_spool(tmp_path, "second", max_bytes=16_000)
    assert sorted({a.environment_id for a in second.adopt()}) == ["dead1", "dead2"]


@pytest.mark.parametrize(("max_bytes", "threshold"), [(8_000, 1024), (16_384, 2048), (16_385, 2048)])
@pytest.mark.parametrize("short", [1, 0])
def test_a_segment_rotates_when_it_reaches_an_eighth_of_the_bound_but_at_least_1_kib(
    tmp_path, max_bytes, threshold, short
):
    spool = open_spool(tmp_path, max_bytes=max_bytes)
    size = threshold - short - spool.active.size  # this record line, newline included
    assert spool.append([b'{"p":"' + b"x" * (size - 9) + b'"}']) is not None
    assert spool.active.size == threshold - short
    spool.sealed_all()
    assert spool.active.index == (1 if short else 2)


@pytest.mark.parametrize("max_bytes", [16_000, 16_015])  # reserve: a 16th of the bound, rounded down: 1,000
def test_own_records_fit_up_to_the_bound_less_the_control_reserve_exactly(tmp_path, max_bytes):
    spool = open_spool(tmp_path, max_bytes=max_bytes)
    room = max_bytes - 1_000 - spool.bytes
    assert not spool.room(room + 1) and spool.room(room)
    assert spool.append([b'{"p":"' + b"x" * (room - 9) + b'"}']) is not None and spool.bytes == max_bytes - 1_000


def test_the_control_reserve_of_a_large_bound_is_64_kib(tmp_path):
    spool = open_spool(tmp_path, max_bytes=1 << 24)  # a 16th would be 1 MiB
    room = (1 << 24) - 65_536 - spool.bytes
    assert not spool.room(room + 1) and spool.room(room)


def test_closing_syncs_the_open_segment_unless_never_or_broken(tmp_path, monkeypatch):
    synced: list[int] = []
    monkeypatch.setattr(spool_module.os, "fsync", synced.append)
    for fsync, broken, expected in [("flush", "", 1), ("never", "", 0), ("flush", "disk gone", 0)]:
        spool = open_spool(tmp_path / fsync / (broken or "ok"), fsync=fsync)
        assert spool.append([line(1)]) is not None
        spool.broken = broken
        synced.clear()
        spool.close(unsealed=1)
        assert len(synced) == expected, (fsync, broken)


def test_a_broken_spool_seals_nothing(tmp_path):
    spool = open_spool(tmp_path)
    ends = spool.append([line(1)])
    assert ends is not None
    size = os.path.getsize(spool.active.path)
    spool.broken = "disk gone"
    assert spool.seal_many([("envA-00000001", 1, 1, 0, ends[0])]) == [None]
    assert os.path.getsize(spool.active.path) == size and spool.active.open_batches == 0


def test_a_write_the_kernel_takes_in_pieces_is_written_whole(tmp_path, monkeypatch):
    spool = open_spool(tmp_path)
    real_write = os.write
    monkeypatch.setattr(spool_module.os, "write", lambda fd, data: real_write(fd, bytes(data[:5])))
    ends = spool.append([line(1), line(2)])
    assert ends is not None and ends[-1] == spool.active.size == os.path.getsize(spool.active.path)
    location = spool.seal("envA-00000001", 1, 2, 0, ends[-1])
    assert location is not None
    assert [r["sequence"] for r in Spool.read(location)[0]] == [1, 2]


def test_records_of_a_segment_whose_header_is_unreadable_get_the_first_batch_id(tmp_path):
    dead = open_spool(tmp_path, "dead")
    assert dead.append([line(1, "dead")]) is not None
    path = dead.active.path
    die(dead)
    with open(path, "r+b") as handle:
        header = handle.readline()
        handle.seek(0)
        handle.write(b"H" + b"x" * (len(header) - 2) + b"\n")  # damaged, same length
    heir = open_spool(tmp_path, "heir")
    assert [a.batch_id for a in heir.adopt()] == ["dead-00000001"]


def test_a_lock_path_swapped_for_a_symlink_while_locking_turns_the_spool_off(tmp_path, monkeypatch):
    """The lock must be on the file at the path itself: a symlink there, even one to the very file
    locked, is refused like every symlink in the spool directory (the extension then runs from
    memory, docs/guarantees.md)."""
    directory = tmp_path / "spool"
    os.makedirs(directory, mode=0o700)
    path = directory / "envB.lock"
    real_flock = spool_module.fcntl.flock

    def flock(fd, operation):
        if not path.is_symlink() and os.readlink(f"/proc/self/fd/{fd}") == str(path):
            os.rename(path, directory / "elsewhere")
            os.symlink(directory / "elsewhere", path)
        return real_flock(fd, operation)

    monkeypatch.setattr(spool_module.fcntl, "flock", flock)
    with pytest.raises(OSError) as caught:
        open_spool(directory, env="envB")
    assert caught.value.errno == errno.ELOOP
    assert path.is_symlink() and not [name for name in os.listdir(directory) if name.endswith(".seg")]


@pytest.mark.parametrize(("replaced", "opens"), [(99, True), (100, False)])
def test_the_lock_is_taken_unless_its_file_is_replaced_100_times_in_a_row(tmp_path, monkeypatch, replaced, opens):
    real_stat = os.stat
    seen: list[str] = []

    def stat_after_unlink(path, *args, **kwargs):
        if str(path).endswith(".lock") and len(seen) < replaced:
            seen.append(str(path))
            raise FileNotFoundError(path)  # as if an adopter unlinked it right after our flock
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(spool_module.os, "stat", stat_after_unlink)
    spool = Spool(str(tmp_path / "spool"), 1_000_000, "never", "env")
    if opens:
        spool.open()
        assert spool.active.index == 1 and list(spool._locks) == ["env"]
    else:
        with pytest.raises(SpoolError, match="keeps being replaced"):
            spool.open()


def test_a_lock_an_adopter_holds_briefly_is_retried_every_10_ms_until_it_is_free(tmp_path, monkeypatch):
    """On a shared volume an adopter may hold a starting process's lock for a moment: the process
    waits (on a clock of its own here) and starts within 10 ms of the release."""
    directory = tmp_path / "spool"
    os.makedirs(directory, mode=0o700)
    holder = os.open(directory / "envA.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    now = [100.0]
    held = [holder]

    def sleep(seconds):
        now[0] += seconds
        if held and now[0] >= 100.045:  # the adopter lets go 50 ms after the first try
            os.close(held.pop())

    monkeypatch.setattr(spool_module, "time", SimpleNamespace(monotonic=lambda: now[0], sleep=sleep))
    spool = open_spool(directory)
    assert 100.045 <= now[0] < 100.06 and list(spool._locks) == ["envA"]


def test_a_failed_write_whose_cut_back_fails_too_still_only_breaks_the_spool(tmp_path, monkeypatch):
    spool = open_spool(tmp_path / "spool", fsync="never")

    def failing(errno_: int, text: str):
        def call(*args):
            raise OSError(errno_, text)

        return call

    monkeypatch.setattr(spool_module.os, "write", failing(errno.ENOSPC, "No space left on device"))
    monkeypatch.setattr(spool_module.os, "ftruncate", failing(errno.EIO, "Input/output error"))
    assert spool.append([line(1)]) is None  # the caller keeps the records in memory
    assert spool.broken.startswith("write to") and "No space left" in spool.broken


def test_a_dead_spool_too_big_to_fit_beside_the_first_does_not_stop_a_smaller_later_one(tmp_path):
    sealed_dead_spool(tmp_path, "dead0", pad=2000)  # ~2.3 KB
    sealed_dead_spool(tmp_path, "dead1", batches=3, pad=3000, max_bytes=64_000)  # ~9.5 KB
    sealed_dead_spool(tmp_path, "dead2")  # ~0.4 KB
    heir = open_spool(tmp_path, "heir", max_bytes=8_000)
    assert sorted({a.environment_id for a in heir.adopt()}) == ["dead0", "dead2"]
    second = open_spool(tmp_path, "second", max_bytes=8_000)
    assert sorted({a.environment_id for a in second.adopt()}) == ["dead1"]  # its lock was let go


def test_a_later_dead_spool_that_fills_the_bound_to_the_byte_is_adopted_too(tmp_path):
    sealed_dead_spool(tmp_path, "dead0", pad=2000)
    sealed_dead_spool(tmp_path, "dead1")
    total = sum(os.path.getsize(tmp_path / name) for name in os.listdir(tmp_path) if name.endswith(".seg"))
    heir = open_spool(tmp_path, "heir", max_bytes=total)
    assert sorted({a.environment_id for a in heir.adopt()}) == ["dead0", "dead1"]


def test_a_segment_an_earlier_adopter_deleted_after_our_listing_does_not_hide_the_later_ones(tmp_path, monkeypatch):
    """An adopter deletes a dead spool's segments oldest first: killed after deleting the first,
    it leaves the others, and the next process must take them all, not stop at the gap."""
    sealed_dead_spool(tmp_path, "dead", batches=3)
    real_listdir = spool_module.os.listdir

    def listdir(path):
        names = real_listdir(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path / "dead-000001.seg")  # the earlier adopter, just after our listing
        return names

    monkeypatch.setattr(spool_module.os, "listdir", listdir)
    heir = open_spool(tmp_path, "heir")
    assert [a.batch_id for a in heir.adopt()] == ["dead-00000002", "dead-00000003"]


def test_a_segment_removed_between_its_size_and_its_scan_does_not_hide_the_later_ones(tmp_path, monkeypatch):
    sealed_dead_spool(tmp_path, "dead", batches=2)
    real_getsize = spool_module.os.path.getsize

    def getsize(path):
        size = real_getsize(path)
        if path.endswith("dead-000001.seg"):
            os.unlink(path)  # removed by hand, after its size was read
        return size

    monkeypatch.setattr(spool_module.os.path, "getsize", getsize)
    heir = open_spool(tmp_path, "heir")
    assert [a.batch_id for a in heir.adopt()] == ["dead-00000002"]


def test_a_lock_file_that_cannot_be_removed_is_left_and_adoption_goes_on(tmp_path, monkeypatch):
    (tmp_path / "gone.lock").write_bytes(b"")  # a process that died before writing a segment
    os.chmod(tmp_path / "gone.lock", 0o600)
    sealed_dead_spool(tmp_path, "later")
    real_unlink = spool_module.os.unlink

    def unlink(path):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_unlink(path)

    monkeypatch.setattr(spool_module.os, "unlink", unlink)
    heir = open_spool(tmp_path, "heir")
    assert [a.batch_id for a in heir.adopt()] == ["later-00000001"]
    assert "gone" not in heir._locks and os.path.exists(tmp_path / "gone.lock")


def test_a_lock_still_held_when_the_clock_reads_exactly_the_deadline_is_given_up_without_another_try(
    tmp_path, monkeypatch
):
    """The wait is LOCK_WAIT_S, its end included: a clock that reads exactly the deadline at the
    first check (a coarse clock, or a process paused in between) ends the wait there, unslept."""
    directory = tmp_path / "spool"
    os.makedirs(directory, mode=0o700)
    holder = os.open(directory / "envA.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    readings = iter([100.0, 100.0 + spool_module.LOCK_WAIT_S, 200.0])
    slept: list[float] = []
    clock = SimpleNamespace(monotonic=lambda: next(readings), sleep=slept.append)
    monkeypatch.setattr(spool_module, "time", clock)
    try:
        with pytest.raises(SpoolError, match=r"could not lock envA\.lock"):
            open_spool(directory)
        assert slept == []
    finally:
        os.close(holder)
