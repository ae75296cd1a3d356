"""The spool's file format, adoption after a crash, deletion, bounds and permissions."""

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator

import orjson
import pytest

from capture_ext.core import spool_format
from capture_ext.core.spool import Spool, SpoolError


def line(seq: int, env: str = "envA") -> bytes:
    return orjson.dumps({"inference_id": f"{env}-{seq}", "environment_id": env, "sequence": seq})


def die(spool: Spool) -> None:
    """What SIGKILL does to a spool: its files stay, its locks go with its descriptors."""
    for fd in spool._locks.values():
        os.close(fd)
    spool._locks.clear()


def open_spool(path, env="envA", max_bytes=10_000_000, fsync="flush") -> Spool:
    spool = Spool(str(path), max_bytes, fsync, env)
    spool.open()
    return spool


def test_records_are_written_before_append_returns_with_owner_only_permissions(tmp_path):
    spool = open_spool(tmp_path / "spool")
    ends = spool.append([line(1), line(2)])
    assert ends is not None and ends[-1] == spool.active.size
    with open(spool.active.path, "rb") as handle:  # readable by another process right now
        lines = handle.read().splitlines()
        assert lines[0].startswith(b"H")  # the header: which batch ids this process had taken
        assert [orjson.loads(x)["sequence"] for x in lines[1:]] == [1, 2]
    assert stat.S_IMODE(os.stat(tmp_path / "spool").st_mode) == 0o700
    for name in os.listdir(tmp_path / "spool"):
        assert stat.S_IMODE(os.stat(tmp_path / "spool" / name).st_mode) == 0o600, name


def test_a_symlinked_spool_directory_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "spool")
    with pytest.raises(SpoolError, match="not a directory"):
        open_spool(tmp_path / "spool")


def test_bound_refuses_appends_that_do_not_fit(tmp_path):
    spool = open_spool(tmp_path / "spool", max_bytes=200)
    assert spool.append([line(1)]) is not None
    assert spool.append([b"{" + b"x" * 300 + b"}"]) is None
    assert spool.bytes <= 200


def test_adoption_replays_sealed_batches_not_acked_by_every_sink(tmp_path):
    dead = open_spool(tmp_path, "dead")
    ends = dead.append([line(1, "dead"), line(2, "dead"), line(3, "dead")])
    assert ends is not None
    start = ends[0] - len(line(1, "dead")) - 1
    first = dead.seal("dead-00000001", 1, 2, start, ends[1])
    second = dead.seal("dead-00000002", 2, 1, ends[1], ends[2])
    assert first is not None and second is not None
    dead.ack("dead-00000001", "a")
    dead.ack("dead-00000001", "b")
    dead.ack("dead-00000002", "a")
    die(dead)

    heir = open_spool(tmp_path, "heir")
    adopted = heir.adopt()
    by_id = {a.batch_id: a for a in adopted}
    assert by_id["dead-00000001"].acked == {"a", "b"}
    assert by_id["dead-00000002"].acked == {"a"}
    records, size = Spool.read(by_id["dead-00000002"].location)
    assert [r["sequence"] for r in records] == [3] and size == len(line(3, "dead"))
    records, _ = Spool.read(by_id["dead-00000001"].location)
    assert [r["sequence"] for r in records] == [1, 2]


def test_unsealed_records_get_the_dead_process_next_batch_id_every_time(tmp_path):
    dead = open_spool(tmp_path, "dead")
    ends = dead.append([line(1, "dead")])
    assert ends is not None
    dead.seal("dead-00000007", 7, 1, 0, ends[0])
    dead.append([line(2, "dead"), line(3, "dead")])
    with open(dead.active.path, "ab") as handle:
        handle.write(b'{"torn": ')  # SIGKILL in the middle of a write: never acknowledged
    die(dead)

    heir = open_spool(tmp_path, "heir")
    adopted = {a.batch_id: a for a in heir.adopt()}
    assert set(adopted) == {"dead-00000007", "dead-00000008"}
    records, _ = Spool.read(adopted["dead-00000008"].location)
    assert [r["sequence"] for r in records] == [2, 3]
    die(heir)

    # The heir dies too, before delivering: the next one finds the very same ids.
    again = open_spool(tmp_path, "third")
    assert {a.batch_id for a in again.adopt()} == {"dead-00000007", "dead-00000008"}


def test_a_live_owner_is_never_adopted(tmp_path):
    owner = open_spool(tmp_path, "live")
    ends = owner.append([line(1, "live")])
    assert ends is not None
    owner.seal("live-00000001", 1, 1, 0, ends[0])
    other = open_spool(tmp_path, "other")
    assert other.adopt() == []


