"""inference_fn/Dockerfile builds from pinned inputs only, and every security-check skip is explained.

The image itself cannot be built here (no Docker): these check the text that decides what it
contains. The base image is pinned by one digest that ``make base-image-digest`` can rewrite;
every pip run names exactly one index and the lock; the model is fetched by commit; and each
checkov skip, in the template or the Dockerfile, carries a reason that docs/deployment.md repeats.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode_str

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = (ROOT / "inference_fn" / "Dockerfile").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()
DOCS = (ROOT / "docs" / "deployment.md").read_text()
DIGEST = re.compile(r"^FROM public\.ecr\.aws/lambda/python:3\.12@sha256:([0-9a-f]{64})\b", re.M)


def instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_every_stage_starts_from_the_same_pinned_digest() -> None:
    froms = [line for line in instructions() if line.startswith("FROM ")]
    assert len(froms) == 3
    assert len(DIGEST.findall(DOCKERFILE)) == 3
    assert len(set(DIGEST.findall(DOCKERFILE))) == 1


def test_make_base_image_digest_rewrites_every_from_line() -> None:
    """The sed of `make base-image-digest`, applied here with a new digest, must reach all three."""
    (sed,) = re.findall(r'sed -i -E "(s\|.*?\|)" inference_fn/Dockerfile', MAKEFILE)
    _, pattern, replacement, _ = sed.split("|")
    pattern = pattern.replace("$(BASE_IMAGE)", "public.ecr.aws/lambda/python:3.12")
    new = "sha256:" + "e" * 64
    replacement = replacement.replace("\\\\1", r"\1").replace("$$digest", new)
    rewritten = re.sub(pattern.replace("(FROM ", "^(FROM "), replacement, DOCKERFILE, flags=re.M)
    assert set(DIGEST.findall(rewritten)) == {"e" * 64}


def pip_runs() -> list[list[str]]:
    runs = []
    for line in instructions():
        if not line.startswith("RUN "):
            continue
        for command in line[4:].split("&&"):
            if command.strip().startswith(("pip install", "pip download")):
                runs.append(shlex.split(command))
    return runs


def test_every_pip_run_uses_one_index_and_the_lock() -> None:
    runs = pip_runs()
    assert len(runs) == 3
    for words in runs:
        assert "--extra-index-url" not in words, words
        assert words.count("--index-url") == 1, words
        index = words[words.index("--index-url") + 1]
        if words[1] == "download":
            # torch alone from PyTorch's index: no dependency may come from there.
            assert index == "https://download.pytorch.org/whl/cpu"
            assert "--no-deps" in words
        else:
            assert index == "https://pypi.org/simple"
            assert "-c" in words and words[words.index("-c") + 1].endswith("constraints.txt"), words
    assert "--constraint" in (ROOT / "layer" / "build_layer.py").read_text()


def test_the_lock_pins_what_the_image_installs_unpinned() -> None:
    lock = (ROOT / "constraints.txt").read_text()
    for name in ("torch==2.13.0+cpu", "transformers==", "huggingface_hub=="):
        assert re.search(rf"^{re.escape(name)}", lock, re.M), name


def test_the_model_is_fetched_by_commit_only() -> None:
    assert "MODEL_REVISION=main" not in DOCKERFILE
    assert "grep -Eqx '[0-9a-f]{40}'" in DOCKERFILE
    assert '--revision "$revision"' in DOCKERFILE
    assert "inference_fn/model-revision.txt:" in MAKEFILE


def dockerignore_keeps(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    kept = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").replace("**/", "*").replace("/**", "/*")
        if pattern == "**" or fnmatch.fnmatch(path, pattern):
            kept = negate
    return kept


def test_every_copied_file_is_in_the_build_context() -> None:
    sources = []
    for line in instructions():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert "constraints.txt" in sources and "inference_fn/model-revision.txt" in sources
    for source in sources:
        probe = source if "." in Path(source).name else f"{source}/__init__.py"
        assert dockerignore_keeps(probe), f".dockerignore drops {source}"
        # model-revision.txt is made by `make model-revision` (it needs the model hub).
        assert (ROOT / source).exists() or source == "inference_fn/model-revision.txt", source


def template_skips() -> list[tuple[str, str, str]]:
    decoded, problems = decode_str((ROOT / "template.yaml").read_text())
    assert not problems
    out = []
    for name, res in decoded["Resources"].items():
        skip: list[dict[str, Any]] = res.get("Metadata", {}).get("checkov", {}).get("skip", [])
        out += [(name, entry["id"], entry.get("comment", "")) for entry in skip]
    return out


def dockerfile_skips() -> list[tuple[str, str, str]]:
    return [
        ("Dockerfile", check, reason.strip())
        for check, reason in re.findall(r"^# checkov:skip=(CKV\w+):(.*)$", DOCKERFILE, re.M)
    ]


@pytest.mark.parametrize("skip", template_skips() + dockerfile_skips(), ids=lambda s: f"{s[0]}-{s[1]}")
def test_each_checkov_skip_has_a_reason_and_is_documented(skip: tuple[str, str, str]) -> None:
    where, check, reason = skip
    assert len(reason) > 40, f"{where} skips {check} without a reason"
    rows = [line for line in DOCS.splitlines() if line.startswith(f"| {check} ")]
    assert len(rows) == 1, f"docs/deployment.md does not list {check}"
    assert (where if where != "Dockerfile" else "Dockerfile") in rows[0]


def test_docs_list_no_skip_that_is_not_in_the_files() -> None:
    listed = set(re.findall(r"^\| (CKV\w+) ", DOCS, re.M))
    assert listed == {check for _, check, _ in template_skips() + dockerfile_skips()}
