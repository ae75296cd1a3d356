"""The rules for reading a sink's answer (core/write_results.py), edge by edge.

Written against the mutants `make mutate` left alive: each test pins one boundary of what a
plugin's ``WriteResult`` may say (an index one past the end, a hint of exactly 0 or 1e9, a bool
where a number belongs) and which records the retry then carries.
"""

from __future__ import annotations

import logging
import math

import pytest

from capture_ext.core.write_results import failed_part, well_formed
from capture_ext.models import Batch, Outcome, WriteResult


def batch(*ids: str | None, attempt: int = 1) -> Batch:
    records = tuple({"n": n} if value is None else {"n": n, "inference_id": value} for n, value in enumerate(ids))
    return Batch("env-00000007", "env", 7, records, attempt)


@pytest.mark.parametrize("result", [WriteResult.ok(), WriteResult.fatal("no"), WriteResult(Outcome.OK, "x", ("a",))])
def test_an_answer_that_is_not_retryable_is_passed_through_untouched(result: WriteResult) -> None:
    assert well_formed(result, 0, "s") is result


@pytest.mark.parametrize(
    "result",
    [
        WriteResult.retryable("x", failed_indices=[0, 2]),
        WriteResult.retryable("x", failed_ids=["a", "b"]),
        WriteResult.retryable("x", retry_after_s=0),
        WriteResult.retryable("x", retry_after_s=0.0),
        WriteResult.retryable("x", retry_after_s=999_999_999.5),
        WriteResult.retryable("x", retry_after_s=3),
        WriteResult.retryable("x"),
    ],
)
def test_a_well_typed_retryable_answer_is_kept_as_it_is(result: WriteResult, caplog) -> None:
    with caplog.at_level(logging.WARNING, "capture_ext.core.dispatcher"):
        assert well_formed(result, 3, "s") is result
    assert caplog.records == []


@pytest.mark.parametrize(
    ("result", "kept_hint"),
    [
        (WriteResult.retryable("boom", failed_indices=[3], retry_after_s=2.5), 2.5),  # one past the end
        (WriteResult.retryable("boom", failed_indices=[-1], retry_after_s=0), 0),
        (WriteResult.retryable("boom", failed_indices=[True], retry_after_s=1), 1),  # bool is not a position
        (WriteResult.retryable("boom", failed_indices=["1"]), None),  # type: ignore[list-item]
        (WriteResult.retryable("boom", failed_ids=["a", 7]), None),  # type: ignore[list-item]
        (WriteResult.retryable("boom", retry_after_s=1e9), None),
        (WriteResult.retryable("boom", retry_after_s=-0.001), None),
        (WriteResult.retryable("boom", retry_after_s=math.nan), None),
        (WriteResult.retryable("boom", retry_after_s=math.inf), None),
        (WriteResult.retryable("boom", retry_after_s=True), None),
        (WriteResult.retryable("boom", retry_after_s="3"), None),  # type: ignore[arg-type]
    ],
)
def test_a_malformed_answer_retries_the_whole_batch_keeping_a_usable_hint(
    result: WriteResult, kept_hint: float | None, caplog
) -> None:
    with caplog.at_level(logging.WARNING, "capture_ext.core.dispatcher"):
        fixed = well_formed(result, 3, "plugin-x")
    assert fixed == WriteResult(Outcome.RETRYABLE, "boom", (), kept_hint, ())
    assert [r.getMessage() for r in caplog.records] == [
        "sink plugin-x: a malformed WriteResult (failed_indices/failed_ids/retry_after_s); retrying it all"
    ]
    assert caplog.records[0].levelno == logging.WARNING


def test_a_malformed_answer_without_an_error_text_gets_one() -> None:
    fixed = well_formed(WriteResult(Outcome.RETRYABLE, None, (), None, (5,)), 3, "s")
    assert fixed == WriteResult(Outcome.RETRYABLE, "retryable error", (), None, ())


def test_positions_name_exactly_the_records_the_retry_carries_in_batch_order() -> None:
    retry = failed_part(batch("a", "b", "c", "d", attempt=2), WriteResult.retryable("x", failed_indices=[3, 0, 3]))
    assert (retry.batch_id, retry.environment_id, retry.sequence, retry.attempt) == ("env-00000007", "env", 7, 3)
    assert [r["n"] for r in retry.records] == [0, 3]


@pytest.mark.parametrize("indices", [[0, 4], [4], [-1, 2], [-1]])
def test_a_position_outside_the_batch_resends_all_of_it(indices: list[int]) -> None:
    retry = failed_part(batch("a", "b", "c", "d"), WriteResult(Outcome.RETRYABLE, "x", (), None, tuple(indices)))
    assert [r["n"] for r in retry.records] == [0, 1, 2, 3]
    assert retry.attempt == 2


def test_the_last_position_is_inside_the_batch() -> None:
    retry = failed_part(batch("a", "b", "c"), WriteResult.retryable("x", failed_indices=[2]))
    assert [r["n"] for r in retry.records] == [2]


def test_positions_win_over_ids() -> None:
    result = WriteResult.retryable("x", failed_ids=["a"], failed_indices=[1])
    assert [r["n"] for r in failed_part(batch("a", "b", "c"), result).records] == [1]


def test_unique_ids_name_their_records() -> None:
    retry = failed_part(batch("a", "b", None, "c"), WriteResult.retryable("x", failed_ids=["c", "a", "zz"]))
    assert [r["n"] for r in retry.records] == [0, 3]
    assert retry.attempt == 2


def test_an_id_shared_by_two_records_resends_the_whole_batch_even_beside_a_unique_one() -> None:
    retry = failed_part(batch("a", "b", "a"), WriteResult.retryable("x", failed_ids=["b", "a"]))
    assert [r["n"] for r in retry.records] == [0, 1, 2]


def test_a_shared_id_not_named_does_not_stop_a_unique_one_from_being_exact() -> None:
    retry = failed_part(batch("a", "b", "a"), WriteResult.retryable("x", failed_ids=["b"]))
    assert [r["n"] for r in retry.records] == [1]


def test_ids_that_name_no_record_resend_the_whole_batch() -> None:
    retry = failed_part(batch("a", "b"), WriteResult.retryable("x", failed_ids=["zz"]))
    assert [r["n"] for r in retry.records] == [0, 1]
    assert retry.attempt == 2


def test_records_without_an_id_are_not_named_by_an_id_list() -> None:
    # Two records without an id share the id None; naming "a" must still be exact.
    retry = failed_part(batch(None, "a", None), WriteResult.retryable("x", failed_ids=["a"]))
    assert [r["n"] for r in retry.records] == [1]
