"""Fetch the question-answering model into ``MODEL_DIR`` (used by ``make model`` and the image build).

Only the files inference needs are fetched (config, tokenizer, safetensors weights; the
PyTorch ``.bin`` only when a repository has no safetensors), pinned to the commit the revision
resolves to, and ``model_info.json`` records name and commit so every captured record says
exactly which model answered.

``--source DIR`` installs from a local folder instead of the hub (an offline mirror, or a test
with the tiny model), and ``--dry-run`` prints the plan without fetching. The module needs only
the standard library until it talks to the hub, so the Docker build can run it as a plain script.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("download_model")

DEFAULT_REPO = "distilbert-base-cased-distilled-squad"
INFO_FILE = "model_info.json"
CONFIG_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
WEIGHTS = ("model.safetensors", "pytorch_model.bin")
#: What a folder must hold to be loadable by ``inference_fn.qa.QuestionAnswerer.from_dir``.
REQUIRED = ("config.json",)


class DownloadError(RuntimeError):
    """The model could not be fetched or is incomplete; the message says what is missing."""


def check_model_dir(path: Path) -> list[str]:
    """The problems that would stop the function from loading the model in ``path``."""
    problems = [f"{name} is missing" for name in REQUIRED if not (path / name).is_file()]
    if not any((path / name).is_file() for name in WEIGHTS):
        problems.append(f"no weights ({' or '.join(WEIGHTS)})")
    if not any((path / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        problems.append("no tokenizer (tokenizer.json or vocab.txt)")
    return problems


def _write_info(model_dir: Path, name: str, version: str | None, source: str) -> None:
    info = {"name": name, "version": version, "source": source}
    (model_dir / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def install_from_folder(source: Path, model_dir: Path, *, name: str | None = None) -> dict[str, Any]:
    """Copy a local model folder (only the files inference needs) into ``model_dir``."""
    problems = check_model_dir(source)
    if problems:
        raise DownloadError(f"{source} is not a usable model folder: {'; '.join(problems)}")
    model_dir.mkdir(parents=True, exist_ok=True)
    weights = next(w for w in WEIGHTS if (source / w).is_file())
    copied = []
    for file in (*CONFIG_FILES, weights):
        if (source / file).is_file():
            shutil.copy2(source / file, model_dir / file)
            copied.append(file)
    previous: dict[str, Any] = {}
    if (source / INFO_FILE).is_file():
        previous = json.loads((source / INFO_FILE).read_text(encoding="utf-8"))
    _write_info(model_dir, name or previous.get("name") or source.name, previous.get("version"), str(source))
    return {"files": copied, "source": str(source)}


def download_from_hub(repo_id: str, revision: str, model_dir: Path, token: str | None = None) -> dict[str, Any]:
    """Resolve ``revision`` to a commit and fetch the needed files of that commit."""
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DownloadError("huggingface_hub is not installed (pip install huggingface_hub)") from exc

    try:
        info = HfApi(token=token).model_info(repo_id, revision=revision)
        commit = info.sha
        files = {sibling.rfilename for sibling in info.siblings or ()}
        weights = next((w for w in WEIGHTS if w in files), None)
        if weights is None:
            raise DownloadError(f"{repo_id}@{revision} has none of {', '.join(WEIGHTS)}")
        wanted = [f for f in CONFIG_FILES if f in files] + [weights]
        snapshot_download(repo_id, revision=commit, allow_patterns=wanted, local_dir=model_dir, token=token)
    except DownloadError:
        raise
    except Exception as exc:  # the hub client raises many types; all mean "could not fetch"
        raise DownloadError(f"could not fetch {repo_id}@{revision}: {type(exc).__name__}: {exc}") from exc
    # snapshot_download keeps bookkeeping in <local_dir>/.cache; the image does not need it.
    shutil.rmtree(model_dir / ".cache", ignore_errors=True)
    problems = check_model_dir(model_dir)
    if problems:
        raise DownloadError(f"{model_dir} is incomplete after the download: {'; '.join(problems)}")
    _write_info(model_dir, repo_id, commit, f"https://huggingface.co/{repo_id}")
    return {"files": wanted, "commit": commit}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inference_fn.download_model",
        description="Fetch the question-answering model into MODEL_DIR.",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path(os.environ.get("MODEL_DIR", "models/distilbert-base-cased-distilled-squad")),
        help="where to put the model (default: $MODEL_DIR or %(default)s)",
    )
    parser.add_argument("--repo", default=DEFAULT_REPO, help="Hugging Face model id (default: %(default)s)")
    parser.add_argument("--revision", default="main", help="branch, tag or commit (recorded as the commit)")
    parser.add_argument("--source", type=Path, help="install from this local folder instead of the hub")
    parser.add_argument("--dry-run", action="store_true", help="print what would be done, fetch nothing")
    parser.add_argument("--force", action="store_true", help="fetch even if MODEL_DIR already holds a model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    origin = str(args.source) if args.source else f"https://huggingface.co/{args.repo} @ {args.revision}"
    if args.dry_run:
        plan = {"model_dir": str(args.model_dir), "from": origin, "files": [*CONFIG_FILES, *WEIGHTS]}
        sys.stdout.write(json.dumps(plan) + "\n")
        return 0
    if not args.force and not check_model_dir(args.model_dir):
        logger.info("%s already holds a model; nothing to do (--force to fetch again)", args.model_dir)
        return 0
    try:
        if args.source:
            result = install_from_folder(args.source, args.model_dir)
        else:
            token = os.environ.get("HF_TOKEN") or None
            result = download_from_hub(args.repo, args.revision, args.model_dir, token=token)
    except DownloadError as exc:
        logger.error("%s", exc)
        return 1
    logger.info("model from %s is in %s (%s)", origin, args.model_dir, ", ".join(result["files"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
