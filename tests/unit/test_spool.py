"""The spool's file format, adoption after a crash, deletion, bounds and permissions."""

import os
import stat

import orjson
import pytest

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
        assert [orjson.loads(x)["sequence"] for x in handle.read().splitlines()] == [1, 2]
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
