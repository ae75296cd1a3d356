"""The layer builds, and its launcher starts the extension from the built tree alone.

The build is the real one (`make layer`: binary wheels for manylinux x86_64 / CPython 3.12, from
the package index; pip's cache makes repeats quick), with only the ``extension`` extra to keep it
small. The unpacked tree then runs under the local Lambda emulator with a clean Python 3.12 that
has none of the dependencies installed, so the extension can only have come from the layer.
"""

from __future__ import annotations

import platform
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from capture_ext.testing.net import free_port
from tests.helpers import read_file_sink

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "layer" / "build_layer.py"
LAYER_PYTHON = "3.12"


def find_python312() -> str | None:
    for candidate in (shutil.which("python3.12"), str(Path.home() / ".pyenv/versions/3.12.1/bin/python3.12")):
        if candidate and Path(candidate).is_file():
            probe = subprocess.run([candidate, "-V"], capture_output=True, text=True, check=False)
            if probe.returncode == 0 and probe.stdout.startswith("Python 3.12"):
                return candidate
    return None


PYTHON312 = find_python312()


def build(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BUILD), "--out", str(out), "--no-build-isolation", *args],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )


def unzip_like_lambda(archive: Path, opt: Path) -> None:
    """Extract keeping the Unix modes stored in the zip (zipfile's extractall drops them)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = opt / info.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
            target.chmod(stat.S_IMODE(info.external_attr >> 16))


@pytest.fixture(scope="module")
def layer_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("layer")
    done = build(out, "--extras", "extension", "--python-version", LAYER_PYTHON)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MB unzipped" in done.stderr
    return out / "capture-ext-layer.zip"


def test_layer_zip_holds_launcher_extension_and_platform_dependencies(layer_zip: Path) -> None:
    with zipfile.ZipFile(layer_zip) as zf:
        infos = {info.filename: info for info in zf.infolist()}
        names = set(infos)
        launcher = infos["extensions/capture-ext"]
        assert stat.S_IMODE(launcher.external_attr >> 16) == 0o755
        assert zf.read(launcher) == (ROOT / "extensions" / "capture-ext").read_bytes()
        entry_points = next(
            n for n in names if n.startswith("capture-ext/capture_ext-") and n.endswith("entry_points.txt")
        )
        assert "builtin_local" in zf.read(entry_points).decode()
    assert "capture-ext/capture_ext/__main__.py" in names
    for dist in ("pluggy", "h11", "orjson"):
        assert any(n.startswith(f"capture-ext/{dist}-") and ".dist-info/" in n for n in names), dist
    # orjson is compiled: the layer must carry the Lambda platform's build, not this machine's.
    assert any(n.startswith("capture-ext/orjson/") and "cpython-312-x86_64-linux-gnu.so" in n for n in names)
    # The function's half: the stdlib client on /opt/python, without the extension's dependencies.
    assert "python/capture_ext/client.py" in names
    assert not any(n.startswith("python/pluggy") for n in names)
    # Bytecode for the target only (/opt is read-only on Lambda: without it every cold start compiles).
    pycs = [n for n in names if n.endswith(".pyc")]
    assert "capture-ext/capture_ext/__pycache__/__main__.cpython-312.pyc" in pycs
    assert all(".cpython-312." in n for n in pycs), [n for n in pycs if ".cpython-312." not in n][:3]


def test_zip_is_reproducible(layer_zip: Path, tmp_path: Path) -> None:
    again = build(tmp_path, "--extras", "extension", "--python-version", LAYER_PYTHON)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "capture-ext-layer.zip").read_bytes() == layer_zip.read_bytes()


def test_offline_variant_copies_the_dependency_closure_from_this_interpreter(tmp_path: Path) -> None:
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    done = build(tmp_path, "--from-env", "--extras", "extension", "--python-version", version, "--no-zip")
    assert done.returncode == 0, done.stderr[-3000:]
    deps = tmp_path / "layer" / "capture-ext"
    for dist in ("pluggy", "h11", "orjson"):
        assert list(deps.glob(f"{dist}-*.dist-info/METADATA")), dist
        assert (deps / dist).is_dir()
    assert list(deps.glob("capture_ext-*.dist-info/entry_points.txt"))
    assert not list(deps.glob("aioboto3*")), "the extension extra must not drag in the aws one"


def test_offline_variant_refuses_a_mismatched_target(tmp_path: Path) -> None:
    other = "3.13" if sys.version_info[:2] != (3, 13) else "3.12"
    done = build(tmp_path, "--from-env", "--python-version", other)
    assert done.returncode == 2
    assert "--from-env copies this Python" in done.stderr
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    other_arch = "arm64" if platform.machine() == "x86_64" else "x86_64"
    done = build(tmp_path, "--from-env", "--python-version", version, "--arch", other_arch)
    assert done.returncode == 2
    assert f"--arch {other_arch} needs the other" in done.stderr


#: ELF e_machine of each Lambda architecture's shared objects.
ELF_MACHINE = {"x86_64": 62, "aarch64": 183}
#: Amazon Linux 2023's glibc: a manylinux wheel for a newer one would not load.
GLIBC = (2, 34)


def wheel_tags(dist_info: Path) -> list[str]:
    lines = (dist_info / "WHEEL").read_text().splitlines()
    return [line.split(":", 1)[1].strip() for line in lines if line.startswith("Tag:")]


def loads_on(tag: str, python: str, machine: str) -> bool:
    """Whether a wheel tag (interpreter-abi-platform) fits CPython ``python`` on manylinux ``machine``."""
    interpreter, abi, platform = tag.split("-")
    if platform == "any":
        return abi == "none" and interpreter.startswith("py")
    match = re.fullmatch(rf"manylinux(?:2014|_(\d+)_(\d+))_{machine}", platform)
    if match is None:
        return False
    glibc = (2, 17) if match.group(1) is None else (int(match.group(1)), int(match.group(2)))
    cp = f"cp{python.replace('.', '')}"
    abi_ok = abi == cp or (abi == "abi3" and interpreter.startswith("cp3") and int(interpreter[3:]) <= int(cp[3:]))
    return glibc <= GLIBC and interpreter in {cp, *([interpreter] if abi == "abi3" else [])} and abi_ok


def test_arm64_python_313_variant_carries_only_files_that_load_there(tmp_path: Path) -> None:
    """A non-default variant (arm64, 3.13, the aws extra): every compiled file is for that target."""
    done = build(tmp_path, "--arch", "arm64", "--python-version", "3.13", "--extras", "aws", "--no-zip")
    assert done.returncode == 0, done.stderr[-3000:]
    deps = tmp_path / "layer" / "capture-ext"
    assert (deps / "python-version").read_text() == "3.13\n"
    assert (deps / "architecture").read_text() == "aarch64\n"

    owner: dict[str, Path] = {}
    for dist_info in deps.glob("*.dist-info"):
        for row in (dist_info / "RECORD").read_text().splitlines():
            owner[row.split(",", 1)[0]] = dist_info
    compiled = [p for p in deps.rglob("*") if p.is_file() and re.search(r"\.so(\.\d+)*$", p.name)]
    assert len(compiled) >= 5, compiled  # orjson, aiohttp, multidict, yarl, frozenlist at least
    names = {p.relative_to(deps).parts[0] for p in compiled}
    assert {"orjson", "aiohttp", "multidict"} <= names
    for path in compiled:
        relative = path.relative_to(deps).as_posix()
        assert relative in owner, f"{relative} belongs to no installed distribution"
        tags = wheel_tags(owner[relative])
        assert tags and all(loads_on(tag, "3.13", "aarch64") for tag in tags), (relative, tags)
        assert not any(tag.endswith("-any") for tag in tags), (relative, tags)
        header = path.read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and header[4] == 2, relative  # 64-bit ELF
        assert int.from_bytes(header[18:20], "little") == ELF_MACHINE["aarch64"], relative
        if ".cpython-" in path.name:
            assert path.name.endswith(".cpython-313-aarch64-linux-gnu.so"), relative
    # Every distribution, compiled or not, is installable on that target.
    for dist_info in deps.glob("*.dist-info"):
        assert any(loads_on(tag, "3.13", "aarch64") for tag in wheel_tags(dist_info)), dist_info.name
    # Bytecode, when this machine has a 3.13 to compile it, is for 3.13 only.
    pycs = [p.name for p in deps.rglob("*.pyc")]
    assert all(".cpython-313." in name for name in pycs), [n for n in pycs if ".cpython-313." not in n][:3]


@pytest.fixture
def bare_python312() -> str:
    """Python 3.12 that alone has none of the extension's dependencies: they can only come from /opt."""
    if PYTHON312 is None:
        pytest.skip("needs a Python 3.12 interpreter to run the 3.12 layer")
    bare = subprocess.run([PYTHON312, "-s", "-c", "import pluggy"], capture_output=True, check=False)
    assert bare.returncode != 0
    return PYTHON312


