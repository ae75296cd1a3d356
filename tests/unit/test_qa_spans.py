"""Span extraction: synthetic logits against a brute-force oracle, then the tiny models end to end."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_fn.qa import QuestionAnswerer, QuestionTooLongError, best_span
from tests.qa_models import END_WORD, START_WORD, tiny_model

FILLER = ["the", "old", "city", "was", "there"]


def softmax(values: list[float], mask: list[bool]) -> list[float]:
    top = max(v for v, m in zip(values, mask, strict=True) if m)
    exps = [math.exp(v - top) if m else 0.0 for v, m in zip(values, mask, strict=True)]
    total = sum(exps)
    return [e / total for e in exps]


def oracle(start: list[float], end: list[float], allowed: list[bool], max_len: int) -> float | None:
    """Best p(start) * p(end) by enumerating every pair: the definition, written the slow way."""
    if not any(allowed):
        return None
    p_start, p_end = softmax(start, allowed), softmax(end, allowed)
    n = len(start)
    return max(
        p_start[i] * p_end[j] for i in range(n) for j in range(i, min(n, i + max_len)) if allowed[i] and allowed[j]
    )


logits = st.floats(min_value=-20, max_value=20, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    n=st.integers(min_value=1, max_value=24),
    max_len=st.integers(min_value=1, max_value=30),
)
def test_best_span_matches_brute_force(data: st.DataObject, n: int, max_len: int) -> None:
    start = data.draw(st.lists(logits, min_size=n, max_size=n))
    end = data.draw(st.lists(logits, min_size=n, max_size=n))
    allowed = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    span = best_span(torch.tensor(start), torch.tensor(end), torch.tensor(allowed), max_len)
    expected = oracle(start, end, allowed, max_len)
    if expected is None:
        assert span is None
        return
    assert span is not None
    assert allowed[span.start] and allowed[span.end]
    assert 0 <= span.end - span.start < max_len
    assert span.score == pytest.approx(expected, rel=1e-4, abs=1e-12)


def test_masked_tokens_never_win_however_high_their_logits() -> None:
    start = torch.tensor([50.0, 1.0, 0.0, 0.0, 50.0])
    end = torch.tensor([50.0, 0.0, 0.0, 2.0, 50.0])
    allowed = torch.tensor([False, True, True, True, False])
    span = best_span(start, end, allowed, 10)
    assert span is not None
    assert (span.start, span.end) == (1, 3)


def test_end_before_start_is_not_a_span() -> None:
    # The highest end logit sits before the highest start logit.
    start = torch.tensor([0.0, 0.0, 0.0, 9.0])
    end = torch.tensor([9.0, 0.0, 0.0, 0.0])
    span = best_span(start, end, torch.ones(4, dtype=torch.bool), 10)
    assert span is not None
    assert span.start <= span.end


def test_cls_in_the_denominator_lowers_the_score_not_the_choice() -> None:
    start = torch.tensor([3.0, 0.0, 4.0, 1.0])
    end = torch.tensor([3.0, 0.0, 1.0, 4.0])
    allowed = torch.tensor([False, True, True, True])
    cls = torch.tensor([True, False, False, False])
    plain = best_span(start, end, allowed, 5)
    with_cls = best_span(start, end, allowed, 5, normalize_over=cls)
    assert plain is not None and with_cls is not None
    assert (plain.start, plain.end) == (with_cls.start, with_cls.end) == (2, 3)
    assert with_cls.score < plain.score


def test_bad_max_answer_len_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_answer_len"):
        best_span(torch.zeros(3), torch.zeros(3), torch.ones(3, dtype=torch.bool), 0)


# -- the tiny models ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wired() -> QuestionAnswerer:
    return QuestionAnswerer.from_dir(tiny_model("wired"))


def test_answer_is_cut_from_the_users_text_with_its_casing_and_spacing(wired: QuestionAnswerer) -> None:
    context = "Some say PARIS,  the old city of France is north. The sea is west."
    answer = wired.answer("Where is it?", context)
    assert answer.text == "PARIS,  the old city of France"
    assert context[answer.start : answer.end] == answer.text
    assert 0.0 < answer.score <= 1.0


def test_question_tokens_are_masked(wired: QuestionAnswerer) -> None:
    # The question holds both marker words; only the context's may be answered.
    answer = wired.answer(f"{START_WORD} {END_WORD}?", f"the city {START_WORD} was in {END_WORD} .")
    assert answer.text == f"{START_WORD} was in {END_WORD}"
    assert answer.start == len("the city ")


def test_answers_are_no_longer_than_max_answer_len() -> None:
    qa = QuestionAnswerer.from_dir(tiny_model("wired"), max_answer_len=4)
    context = f"{START_WORD} " + " ".join(FILLER * 2) + f" {END_WORD}"
    answer = qa.answer("where?", context)
    tokens = qa.tokenizer(answer.text, add_special_tokens=False)["input_ids"]
    assert 1 <= len(tokens) <= 4
    assert answer.text in context


def long_context(position: int, words: int = 120) -> tuple[str, str]:
    """Filler text with a three-word answer starting at word ``position``."""
    filler = [FILLER[i % len(FILLER)] for i in range(words)]
    answer = [START_WORD, "in", END_WORD]
    return " ".join(filler[:position] + answer + filler[position:]), " ".join(answer)


def test_long_contexts_are_split_into_windows() -> None:
    qa = QuestionAnswerer.from_dir(tiny_model("wired"), max_seq_len=32, doc_stride=10)
    context, expected = long_context(100)
    assert qa.question_tokens(context) > 3 * qa.max_seq_len
    answer = qa.answer("where?", context)
    assert answer.text == expected
    assert answer.start == context.index(expected)


def test_stride_keeps_answers_at_window_edges_whole() -> None:
    """Sweep the answer across window boundaries: with overlap it is always found whole."""
    overlapping = QuestionAnswerer.from_dir(tiny_model("wired"), max_seq_len=24, doc_stride=8)
    disjoint = QuestionAnswerer.from_dir(tiny_model("wired"), max_seq_len=24, doc_stride=0)
    cut = 0
    for position in range(0, 60):
        context, expected = long_context(position, words=60)
        assert overlapping.answer("where?", context).text == expected, position
        cut += disjoint.answer("where?", context).text != expected
    # Without overlap some placements straddle a window edge and no window holds the whole answer.
    assert cut > 0


def test_a_question_that_leaves_no_room_for_context_is_refused() -> None:
    qa = QuestionAnswerer.from_dir(tiny_model("wired"), max_seq_len=32, max_question_len=64)
    with pytest.raises(QuestionTooLongError, match="question is 40 tokens"):
        qa.answer(" ".join(["city"] * 40), "the old city")


def test_random_model_answers_with_a_span_of_the_context() -> None:
    qa = QuestionAnswerer.from_dir(tiny_model("random"))
    context = "The river flows through the old city of London, north of the sea."
    answer = qa.answer("Which city?", context)
    assert answer.text
    assert context[answer.start : answer.end] == answer.text
    assert 0.0 < answer.score <= 1.0
    assert qa.info == {"name": "tiny-distilbert-qa", "version": "seed7"}
