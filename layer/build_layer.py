"""Build the capture-ext Lambda layer (``make layer``), or the same tree straight into ``/opt``.

Layout (what Lambda mounts at ``/opt``)::

    extensions/capture-ext      the launcher; its file name is the registered extension name
    capture-ext/                the extension and its own dependencies, for the extension only
    python/capture_ext/         the stdlib-only client, on the function's path (no dependencies)

The dependencies are installed for the Lambda platform (``--arch`` x86_64 or arm64, manylinux
wheels; ``--python-version`` 3.11, 3.12 or 3.13) whatever machine builds the layer, binary wheels
only, at the versions of the project's lock (``constraints.txt``, the versions the tests ran
with), and ``*.dist-info`` folders are kept: the built-in sinks are found through their entry
points. ``capture-ext/python-version`` and ``capture-ext/architecture`` name the target, so the
launcher runs that interpreter and nothing else, and says so clearly when the runtime lacks it.
``--from-env`` is the offline variant: it copies the needed distributions from the running
interpreter instead of downloading them, so it is only right when that interpreter matches the
target.

The Dockerfile runs this same script with ``--opt /opt --no-zip``, so the image and the layer
cannot drift apart.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

logger = logging.getLogger("build_layer")

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "extensions" / "capture-ext"
PROJECT = "capture-ext"
#: Lambda's limit on a function plus all its layers, unzipped.
UNZIPPED_LIMIT = 250 * 1024 * 1024
#: Lambda's architectures, as uname -m names them (what the launcher compares against).
MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}
#: Amazon Linux 2023 has glibc 2.34: wheels for any manylinux up to that load.
MANYLINUX = ("manylinux2014", "manylinux_2_28", "manylinux_2_34")
PYTHON_VERSIONS = ("3.11", "3.12", "3.13")
LOCK = ROOT / "constraints.txt"
#: Fixed timestamp for zip entries, so the same inputs give the same zip.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class BuildError(RuntimeError):
    """A step of the build failed; the message says which and why."""


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    logger.info("$ %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise BuildError(f"{cmd[0]} {' '.join(cmd[1:4])} ... failed (exit {done.returncode}):\n{tail}")


def build_wheel(out_dir: Path, *, isolation: bool) -> Path:
    """The project as a wheel (pure Python), built from this checkout."""
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out_dir), str(ROOT)]
    if not isolation:
        cmd.insert(4, "--no-build-isolation")
    run(cmd)
    wheels = sorted(out_dir.glob("capture_ext-*.whl"))
    if not wheels:
        raise BuildError(f"pip wheel produced no capture_ext wheel in {out_dir}")
    return wheels[-1]


def platforms_for(arch: str) -> list[str]:
    return [f"{tag}_{MACHINES[arch]}" for tag in MANYLINUX]


def install_for_platform(
    wheel: Path, target: Path, extras: str, platforms: list[str], python_version: str, lock: Path | None
) -> None:
    requirement = f"{wheel}[{extras}]" if extras else str(wheel)
    platform_args = [arg for tag in platforms for arg in ("--platform", tag)]
    lock_args = ["--constraint", str(lock)] if lock else []
    run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--upgrade",
            "--target", str(target),
            *platform_args,
            "--python-version", python_version,
            "--implementation", "cp",
            "--only-binary=:all:",
            *lock_args,
            requirement,
        ]
    )  # fmt: skip


def _requirement_closure(extras: Iterable[str]) -> list[metadata.Distribution]:
    """The installed distributions ``capture-ext[extras]`` needs, found through their metadata."""
    from packaging.requirements import Requirement

    seen: dict[str, metadata.Distribution] = {}
    todo: list[tuple[str, frozenset[str]]] = [(PROJECT, frozenset(extras))]
    visited: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in visited:
            continue
        visited.add((name, wanted))
        key = re.sub(r"[-_.]+", "-", name).lower()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise BuildError(f"--from-env: {name} is not installed in {sys.prefix}") from None
        if key != "capture-ext":
            seen.setdefault(key, dist)
        for raw in dist.requires or ():
            req = Requirement(raw)
            marker = req.marker
            if marker is not None and not any(marker.evaluate({"extra": e}) for e in (wanted or {""})):
                continue
            todo.append((req.name, frozenset(req.extras)))
    return list(seen.values())


def copy_from_env(target: Path, extras: Iterable[str]) -> None:
    """Offline: copy each needed distribution's files (dist-info included) from this interpreter."""
    for dist in _requirement_closure(extras):
        base = Path(str(dist.locate_file("")))
        for file in dist.files or ():
            source = Path(str(dist.locate_file(file)))
            try:
                relative = source.resolve().relative_to(base.resolve())
            except ValueError:
                continue  # console scripts and data outside site-packages
            if "__pycache__" in relative.parts or not source.is_file():
                continue
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
        logger.info("copied %s %s from %s", dist.metadata["Name"], dist.version, base)


