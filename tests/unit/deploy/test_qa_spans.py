"""Span extraction: synthetic logits against a brute-force oracle, then the tiny models end to end."""

from __future__ import annotations

import functools
import math
import sys
import threading
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_fn.qa import (
    ContextTooLongError,
    InputTooLongError,
    NoTokensError,
    QuestionAnswerer,
    QuestionTooLongError,
    best_span,
)
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


# -- bounded work per request -------------------------------------------------------------


class ForwardCalls:
    """Records the batch size of every forward pass, through a real torch forward pre-hook."""

    def __init__(self, qa: QuestionAnswerer) -> None:
        self.batches: list[int] = []
        self._handle = qa.model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        self.batches.append(int(kwargs["input_ids"].shape[0]))

    def __enter__(self) -> ForwardCalls:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


def test_a_context_past_the_token_limit_is_refused_before_the_model_runs() -> None:
    """20,000 characters of '.' are 20,000 tokens: the character limit alone bounded nothing."""
    qa = QuestionAnswerer.from_dir(tiny_model("wired"))
    with (
        ForwardCalls(qa) as calls,
        pytest.raises(ContextTooLongError, match="context is 20000 tokens; the limit is 6144"),
    ):
        qa.answer("where?", "." * 20_000)
    assert calls.batches == []
    assert isinstance(ContextTooLongError("x"), InputTooLongError)


def test_windows_go_through_the_model_a_batch_at_a_time() -> None:
    qa = QuestionAnswerer.from_dir(tiny_model("wired"), max_seq_len=32, doc_stride=10, batch_windows=3)
    context, expected = long_context(100, words=200)
    with ForwardCalls(qa) as calls:
        answer = qa.answer("where?", context)
    assert answer.text == expected
    windows = qa.windows_for(qa.question_tokens(context), qa.question_tokens("where?"))
    assert sum(calls.batches) == windows > 3
    assert max(calls.batches) == 3


@pytest.mark.parametrize("position", [0, 37, 101, 166])
def test_batching_does_not_change_the_answer_or_the_score(position: int) -> None:
    one = QuestionAnswerer.from_dir(tiny_model("random"), max_seq_len=32, doc_stride=10, batch_windows=1)
    every = QuestionAnswerer.from_dir(tiny_model("random"), max_seq_len=32, doc_stride=10, batch_windows=1_000)
    context, _ = long_context(position, words=170)
    a, b = one.answer("which city?", context), every.answer("which city?", context)
    assert (a.start, a.end, a.text) == (b.start, b.end, b.text)
    assert a.score == pytest.approx(b.score, rel=1e-4)


@settings(max_examples=60, deadline=None)
@given(
    words=st.integers(min_value=1, max_value=400),
    question_words=st.integers(min_value=1, max_value=20),
    max_seq_len=st.integers(min_value=24, max_value=64),
    doc_stride=st.integers(min_value=0, max_value=40),
)
def test_window_count_is_what_the_tokenizer_cuts(
    words: int, question_words: int, max_seq_len: int, doc_stride: int
) -> None:
    """max_windows is derived from windows_for, so windows_for must match the tokenizer exactly."""
    qa = _wired_qa(max_seq_len, doc_stride)
    question = " ".join(["city"] * question_words)
    if max_seq_len - question_words - 3 < 2:
        return
    context = " ".join(FILLER[i % len(FILLER)] for i in range(words))
    encoded = qa.tokenizer(
        question, context, truncation="only_second", max_length=qa.max_seq_len,
        stride=max(0, min(qa.doc_stride, (qa.max_seq_len - question_words - 3) // 2)),
        return_overflowing_tokens=True,
    )  # fmt: skip
    assert qa.windows_for(words, question_words) == len(encoded["input_ids"])


@functools.cache
def _wired_qa(max_seq_len: int, doc_stride: int) -> QuestionAnswerer:
    return QuestionAnswerer.from_dir(tiny_model("wired"), max_seq_len=max_seq_len, doc_stride=doc_stride)


def test_the_worst_request_has_a_known_number_of_windows() -> None:
    qa = QuestionAnswerer.from_dir(tiny_model("wired"), max_context_tokens=2_000, batch_windows=4)
    question = " ".join(["city"] * qa.max_question_len)
    context = " ".join(FILLER[i % len(FILLER)] for i in range(2_000))
    with ForwardCalls(qa) as calls:
        qa.answer(question, context)
    assert sum(calls.batches) == qa.max_windows
    assert max(calls.batches) == 4
    with pytest.raises(ContextTooLongError, match="context is 2001 tokens; the limit is 2000"):
        qa.answer(question, context + " city")


@pytest.mark.parametrize(
    ("field", "question", "context"), [("question", "\x00\u200b", "the city"), ("context", "where?", "\u200b" * 9)]
)
def test_text_with_no_tokens_is_refused(field: str, question: str, context: str) -> None:
    qa = QuestionAnswerer.from_dir(tiny_model("wired"))
    with pytest.raises(NoTokensError, match=f"field '{field}' has no text the model can read"):
        qa.answer(question, context)


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="batch_windows"):
        QuestionAnswerer.from_dir(tiny_model("wired"), batch_windows=0)


def test_concurrent_calls_share_the_tokenizer_safely() -> None:
    """A fast tokenizer's truncation setting lives on one shared object that every call resets:
    unlocked, a call counting tokens (no truncation) between another call's "truncate to 384" and
    its encode sent a 708-token window to the model ("size of tensor a (708) must match ... (512)")."""
    qa = QuestionAnswerer.from_dir(tiny_model("wired"))
    context, expected = long_context(600, words=700)  # ~700 tokens: more than one window
    assert qa.answer("where?", context).text == expected
    failures: list[str] = []
    stop = threading.Event()

    def count_tokens() -> None:
        while not stop.is_set():
            qa.question_tokens("where is it?")

    def answer() -> None:
        for _ in range(12):
            try:
                got = qa.answer("where?", context).text
                if got != expected:
                    failures.append(f"answered {got!r}")
            except Exception as exc:
                failures.append(repr(exc))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so that a race shows within a few calls
    counters = [threading.Thread(target=count_tokens) for _ in range(2)]
    answerers = [threading.Thread(target=answer) for _ in range(2)]
    try:
        for thread in counters + answerers:
            thread.start()
        for thread in answerers:
            thread.join(timeout=60)
    finally:
        stop.set()
        for thread in counters:
            thread.join(timeout=10)
        sys.setswitchinterval(interval)
    assert not failures, f"{len(failures)} of 24 calls failed: {failures[:2]}"
