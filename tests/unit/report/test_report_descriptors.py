"""QA descriptors, the generic flat-field profile, and the statistics.json round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from capture_ext.report.baseline import BaselineError, read_statistics, write_statistics
from capture_ext.report.descriptors import CATEGORICAL, NUMERIC, TEXT, build_profile, infer_kind, is_qa
from capture_ext.report.drift import compare
from capture_ext.report.synth import START, make_records

CONTEXT = "The Golden Gate Bridge opened in 1937 in San Francisco."


def qa(question: str, output: object, latency: float | None = 10.0) -> dict:
    return {"input": {"question": question, "context": CONTEXT}, "output": output, "latency_ms": latency}


def test_qa_descriptors_read_both_output_spellings() -> None:
    records = [
        qa("When did it open?", {"Question": "When did it open?", "Answer": "1937", "score": 0.9}),
        qa("Where is it?", {"answer": "san francisco", "score": 0.8, "start": 41, "end": 54}),
        qa("Who built it?", {"answer": "", "score": 0.1}),
        qa("Which river?", {"answer": "Thames", "score": 0.2}),
    ]
    profile = build_profile(records, "t")
    assert profile.qa
    f = profile.features
    assert f["question_length"].series == [17, 12, 13, 12]
    assert f["context_length"].values == [len(CONTEXT)] * 4
    assert f["answer_length"].series == [4, 13, 0, 6]
    assert f["answer_empty"].series == ["false", "false", "true", "false"]
    # case-insensitive match; no verdict for an empty answer
    assert f["answer_in_context"].series == ["true", "true", None, "false"]
    assert f["score"].series == [0.9, 0.8, 0.1, 0.2]
    assert f["latency_ms"].kind == NUMERIC and f["answer_empty"].kind == CATEGORICAL
    # question/answer/score are covered by the QA descriptors, not profiled twice
    assert not {"input.question", "input.context", "output.answer", "output.Answer", "output.score"} & set(f)
    assert {"output.start", "output.end"} <= set(f)


def test_generic_profile_of_flat_fields() -> None:
    rows: list[dict[str, Any]] = [
        {
            "input": {"age": 30 + i, "country": "FR" if i % 3 else "DE", "text": f"free text number {i} " * 5,
                      "nested": {"k": i}, "vector": [1, 2, i]},
            "output": {"label": "yes" if i % 2 else "no", "p": i / 20},
        }
        for i in range(20)
    ]  # fmt: skip
    profile = build_profile(rows, "t")
    assert not profile.qa
    assert profile.kinds == {
        "input.age": NUMERIC,
        "input.country": CATEGORICAL,
        "input.text": TEXT,
        "input.nested.k": NUMERIC,
        "input.vector.length": NUMERIC,
        "output.label": CATEGORICAL,
        "output.p": NUMERIC,
    }
    assert profile.features["input.text"].values[0] == len(rows[0]["input"]["text"])
    assert profile.features["input.text"].description == "length of input.text (characters)"
    assert "latency_ms" not in profile.features  # no record has one: nothing to compare


def test_current_window_is_read_with_the_baseline_kinds() -> None:
    base = build_profile([{"input": {"n": i}} for i in range(10)], "b")
    cur = build_profile(
        [{"input": {"n": "oops" if i < 5 else i, "extra": 1}} for i in range(10)], "c", kinds=base.kinds
    )
    assert cur.features["input.n"].n_type_errors == 5
    assert cur.features["input.n"].values == [5.0, 6.0, 7.0, 8.0, 9.0]
    assert cur.extra_fields == ["input.extra"]


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        ([1, 2.5, None], NUMERIC),
        ([True, False], CATEGORICAL),
        (["a", "b", "a"], CATEGORICAL),
        ([f"value {i}" for i in range(30)], TEXT),
        (["x" * 100], TEXT),
        ([None, None], None),
    ],
)
def test_kind_inference(values: list, kind: str | None) -> None:
    assert infer_kind(values) == kind


def test_is_qa_needs_question_and_context_in_most_records() -> None:
    assert is_qa([qa("q?", {"answer": "a"})] * 3 + [{"input": "x"}])
    assert not is_qa([{"input": {"question": "q?"}}] * 3)
    assert not is_qa([])


def test_statistics_round_trip_keeps_kinds_counts_and_drift_verdicts(tmp_path: Path) -> None:
    base_records = make_records(400, START, seed=1)
    baseline = build_profile(base_records, "b")
    path = tmp_path / "statistics.json"
    write_statistics(str(path), baseline, "w", "src")
    loaded, description = read_statistics(str(path))
    assert loaded.kinds == baseline.kinds and loaded.n_rows == 400 and loaded.qa
    for name, feat in baseline.features.items():
        assert loaded.features[name].n_values == feat.n_values
        if feat.kind == "categorical":
            assert loaded.features[name].category_counts() == feat.category_counts()
        else:
            assert sorted(loaded.features[name].values) == sorted(feat.values)
    drifted = build_profile(make_records(400, START, seed=2, question_chars=80), "c", kinds=loaded.kinds)
    same = build_profile(make_records(400, START, seed=3), "c", kinds=loaded.kinds)
    assert {c.feature for c in compare(loaded, drifted) if c.violated} == {"question_length"}
    assert not [c for c in compare(loaded, same) if c.violated]
    assert "statistics.json" in description


def test_statistics_sample_is_bounded(tmp_path: Path) -> None:
    profile = build_profile([{"input": {"v": float(i)}} for i in range(12_000)], "b")
    path = tmp_path / "s.json"
    write_statistics(str(path), profile, "w", "src")
    entry = json.loads(path.read_text())["features"]["input.v"]
    assert len(entry["sample"]) == 5000 and entry["num_present"] == 12_000
    assert entry["sample"][0] == 0.0 and entry["sample"][-1] > 11_990


def test_bad_baseline_files_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match="not found"):
        read_statistics(str(tmp_path / "nope.json"))
    (tmp_path / "x.json").write_text("{]")
    with pytest.raises(BaselineError, match="not JSON"):
        read_statistics(str(tmp_path / "x.json"))
    (tmp_path / "y.json").write_text('{"features": {}}')
    with pytest.raises(BaselineError, match="not a capture-ext statistics file"):
        read_statistics(str(tmp_path / "y.json"))


def test_non_finite_numbers_count_as_missing() -> None:
    rows = [{"input": {"x": v}} for v in (1.0, float("nan"), float("inf"), 2.0)]
    feat = build_profile(rows, "b").features["input.x"]
    assert feat.values == [1.0, 2.0] and feat.n_values == 2 and feat.n_type_errors == 0