def prune(tree: Path) -> None:
    """Drop what never runs in Lambda: bytecode caches, console scripts, C headers, test suites."""
    doomed = [*tree.rglob("__pycache__"), tree / "bin"]
    doomed += [tree / "pyarrow" / name for name in ("include", "tests", "src")]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    for pattern in ("*.pyx", "*.pxd", "*.pxi"):
        for path in tree.glob(f"pyarrow/**/{pattern}"):
            path.unlink()


def build_tree(
    opt: Path,
    *,
    extras: str,
    platforms: list[str],
    python_version: str,
    from_env: bool,
    isolation: bool,
    machine: str = "x86_64",
    lock: Path | None = None,
) -> None:
    """Lay out ``opt`` as Lambda will see ``/opt``."""
    for part in ("extensions/capture-ext", "capture-ext", "python"):
        path = opt / part
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    deps = opt / "capture-ext"
    with tempfile.TemporaryDirectory(prefix="capture-ext-wheel-") as scratch:
        wheel = build_wheel(Path(scratch), isolation=isolation)
        if from_env:
            run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--no-deps",
                 "--target", str(deps), str(wheel)])  # fmt: skip
            copy_from_env(deps, [e for e in extras.split(",") if e])
        else:
            install_for_platform(wheel, deps, extras, platforms, python_version, lock)
        # The function's half: only the package, no dependencies (the client is stdlib only).
        run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--no-deps",
             "--target", str(opt / "python"), str(wheel)])  # fmt: skip
    for half in (deps, opt / "python"):
        prune(half)
        drop_direct_urls(half)
        precompile(half, python_version)
    if not any(deps.glob("capture_ext-*.dist-info/entry_points.txt")):
        raise BuildError("the capture_ext dist-info (entry points of the built-in sinks) is missing")
    # Read by the launcher: the one interpreter (and machine) these compiled wheels load in.
    (deps / "python-version").write_text(f"{python_version}\n", encoding="utf-8")
    (deps / "architecture").write_text(f"{machine}\n", encoding="utf-8")
    launcher = opt / "extensions" / "capture-ext"
    launcher.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(LAUNCHER, launcher)
    launcher.chmod(0o755)


def find_interpreter(python_version: str) -> str | None:
    """A working ``python<version>``: on PATH (the Dockerfile's build stage), or a pyenv install."""
    candidates = [shutil.which(f"python{python_version}")]
    pattern = f".pyenv/versions/{python_version}.*/bin/python{python_version}"
    candidates += sorted(str(p) for p in Path.home().glob(pattern))
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if probe.returncode == 0 and probe.stdout.strip() == python_version:
            return candidate
    return None


def precompile(tree: Path, python_version: str) -> None:
    """Ship bytecode for the target Python: ``/opt`` is read-only on Lambda, so without it every
    cold start recompiles each module it imports (about 100 ms for the extension alone).

    ``unchecked-hash`` pycs do not depend on file dates (the zip resets them) and are reproducible.
    """
    interpreter = find_interpreter(python_version)
    if interpreter is None:
        logger.warning(
            "no python%s on PATH: the layer ships without bytecode, so each cold start compiles it", python_version
        )
        return
    # One process and a fixed hash seed: marshal's output depends on both, and the zip must be reproducible.
    run(
        # -s/-p: source paths inside the pycs are where Lambda mounts them, not this build's temp dir.
        [
            interpreter,
            "-m",
            "compileall",
            "-q",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(tree),
            "-p",
            f"/opt/{tree.name}",
            str(tree),
        ],
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


def drop_direct_urls(tree: Path) -> None:
    """pip records the temporary wheel's path and hash; meaningless in a layer, and it breaks reproducibility."""
    for direct_url in tree.glob("*.dist-info/direct_url.json"):
        direct_url.unlink()
        record = direct_url.parent / "RECORD"
        if record.is_file():
            lines = record.read_text(encoding="utf-8").splitlines(keepends=True)
            record.write_text("".join(ln for ln in lines if "/direct_url.json," not in ln), encoding="utf-8")


def tree_size(tree: Path) -> int:
    return sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())