def test_segments_are_deleted_once_every_batch_in_them_and_before_them_is_done(tmp_path):
    spool = open_spool(tmp_path, max_bytes=64 * 1024 * 8)  # rotates at 64 KiB
    big = [orjson.dumps({"sequence": i, "pad": "x" * 1000}) for i in range(70)]
    ends = spool.append(big)
    assert ends is not None
    location = spool.seal("envA-00000001", 1, len(big), 0, ends[-1])
    assert location is not None
    spool.sealed_all()
    assert len(spool.segments) == 2  # rotated after the seal
    first_path = spool.segments[0].path
    spool.release(location)
    assert not os.path.exists(first_path) and len(spool.segments) == 1
    assert spool.bytes == spool.active.size


def seal_all(spool: Spool, sequence: int, count: int, start: int, end: int) -> None:
    spool.seal(f"{spool.environment_id}-{sequence:08d}", sequence, count, start, end)
    spool.sealed_all()


def test_records_left_unsealed_right_after_a_rotation_never_reuse_a_batch_id(tmp_path):
    """Regression: the recovered id came from seals *in the newest segment*, which has none right
    after a rotation, so the records got batch 1's id: batch 1's ack then marked them delivered,
    their object overwrote batch 1's, and batch 1's own seal was lost."""
    directory = tmp_path / "spool"
    spool = open_spool(directory, max_bytes=16384)  # rotates at 2 KiB
    payload = [line(i) + b" " * 300 for i in range(1, 8)]
    ends = spool.append(payload)
    assert ends is not None
    seal_all(spool, 1, 7, spool.segments[0].size - sum(len(x) + 1 for x in payload), ends[-1])
    assert len(spool.segments) == 2, "the seal should have rotated the segment"
    spool.ack("envA-00000001", "s3")  # delivered to s3, not yet to logs
    spool.append([line(8), line(9), line(10)])  # acknowledged, never sealed
    die(spool)

    adopter = open_spool(directory, env="envB", max_bytes=16384)
    found = {a.batch_id: a for a in adopter.adopt()}
    assert set(found) == {"envA-00000001", "envA-00000002"}
    assert found["envA-00000001"].acked == {"s3"} and found["envA-00000001"].count == 7
    assert found["envA-00000002"].acked == frozenset() and found["envA-00000002"].count == 3
    records, _ = Spool.read(found["envA-00000002"].location)
    assert [r["sequence"] for r in records] == [8, 9, 10]


def test_the_header_keeps_batch_ids_unique_after_older_segments_were_deleted(tmp_path):
    directory = tmp_path / "spool"
    spool = open_spool(directory, max_bytes=16384)
    for sequence in (1, 2):
        ends = spool.append([line(sequence) + b" " * 1500])
        assert ends is not None
        location = spool.seal(f"envA-{sequence:08d}", sequence, 1, ends[-1] - 1501 - len(line(sequence)), ends[-1])
        spool.sealed_all()
        assert location is not None
        spool.release(location)  # every sink done: its segment may go
    assert [s.index for s in spool.segments] == [2]  # the segment holding batches 1 and 2 is gone
    spool.append([line(3)])
    die(spool)
    adopter = open_spool(directory, env="envB")
    assert [a.batch_id for a in adopter.adopt()] == ["envA-00000003"]


def test_an_adopter_that_unlinks_a_starting_process_lock_cannot_make_it_run_unlocked(tmp_path, monkeypatch):
    """Regression: B opens its lock file; before B's flock, C locks it, sees no segment and deletes
    it; B then locked an unlinked file, and a later D adopted B's live segments."""
    import capture_ext.core.spool as spool_module

    directory = tmp_path / "spool"
    os.makedirs(directory, mode=0o700)
    real_flock = spool_module.fcntl.flock
    interfered: list[bool] = []

    def flock(fd, operation):
        if not interfered and os.readlink(f"/proc/self/fd/{fd}").endswith("envB.lock"):
            interfered.append(True)
            adopter = open_spool(directory, env="envC")
            assert adopter.adopt() == []  # C locks envB.lock, finds no segment, unlinks it
            adopter.close()
        return real_flock(fd, operation)

    monkeypatch.setattr(spool_module.fcntl, "flock", flock)
    live = open_spool(directory, env="envB")
    monkeypatch.setattr(spool_module.fcntl, "flock", real_flock)
    assert interfered
    assert live.append([line(1, "envB")]) is not None
    late = open_spool(directory, env="envD")
    assert late.adopt() == []  # B is alive: its lock is on the file at the path
    assert os.path.exists(live.active.path)


