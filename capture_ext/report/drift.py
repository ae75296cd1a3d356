"""Drift and data-quality checks of a current profile against its baseline.

The drift test follows Evidently's defaults, chosen by the feature's type and the size of the
reference (baseline) sample:

=====================  ==============================  ==================================
reference values       numeric (> 5 distinct values)   categorical (or numeric ≤ 5 values)
=====================  ==============================  ==================================
≤ 1,000                Kolmogorov–Smirnov, p < 0.05    chi-squared, p < 0.05 (z-test if binary)
> 1,000                Wasserstein / std ≥ 0.1         Jensen–Shannon distance ≥ 0.1
=====================  ==============================  ==================================

Small samples get a hypothesis test because a distance on 50 points is mostly noise; large
ones get a distance because with 100,000 points every test says "significant" for differences
nobody cares about. The data-quality checks mirror SageMaker Model Monitor's
``constraint_violations.json`` check types.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

from capture_ext.report.descriptors import CATEGORICAL, Feature, Profile

SMALL_SAMPLE = 1000
P_VALUE = 0.05
DISTANCE = 0.1
MIN_VALUES = 5
MAX_DISTINCT_NUMERIC_AS_CATEGORY = 5
COMPLETENESS_DROP = 0.1
TYPE_ERROR_RATE = 0.1

DRIFT = "baseline_drift_check"
COMPLETENESS = "completeness_check"
DATA_TYPE = "data_type_check"
MISSING_COLUMN = "missing_column_check"
EXTRA_COLUMN = "extra_column_check"


@dataclass(frozen=True)
class Thresholds:
    p_value: float = P_VALUE
    distance: float = DISTANCE
    small_sample: int = SMALL_SAMPLE
    completeness_drop: float = COMPLETENESS_DROP
    type_error_rate: float = TYPE_ERROR_RATE


@dataclass(frozen=True)
class Check:
    """One evaluated check; ``violated`` ones become entries in violations.json."""

    feature: str
    check_type: str
    violated: bool
    description: str
    test: str | None = None
    statistic: float | None = None
    p_value: float | None = None
    threshold: float | None = None
    n_baseline: int = 0
    n_current: int = 0
    skipped: bool = False

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "feature_name": self.feature,
            "constraint_check_type": self.check_type,
            "description": self.description,
        }
        for key in ("test", "statistic", "p_value", "threshold"):
            value = getattr(self, key)
            if value is not None:
                # NaN/inf are not JSON; a test that cannot say gives no number rather than a bad file
                out[key] = (
                    (float(f"{value:.6g}") if math.isfinite(value) else None) if isinstance(value, float) else value
                )
        if self.check_type == DRIFT:
            out.update(baseline_count=self.n_baseline, current_count=self.n_current)
        return out


def _finite(values: list[Any]) -> Any:
    """The finite values as a float array (NaN or inf would poison every statistic)."""
    import numpy as np

    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def _label(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def select_test(reference: Feature, thresholds: Thresholds = Thresholds()) -> str:
    """The test Evidently would pick for this reference: ks, chi2, z, wasserstein or jensenshannon."""
    categorical = reference.kind == CATEGORICAL or (len(set(reference.values)) <= MAX_DISTINCT_NUMERIC_AS_CATEGORY)
    small = reference.n_values <= thresholds.small_sample
    if categorical:
        if not small:
            return "jensenshannon"
        return "z" if len(_category_counts(reference)) == 2 else "chi2"
    return "ks" if small else "wasserstein"


TEST_NAMES = {
    "ks": "Kolmogorov–Smirnov",
    "chi2": "chi-squared",
    "z": "two-proportion z-test",
    "wasserstein": "Wasserstein distance (normed)",
    "jensenshannon": "Jensen–Shannon distance",
}


def _category_counts(feat: Feature) -> Counter[str]:
    """Counts per label: exact counts for categories, the values' own counts for a numeric feature
    with few distinct values (tested as categories)."""
    if feat.kind == CATEGORICAL:
        return feat.category_counts()
    return Counter(map(_label, feat.values))


def _counts(ref: Counter[str], cur: Counter[str]) -> tuple[list[int], list[int]]:
    keys = sorted(set(ref) | set(cur))
    return [ref[k] for k in keys], [cur[k] for k in keys]


def run_test(test: str, ref: Any, cur: Any) -> tuple[float, float | None]:
    """(statistic, p-value or None) of ``test`` on the two samples, computed by scipy.

    ``ref``/``cur`` are value lists for the numeric tests and ``Counter``s (or value lists)
    for the category tests.
    """
    import numpy as np
    from scipy import stats
    from scipy.spatial import distance

    if test == "ks":
        with warnings.catch_warnings():
            # Extreme shifts defeat scipy's exact method; its asymptotic fallback is what we want.
            warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful", RuntimeWarning)
            result = stats.ks_2samp(_finite(ref), _finite(cur))
        return float(result.statistic), float(result.pvalue)
    if test == "wasserstein":
        r = _finite(ref)
        norm = max(float(np.std(r)), 0.001)  # Evidently's guard against a constant reference
        return float(stats.wasserstein_distance(r, _finite(cur)) / norm), None
    if not isinstance(ref, Counter):
        ref, cur = Counter(map(_label, ref)), Counter(map(_label, cur))
    r_counts, c_counts = _counts(ref, cur)
    if test == "jensenshannon":
        p = np.asarray(r_counts, dtype=float) / sum(r_counts)
        q = np.asarray(c_counts, dtype=float) / sum(c_counts)
        return float(distance.jensenshannon(p, q)), None
    if len(r_counts) < 2:
        return 0.0, 1.0  # one category on both sides: identical distributions
    # Homogeneity of the two count vectors. On a 2x2 table without continuity correction the
    # chi-squared statistic is the square of the two-proportion z statistic: the same test.
    table = np.asarray([r_counts, c_counts])
    chi2 = stats.chi2_contingency(table, correction=False)
    stat = math.sqrt(chi2.statistic) if test == "z" else chi2.statistic
    return float(stat), float(chi2.pvalue)


def drift_check(name: str, reference: Feature, current: Feature, thresholds: Thresholds) -> Check:
    n_ref, n_cur = reference.n_values, current.n_values
    if n_ref < MIN_VALUES or n_cur < MIN_VALUES:
        return Check(
            name,
            DRIFT,
            False,
            f"not tested: needs ≥ {MIN_VALUES} values on each side (baseline {n_ref}, current {n_cur})",
            n_baseline=n_ref,
            n_current=n_cur,
            skipped=True,
        )
    test = select_test(reference, thresholds)
    if test in ("ks", "wasserstein"):
        statistic, p_value = run_test(test, reference.values, current.values)
    else:
        statistic, p_value = run_test(test, _category_counts(reference), _category_counts(current))
    if p_value is not None:
        violated, threshold = p_value < thresholds.p_value, thresholds.p_value
        verdict = f"p-value {p_value:.4g} {'<' if violated else '≥'} {threshold}"
    else:
        violated, threshold = statistic >= thresholds.distance, thresholds.distance
        verdict = f"{statistic:.4g} {'≥' if violated else '<'} {threshold}"
    description = f"{'Drift' if violated else 'No drift'} in {reference.description}: {TEST_NAMES[test]} {verdict}"
    return Check(name, DRIFT, violated, description, test, statistic, p_value, threshold, n_ref, n_cur)


def compare(baseline: Profile, current: Profile, thresholds: Thresholds = Thresholds()) -> list[Check]:
    """Every check for every baseline feature, plus one per field the baseline never saw."""
    checks: list[Check] = []
    for name, ref in baseline.features.items():
        cur = current.features.get(name)
        if cur is None:
            continue  # the current profile is built from the baseline's kinds, so this is a bug guard
        if ref.n_values and not cur.n_values and not cur.n_type_errors and current.n_rows:
            checks.append(
                Check(name, MISSING_COLUMN, True, f"{name} is present in the baseline but in no current record")
            )
            continue
        seen = cur.n_values + cur.n_type_errors
        if seen and cur.n_type_errors / seen > thresholds.type_error_rate:
            checks.append(
                Check(
                    name,
                    DATA_TYPE,
                    True,
                    f"{cur.n_type_errors} of {seen} current values of {name} are not {baseline.kinds[name]}",
                    statistic=cur.n_type_errors / seen,
                    threshold=thresholds.type_error_rate,
                )
            )
        if ref.check_completeness and current.n_rows:
            drop = ref.completeness - cur.completeness
            checks.append(
                Check(
                    name,
                    COMPLETENESS,
                    drop > thresholds.completeness_drop,
                    f"completeness {cur.completeness:.1%} (baseline {ref.completeness:.1%})",
                    statistic=cur.completeness,
                    threshold=ref.completeness - thresholds.completeness_drop,
                )
            )
        checks.append(drift_check(name, ref, cur, thresholds))
    checks.extend(
        Check(name, EXTRA_COLUMN, True, f"{name} appears in current records but not in the baseline")
        for name in current.extra_fields
    )
    return checks
