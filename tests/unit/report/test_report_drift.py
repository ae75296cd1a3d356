"""Drift test selection (Evidently's rules) and the checks that become violations.json entries."""

from __future__ import annotations

import random

import pytest

from capture_ext.report.descriptors import CATEGORICAL, NUMERIC, Feature, Profile
from capture_ext.report.drift import (
    COMPLETENESS,
    DATA_TYPE,
    DRIFT,
    EXTRA_COLUMN,
    MISSING_COLUMN,
    Thresholds,
    compare,
    drift_check,
    run_test,
    select_test,
)


def feature(values: list, kind: str = NUMERIC, n_rows: int | None = None, name: str = "x") -> Feature:
    present = [v for v in values if v is not None]
    return Feature(
        name=name,
        kind=kind,
        description=name,
        group="input",
        n_rows=len(values) if n_rows is None else n_rows,
        n_values=len(present),
        values=present,
        series=list(values),
    )


def normal(n: int, mu: float = 0.0, sigma: float = 1.0, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mu, sigma) for _ in range(n)]


def labels(n: int, weights: dict[str, float], seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return rng.choices(list(weights), list(weights.values()), k=n)


@pytest.mark.parametrize(
    ("values", "kind", "expected"),
    [
        (normal(1000), NUMERIC, "ks"),
        (normal(1001), NUMERIC, "wasserstein"),
        (labels(500, {"a": 1, "b": 1, "c": 1}), CATEGORICAL, "chi2"),
        (labels(500, {"true": 1, "false": 1}), CATEGORICAL, "z"),
        (labels(5000, {"a": 1, "b": 1, "c": 1}), CATEGORICAL, "jensenshannon"),
        (labels(5000, {"true": 1, "false": 1}), CATEGORICAL, "jensenshannon"),
        # numeric with at most 5 distinct values is treated as categorical, as Evidently does
        ([float(i % 3) for i in range(900)], NUMERIC, "chi2"),
        ([float(i % 4) for i in range(2000)], NUMERIC, "jensenshannon"),
    ],
)
def test_test_is_chosen_by_type_and_reference_size(values: list, kind: str, expected: str) -> None:
    assert select_test(feature(values, kind)) == expected


def test_small_sample_boundary_is_configurable() -> None:
    assert select_test(feature(normal(500)), Thresholds(small_sample=100)) == "wasserstein"


@pytest.mark.parametrize("n", [300, 3000])  # KS and Wasserstein
def test_numeric_shift_is_flagged_and_same_distribution_is_not(n: int) -> None:
    ref = feature(normal(n, seed=1))
    same = drift_check("x", ref, feature(normal(n, seed=2)), Thresholds())
    shifted = drift_check("x", ref, feature(normal(n, mu=0.5, seed=3)), Thresholds())
    assert not same.violated and shifted.violated
    assert same.test == shifted.test == ("ks" if n <= 1000 else "wasserstein")
    if n > 1000:
        # normed Wasserstein of a 0.5 sigma shift is about 0.5
        assert 0.4 < (shifted.statistic or 0) < 0.6
        assert (same.statistic or 1) < 0.1


@pytest.mark.parametrize("n", [400, 4000])  # chi-squared and Jensen-Shannon
def test_categorical_shift_is_flagged_and_same_mix_is_not(n: int) -> None:
    mix = {"a": 0.5, "b": 0.3, "c": 0.2}
    ref = feature(labels(n, mix, seed=1), CATEGORICAL)
    same = drift_check("x", ref, feature(labels(n, mix, seed=2), CATEGORICAL), Thresholds())
    moved = drift_check("x", ref, feature(labels(n, {"a": 0.2, "b": 0.3, "c": 0.5}, seed=3), CATEGORICAL), Thresholds())
    assert not same.violated and moved.violated
    assert moved.test == ("chi2" if n <= 1000 else "jensenshannon")


def test_binary_z_test_is_the_square_root_of_the_2x2_chi_squared() -> None:
    ref = ["true"] * 60 + ["false"] * 140
    cur = ["true"] * 90 + ["false"] * 110
    z, p_z = run_test("z", ref, cur)
    chi2, p_chi2 = run_test("chi2", ref, cur)
    assert z == pytest.approx(chi2**0.5)
    assert p_z == pytest.approx(p_chi2)
    # two-proportion z by hand: p1=.3, p2=.45, pooled .375, se=sqrt(.375*.625*(2/200))
    assert z == pytest.approx(0.15 / (0.375 * 0.625 * 0.01) ** 0.5, rel=1e-9)


def test_a_new_category_in_the_current_window_is_drift() -> None:
    ref = feature(["a"] * 100 + ["b"] * 100, CATEGORICAL)
    cur = feature(["a"] * 80 + ["b"] * 80 + ["c"] * 40, CATEGORICAL)
    assert drift_check("x", ref, cur, Thresholds()).violated


def test_too_few_values_are_skipped_not_flagged() -> None:
    check = drift_check("x", feature(normal(100)), feature([1.0, 2.0, 3.0]), Thresholds())
    assert check.skipped and not check.violated and "needs" in check.description


def profile(features: dict[str, Feature], n_rows: int, extra: list[str] | None = None) -> Profile:
    kinds = {n: ("numeric" if f.kind == NUMERIC else "categorical") for n, f in features.items()}
    return Profile("p", n_rows, False, kinds, features, extra_fields=extra or [])


def test_data_quality_checks_mirror_sagemaker_check_types() -> None:
    n = 200
    base = profile(
        {
            "input.a": feature(normal(n, seed=1), name="input.a"),
            "input.b": feature(normal(n, seed=2), name="input.b"),
            "input.c": feature(normal(n, seed=3), name="input.c"),
        },
        n,
    )
    half_missing = [*normal(n // 2, seed=4), *([None] * (n // 2))]
    typed = feature(normal(n, seed=5), name="input.c")
    typed.n_type_errors = 50  # 50 strings where numbers were expected
    cur = profile(
        {
            "input.a": feature(half_missing, name="input.a"),
            "input.b": feature([None] * n, name="input.b"),
            "input.c": typed,
        },
        n,
        extra=["input.new_field"],
    )
    violated = {(c.feature, c.check_type) for c in compare(base, cur) if c.violated}
    assert violated == {
        ("input.a", COMPLETENESS),
        ("input.b", MISSING_COLUMN),
        ("input.c", DATA_TYPE),
        ("input.new_field", EXTRA_COLUMN),
    }


def test_violation_entries_have_sagemaker_fields() -> None:
    ref = feature(normal(300, seed=1), name="score")
    check = drift_check("score", ref, feature(normal(300, mu=2, seed=2)), Thresholds())
    entry = check.as_json()
    assert entry["feature_name"] == "score"
    assert entry["constraint_check_type"] == DRIFT
    assert entry["test"] == "ks" and entry["threshold"] == 0.05
    assert entry["p_value"] < 0.05 and "Drift in score" in entry["description"]