def test_a_segment_deleted_between_listing_and_reading_is_skipped(tmp_path, monkeypatch):
    import capture_ext.core.spool as spool_module

    directory = tmp_path / "spool"
    dead = open_spool(directory, env="envA")
    dead.append([line(1)])
    die(dead)
    real_listdir = spool_module.os.listdir
    monkeypatch.setattr(spool_module.os, "listdir", lambda path: [*real_listdir(path), "envA-000042.seg"])
    adopter = open_spool(directory, env="envB")
    assert [a.batch_id for a in adopter.adopt()] == ["envA-00000001"]


def test_fsync_always_makes_a_new_segment_durable_in_its_directory(tmp_path, monkeypatch):
    import capture_ext.core.spool as spool_module

    synced: list[str] = []
    real_fsync = spool_module.os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", fsync)
    spool = open_spool(tmp_path / "spool", fsync="always")
    assert str(tmp_path / "spool") in synced  # the directory entry of the first segment
    assert spool.active.path in synced


def test_records_before_a_seal_line_that_does_not_cover_them_are_recovered(tmp_path):
    """Regression (hostile review): one flush seals several batches; a kill after the first seal
    line left the later batches' records *before* a seal line yet covered by none, and the scan
    treated everything before the last seal line as sealed: acknowledged records, silently lost."""
    directory = tmp_path / "spool"
    spool = open_spool(directory)
    payload = [line(i) for i in range(1, 7)]
    ends = spool.append(payload)
    assert ends is not None
    first_start = ends[0] - len(payload[0]) - 1
    spool.seal("envA-00000001", 1, 2, first_start, ends[1])  # killed before the seals of 3-4 and 5-6
    die(spool)
    adopter = open_spool(directory, env="envB")
    found = adopter.adopt()
    assert [(a.batch_id, a.count) for a in found] == [("envA-00000001", 2), ("envA-00000002", 4)]
    records, _ = Spool.read(found[1].location)
    assert [r["sequence"] for r in records] == [3, 4, 5, 6]


def test_a_segment_that_cannot_be_opened_turns_the_spool_off_without_losing_state(tmp_path, monkeypatch):
    import capture_ext.core.spool as spool_module

    spool = open_spool(tmp_path / "spool", max_bytes=16384)
    real_open = spool_module.open_file

    def failing_open(path, flags):
        if path.endswith(".seg"):
            raise OSError(5, "Input/output error")
        return real_open(path, flags)

    monkeypatch.setattr(spool_module, "open_file", failing_open)
    ends = spool.append([line(i) + b" " * 900 for i in range(1, 4)])
    assert ends is not None
    assert spool.seal("envA-00000001", 1, 3, 0, ends[-1]) is not None
    spool.sealed_all()  # wants to rotate: cannot
    assert spool.broken and "cannot open a new segment" in spool.broken
    assert spool.append([line(9)]) is None  # new records go to memory, the caller is told


def test_an_adopter_takes_at_most_one_bound_of_dead_spools_and_still_has_room_for_its_own(tmp_path):
    """Regression (hostile review): on a shared volume the first process adopted every dead
    environment, counted their bytes against its own bound and refused all its own records."""
    directory = tmp_path / "spool"
    for env in ("dead0", "dead1", "dead2"):
        dead = open_spool(directory, env=env, max_bytes=16384)
        while dead.append([line(len(dead.segments), env) + b" " * 500]) is not None:
            pass  # filled up while its sink was down
        die(dead)
    fresh = open_spool(directory, env="fresh", max_bytes=16384)
    adopted_envs = {a.environment_id for a in fresh.adopt()}
    assert adopted_envs == {"dead0"}  # the others wait for another process, their locks free
    assert fresh.adopted_bytes > 14000
    assert fresh.append([line(1, "fresh")]) is not None  # its own records still fit
    other = open_spool(directory, env="other", max_bytes=16384)
    assert {a.environment_id for a in other.adopt()} == {"dead1"}


def open_descriptors() -> list[int]:
    return sorted(int(name) for name in os.listdir("/proc/self/fd"))


def seal_padded(spool: Spool, sequence: int, pad: int):
    """Append one record padded with ``pad`` spaces and seal it as its own batch."""
    record = line(sequence) + b" " * pad
    ends = spool.append([record])
    assert ends is not None
    location = spool.seal(f"envA-{sequence:08d}", sequence, 1, ends[0] - len(record) - 1, ends[0])
    assert location is not None
    return location


