"""How ``capture-ext local`` gives each environment its own /tmp, socket, spool and ingest port."""

from pathlib import Path

from capture_ext.emulator.pool import private_env


def test_each_environment_gets_private_defaults_and_its_own_port(tmp_path: Path) -> None:
    a = private_env({"CAPTURE_SINKS": "stdout"}, tmp_path / "a", shared=False)
    b = private_env({"CAPTURE_SINKS": "stdout"}, tmp_path / "b", shared=False)

    assert a["TMPDIR"] == str(tmp_path / "a") and a["CAPTURE_SINKS"] == "stdout"
    assert a["CAPTURE_SOCKET"] == str(tmp_path / "a" / "capture-ext.sock")
    assert a["CAPTURE_SPOOL_DIR"] == str(tmp_path / "a" / "capture-ext-spool")
    assert a["CAPTURE_FILE_DIR"] == str(tmp_path / "a" / "capture-ext" / "files")
    assert a["CAPTURE_PORT"] != b["CAPTURE_PORT"] and a["CAPTURE_SOCKET"] != b["CAPTURE_SOCKET"]


def test_given_socket_spool_and_port_are_kept_with_one_environment_and_moved_with_several(tmp_path: Path) -> None:
    given = {"CAPTURE_SOCKET": "/run/my.sock", "CAPTURE_SPOOL_DIR": "/var/spool/x", "CAPTURE_PORT": "9100",
             "CAPTURE_FILE_DIR": "/data/out"}  # fmt: skip

    one = private_env(given, tmp_path, shared=True)
    many = private_env(given, tmp_path, shared=False)

    assert {k: one[k] for k in given} == given
    assert many["CAPTURE_SOCKET"] == str(tmp_path / "my.sock")
    assert many["CAPTURE_SPOOL_DIR"] == str(tmp_path / "x")
    assert many["CAPTURE_PORT"] != "9100"
    assert many["CAPTURE_FILE_DIR"] == "/data/out"  # file names carry the environment id: sharing is safe