HANDLER = """
from capture_ext.client import capture, capture_handler


@capture_handler
def handler(event, context):
    capture(input=event, output={"double": event["n"] * 2}, model={"name": "probe", "version": "1"})
    return {"double": event["n"] * 2}
"""


@pytest.mark.parametrize("launcher_name", ["capture-ext", "qa-capture"])
async def test_launcher_starts_the_extension_from_the_built_tree(
    layer_zip: Path, tmp_path: Path, lambda_emulator: Any, launcher_name: str, bare_python312: str
) -> None:
    opt = tmp_path / "opt"
    unzip_like_lambda(layer_zip, opt)
    if launcher_name != "capture-ext":
        # Lambda registers an extension under its file name; the launcher must pass its own.
        (opt / "extensions" / "capture-ext").rename(opt / "extensions" / launcher_name)
    task = tmp_path / "task"
    task.mkdir()
    (task / "handler.py").write_text(HANDLER)
    files = tmp_path / "captured"
    env = {
        "CAPTURE_EXT_HOME": str(opt / "capture-ext"),
        "CAPTURE_EXT_PYTHON": bare_python312,
        "CAPTURE_SINKS": "file",
        "CAPTURE_FILE_DIR": str(files),
        "CAPTURE_FLUSH_INTERVAL_S": "0",
        "CAPTURE_SOCKET": str(tmp_path / "capture.sock"),
        "CAPTURE_PORT": str(free_port()),
        "CAPTURE_SPOOL_DIR": str(tmp_path / "spool"),
        "CAPTURE_STRICT": "1",
        "CAPTURE_METRICS": "0",
    }
    emu = await lambda_emulator("handler.handler", task, opt / "extensions", env, function_name="layer-fn")
    results = [await emu.invoke({"n": n}) for n in (1, 2, 3)]
    assert [r.payload for r in results] == [{"double": 2}, {"double": 4}, {"double": 6}]
    report = await emu.shutdown()

    assert report is not None
    assert report.exit_codes[launcher_name] == 0
    assert report.killed == ()
    records = read_file_sink(files)
    assert sorted(r["output"]["double"] for r in records) == [2, 4, 6]
    assert {r["request_id"] for r in records} == {r.request_id for r in results}
    assert {r["function_name"] for r in records} == {"layer-fn"}
    # The extension ran on the layer's code, not on this checkout's.
    assert not any(str(ROOT / "capture_ext") in line for line in emu.logs(launcher_name))


PROBE = """
import json, aioboto3, pyarrow.parquet
from capture_ext.core.plugins import get_plugin_manager
plugins = get_plugin_manager()
print(json.dumps({"sinks": sorted(plugins.sink_factories()), "errors": plugins.errors,
                  "aioboto3": aioboto3.__file__, "pyarrow": pyarrow.__version__}))
"""


def test_default_layer_registers_every_builtin_sink_on_python_312(tmp_path: Path, bare_python312: str) -> None:
    """What `make layer` ships (aws + parquet extras) imports on a bare 3.12 and finds all built-ins."""
    done = build(tmp_path, "--no-zip")
    assert done.returncode == 0, done.stderr[-3000:]
    deps = tmp_path / "layer" / "capture-ext"
    probe = subprocess.run(
        [bare_python312, "-P", "-s", "-c", PROBE],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(deps)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = orjson.loads(probe.stdout)
    assert seen["errors"] == []
    assert {"s3_jsonl", "s3_parquet", "cloudwatch", "firehose", "file", "stdout"} <= set(seen["sinks"])
    assert seen["aioboto3"].startswith(str(deps))