def test_rotating_keeps_one_segment_descriptor_open_and_never_closes_another(tmp_path):
    """Segments waiting for a sink cost no descriptor (no EMFILE however many wait), and deleting
    them closes nothing of the process's own, such as stdout, where the stdout sink writes."""
    saved = os.dup(1)
    try:
        spool = open_spool(tmp_path, max_bytes=16384)  # rotates at 2 KiB
        before = open_descriptors()
        locations = []
        for sequence in (1, 2, 3):
            locations.append(seal_padded(spool, sequence, 2100))
            spool.sealed_all()
        assert [s.index for s in spool.segments] == [1, 2, 3, 4]  # three wait for their sink
        assert open_descriptors() == before
        for location in locations:
            spool.release(location)
        assert [s.index for s in spool.segments] == [4]
        os.fstat(1)  # stdout is still open
        assert open_descriptors() == before
    finally:
        os.dup2(saved, 1)
        os.close(saved)


@pytest.mark.parametrize(("fsync", "expected"), [("always", ["old", "new", "directory"]), ("never", [])])
def test_a_segment_closed_at_rotation_is_synced_first_unless_never(tmp_path, monkeypatch, fsync, expected):
    """With ``always`` only appends are synced as they are written: the seal lines of a segment
    reach the device when it is closed at rotation, before the new segment and its name."""
    import capture_ext.core.spool as spool_module

    spool = open_spool(tmp_path / "spool", max_bytes=16384, fsync=fsync)
    seal_padded(spool, 1, 2100)
    old = spool.active.path
    synced: list[str] = []
    monkeypatch.setattr(spool_module.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")))
    spool.sealed_all()
    assert spool.active.index == 2
    names = {old: "old", spool.active.path: "new", str(tmp_path / "spool"): "directory"}
    assert [names[path] for path in synced] == expected


def test_a_full_segment_whose_batches_were_all_delivered_is_deleted_when_it_rotates(tmp_path):
    spool = open_spool(tmp_path, max_bytes=16384)
    location = seal_padded(spool, 1, 2100)
    spool.release(location)  # delivered while its segment is still the active one: it stays
    assert os.path.exists(location.segment.path)
    spool.sealed_all()
    assert not os.path.exists(location.segment.path)
    assert [s.index for s in spool.segments] == [2] and spool.bytes == spool.active.size


def test_a_segment_holding_batches_of_separate_flushes_stays_until_each_is_released(tmp_path):
    spool = open_spool(tmp_path, max_bytes=16384)
    one = seal_padded(spool, 1, 1100)
    spool.sealed_all()  # not full yet: the next flush seals into the same segment
    two = seal_padded(spool, 2, 1100)
    spool.sealed_all()
    assert one.segment is two.segment and spool.active.index == 2
    spool.release(one)
    assert os.path.exists(two.segment.path)  # batch 2 still needs it
    spool.release(two)
    assert not os.path.exists(two.segment.path)


def spool_descriptors(directory) -> list[str]:
    """The names of the spool's files this process holds open (a deleted one keeps its name)."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor listdir itself used is gone by now
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(f"{directory}/"):
                names.append(os.path.basename(target).removesuffix(" (deleted)"))
    return sorted(names)


@contextlib.contextmanager
def stdin_held_then_freed() -> Iterator[Callable[[], None]]:
    """Descriptor 0 held by something else while the spool opens, freed by the function yielded.

    That is the extension started with stdin closed (``<&-``): the first descriptor the process
    opens is 0, and when that is a connection (say to the Extensions API) that later closes, the
    next segment the spool opens gets descriptor 0.
    """
    saved = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    try:
        yield lambda: os.close(0)
    finally:
        os.dup2(saved, 0)
        os.close(saved)


def test_a_segment_on_descriptor_0_is_closed_at_rotation_and_at_close_like_any_other(tmp_path):
    with stdin_held_then_freed() as free_stdin:
        spool = open_spool(tmp_path, max_bytes=16384, fsync="never")  # rotates at 2 KiB
        free_stdin()
        seal_padded(spool, 1, 2100)
        spool.sealed_all()
        assert os.readlink("/proc/self/fd/0") == f"{tmp_path}/envA-000002.seg"
        seal_padded(spool, 2, 2100)
        spool.sealed_all()  # segment 2 is closed, so segment 3 gets descriptor 0 in its turn
        assert spool_descriptors(tmp_path) == ["envA-000003.seg", "envA.lock"]
        assert os.readlink("/proc/self/fd/0") == f"{tmp_path}/envA-000003.seg"
        spool.close()  # both batches still wait for their sink: files kept, descriptors closed
        assert spool_descriptors(tmp_path) == []
        assert sorted(os.listdir(tmp_path)) == ["envA-000001.seg", "envA-000002.seg", "envA-000003.seg", "envA.lock"]


def test_a_segment_on_descriptor_0_deleted_at_close_leaves_no_descriptor_open(tmp_path):
    with stdin_held_then_freed() as free_stdin:
        spool = open_spool(tmp_path, max_bytes=16384, fsync="never")
        free_stdin()
        location = seal_padded(spool, 1, 2100)
        spool.sealed_all()  # segment 2, the active one, on descriptor 0
        spool.release(location)
        assert spool_descriptors(tmp_path) == ["envA-000002.seg", "envA.lock"]
        spool.close()  # nothing left to deliver: the files go, and their descriptors
        assert spool_descriptors(tmp_path) == []
        assert os.listdir(tmp_path) == []


def test_closing_right_after_adopting_two_segments_of_one_dead_process_removes_every_file(tmp_path):
    """``close`` deletes every segment at once: the dead process's lock is let go with its first
    segment, and its second segment must not let go of it a second time."""
    dead = open_spool(tmp_path, "dead", max_bytes=16384)
    seal_padded(dead, 1, 2100)
    dead.ack("envA-00000001", "s3")
    dead.sealed_all()  # rotates: the dead process leaves two segments
    die(dead)
    heir = open_spool(tmp_path, "heir")
    (adopted,) = heir.adopt()
    assert adopted.acked == {"s3"} and len(heir.segments) == 3
    heir.close()  # every sink had acknowledged the batch: nothing is left to deliver
    assert os.listdir(tmp_path) == [] and heir._locks == {}


def test_adopting_a_segment_of_whole_lines_never_truncates_it(tmp_path, monkeypatch):
    """Only a torn last line is cut off: a segment of whole lines is adopted without writing to it,
    so one the extension may only read (truncate fails with EACCES for a non-root user, as on
    Lambda) is adopted all the same."""
    dead = open_spool(tmp_path, "dead")
    seal_padded(dead, 1, 0)
    die(dead)

    def refused(path, length):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    monkeypatch.setattr(spool_format.os, "truncate", refused)
    heir = open_spool(tmp_path, "heir")
    assert [a.batch_id for a in heir.adopt()] == ["envA-00000001"]


def test_adoption_leaves_files_that_are_not_the_spool_and_the_directory_untouched(tmp_path):
    """CAPTURE_SPOOL_DIR may be a directory that already holds other files: adoption neither takes
    them for lock files nor creates one for them (the directory's mtime says nothing was created),
    and a ``.seg`` file not named ``<environment>-<six or more digits>.seg`` is not a segment (it
    was once adopted, cut at its last newline and deleted)."""
    heir = open_spool(tmp_path, "heir")
    foreign = {
        "notes.txt": "mine",
        "release-notes.seg": "mine too",
        "notes-1.seg": "a\nb",
        "notes-12345.seg": "c\nd",
        "notes-²²²²²².seg": "e\nf",
        "notes-١٢٣٤٥٦.seg": "g\nh",
    }
    for name, text in foreign.items():
        (tmp_path / name).write_text(text)
    os.utime(tmp_path, ns=(10**18, 10**18))
    assert heir.adopt() == []
    heir.release_empty()
    assert os.stat(tmp_path).st_mtime_ns == 10**18
    assert sorted(os.listdir(tmp_path)) == sorted(["heir-000001.seg", "heir.lock", *foreign])
    assert {name: (tmp_path / name).read_text() for name in foreign} == foreign


def test_a_second_adoption_adds_to_what_the_first_took_and_own_records_keep_their_whole_bound(tmp_path):
    """A process that adopts again (a concurrent environment on a shared volume died since) counts
    both inheritances apart from its own records: neither shrinks the room its own records have."""
    for env in ("dead1", "dead2"):
        dead = open_spool(tmp_path, env, max_bytes=16384)
        seal_padded(dead, 1, 500)
        die(dead)
        if env == "dead1":
            heir = open_spool(tmp_path, "heir", max_bytes=16384)
            assert [a.environment_id for a in heir.adopt()] == ["dead1"]
    assert [a.environment_id for a in heir.adopt()] == ["dead2"]
    inherited = sum(os.path.getsize(tmp_path / f"{env}-000001.seg") for env in ("dead1", "dead2"))
    assert heir.adopted_bytes == inherited
    own = os.path.getsize(tmp_path / "heir-000001.seg")
    assert heir.room(16384 - heir.control_reserve - own)
    assert not heir.room(16384 - heir.control_reserve - own + 1)
