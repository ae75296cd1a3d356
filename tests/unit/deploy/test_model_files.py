"""download_model.py and tiny_model.py: the model folder the function loads, built and checked offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference_fn import download_model
from inference_fn.qa import QuestionAnswerer
from inference_fn.tiny_model import SPECIAL_TOKENS, build_tiny_model, build_vocab
from tests.qa_models import tiny_model


def test_vocab_has_no_duplicates_even_when_extra_words_repeat_known_ones() -> None:
    vocab = build_vocab(("paris", "Paris", "zebra"))
    assert len(vocab) == len(set(vocab))
    assert vocab[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert "zebra" in vocab


@pytest.mark.parametrize(
    ("start", "end", "problem"),
    [("paris", None, "give both"), ("two words", "france", "single alphanumeric word")],
)
def test_wired_markers_are_validated(tmp_path: Path, start: str, end: str | None, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        build_tiny_model(tmp_path, answer_start=start, answer_end=end)


def test_dry_run_fetches_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "model"
    assert download_model.main(["--model-dir", str(target), "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["model_dir"] == str(target)
    assert "distilbert-base-cased-distilled-squad" in plan["from"]
    assert "model.safetensors" in plan["files"]
    assert not target.exists()


def test_install_from_a_local_folder_gives_a_loadable_model(tmp_path: Path) -> None:
    target = tmp_path / "model"
    assert download_model.main(["--model-dir", str(target), "--source", str(tiny_model("wired"))]) == 0
    assert download_model.check_model_dir(target) == []
    info = json.loads((target / download_model.INFO_FILE).read_text())
    assert info["name"] == "tiny-distilbert-qa-wired"
    assert info["version"] == "seed0-paris-france"
    qa = QuestionAnswerer.from_dir(target)
    assert qa.info == {"name": "tiny-distilbert-qa-wired", "version": "seed0-paris-france"}
    assert qa.answer("where?", "it is paris in france .").text == "paris in france"


def test_an_existing_model_is_not_fetched_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "model"
    assert download_model.main(["--model-dir", str(target), "--source", str(tiny_model("wired"))]) == 0
    caplog.set_level("INFO")
    # Without --force the hub is never asked, so this succeeds offline.
    assert download_model.main(["--model-dir", str(target)]) == 0
    assert "already holds a model" in caplog.text


def test_an_incomplete_folder_is_refused_naming_what_is_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "half"
    source.mkdir()
    (source / "config.json").write_text("{}")
    assert download_model.main(["--model-dir", str(tmp_path / "model"), "--source", str(source)]) == 1
    assert "no weights (model.safetensors or pytorch_model.bin)" in caplog.text
    assert "no tokenizer" in caplog.text


def test_hub_failure_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on this machine: the hub is unreachable
    assert download_model.main(["--model-dir", str(tmp_path / "model"), "--force"]) == 1
    assert "could not fetch distilbert-base-cased-distilled-squad@main" in caplog.text