def write_zip(tree: Path, zip_path: Path) -> None:
    """Zip ``tree`` reproducibly (sorted entries, fixed dates), keeping the Unix file modes."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in sorted(tree.rglob("*")):
            if not path.is_file():
                continue
            info = zipfile.ZipInfo(path.relative_to(tree).as_posix(), ZIP_DATE)
            mode = stat.S_IMODE(path.stat().st_mode)
            info.external_attr = (stat.S_IFREG | (0o755 if mode & 0o111 else 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    os.replace(tmp, zip_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python layer/build_layer.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "layer-build", help="output folder (default: %(default)s)")
    parser.add_argument("--opt", type=Path, help="lay the tree out here instead of OUT/layer (the Dockerfile: /opt)")
    parser.add_argument("--no-zip", action="store_true", help="only lay out the tree")
    parser.add_argument(
        "--extras", default="aws,parquet", help="extras of capture-ext to install (default: %(default)s)"
    )
    parser.add_argument(
        "--arch", choices=sorted(MACHINES), default="x86_64", help="Lambda architecture (default: %(default)s)"
    )
    parser.add_argument(
        "--platform",
        action="append",
        dest="platforms",
        help="wheel platform tag, repeatable (default: manylinux2014, manylinux_2_28 and manylinux_2_34 "
        "of --arch: Amazon Linux 2023 has glibc 2.34)",
    )
    parser.add_argument(
        "--python-version", default="3.12", choices=PYTHON_VERSIONS, help="target Python (default: %(default)s)"
    )
    parser.add_argument(
        "--lock",
        type=Path,
        default=LOCK if LOCK.is_file() else None,
        help="constraints file every dependency is pinned by (default: the project's constraints.txt)",
    )
    parser.add_argument("--no-lock", action="store_true", help="resolve the newest versions instead of the lock")
    parser.add_argument(
        "--from-env",
        action="store_true",
        help="offline: copy dependencies from this interpreter (only right when it matches the target)",
    )
    parser.add_argument(
        "--no-build-isolation",
        action="store_true",
        help="build the project wheel with this interpreter's setuptools (no download)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    if args.from_env and args.python_version != f"{sys.version_info[0]}.{sys.version_info[1]}":
        parser.error(
            f"--from-env copies this Python {sys.version_info[0]}.{sys.version_info[1]}'s packages; "
            f"pass --python-version {sys.version_info[0]}.{sys.version_info[1]} to say that is the target"
        )
    this_machine = platform.machine()
    if args.from_env and MACHINES[args.arch] != this_machine:
        parser.error(f"--from-env copies this {this_machine} machine's packages; --arch {args.arch} needs the other")
    if args.lock is not None and not args.no_lock and not args.lock.is_file():
        parser.error(f"--lock {args.lock}: no such file")
    opt = args.opt or args.out / "layer"
    try:
        build_tree(
            opt,
            extras=args.extras,
            platforms=args.platforms or platforms_for(args.arch),
            python_version=args.python_version,
            from_env=args.from_env,
            isolation=not args.no_build_isolation,
            machine=MACHINES[args.arch],
            lock=None if args.no_lock else args.lock,
        )
    except BuildError as exc:
        logger.error("%s", exc)
        return 1
    unzipped = tree_size(opt)
    summary = f"layer tree {opt}: {unzipped / 1e6:.1f} MB unzipped"
    if not args.no_zip:
        zip_path = args.out / "capture-ext-layer.zip"
        write_zip(opt, zip_path)
        summary += f"; {zip_path}: {zip_path.stat().st_size / 1e6:.1f} MB"
    logger.info("%s", summary)
    if unzipped > UNZIPPED_LIMIT:
        logger.warning("over Lambda's 250 MB unzipped limit for function + layers; try --extras aws")
    return 0


if __name__ == "__main__":
    sys.exit(main())
