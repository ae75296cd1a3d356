"""docs/mutation.md cannot drift from its notes, and the generator's arithmetic holds.

The report is regenerated only by ``make mutate`` (slow, not in CI), but its explanations live in
``tests/mutation_notes.toml``: an edited note, or a survivor left without one, must show here.
"""

from __future__ import annotations

import random
import subprocess
from collections import Counter

import pytest

from tests import mutation

REPORT_TEXT = mutation.REPORT.read_text()
NOTES = mutation.load_notes()
#: A killed mutant leaves the survivors, and its note goes with it; what stays is one of these.
KINDS = ("equivalent", "survives, accepted")


def test_the_committed_report_is_what_the_generator_writes_from_its_own_rows_and_the_notes() -> None:
    earlier = mutation.previous(REPORT_TEXT)
    results = [earlier[module] for module in mutation.MODULES]
    timings = mutation.reported_timings(REPORT_TEXT)
    assert mutation.render(results, NOTES, timings) == REPORT_TEXT, "run `python -m tests.mutation --report-only`"


def test_every_module_is_measured_and_no_survivor_is_left_unexplained() -> None:
    earlier = mutation.previous(REPORT_TEXT)
    assert set(earlier) == set(mutation.MODULES)
    unexplained = [name for result in earlier.values() for name in result.survivors if name not in NOTES]
    assert unexplained == []
    assert "not yet explained" not in REPORT_TEXT


def test_no_note_is_left_for_a_mutant_that_no_longer_survives() -> None:
    survivors = {name for result in mutation.previous(REPORT_TEXT).values() for name in result.survivors}
    assert sorted(set(NOTES) - survivors) == []


@pytest.mark.parametrize("name", sorted(NOTES))
def test_every_note_names_a_delivery_core_mutant_and_says_what_it_is(name: str) -> None:
    modules = tuple(mutation.dotted(module) + "." for module in mutation.MODULES)
    assert name.startswith(modules), f"{name} is not a mutant of {mutation.MODULES}"
    assert NOTES[name].startswith(KINDS), f"{name}: a note starts with one of {KINDS}"


def test_rows_read_back_as_they_were_written_for_seeded_random_counts() -> None:
    rng = random.Random(21)
    for _ in range(20):
        results = []
        for module in mutation.MODULES:
            result = mutation.ModuleResult(module, as_of=rng.choice(["abc1234", "(unknown)"]))
            for key in ("killed", "timeout", "survived", "no test", "not run"):
                result.counts[key] = rng.randrange(0, 40)
            result.survivors = [f"{mutation.dotted(module)}.x_f__mutmut_{i}" for i in range(result.counts["survived"])]
            results.append(result)
        again = mutation.previous(mutation.render(results, {}, {}))
        for result in results:
            read = again[result.module]
            assert (read.as_of, read.survivors) == (result.as_of, result.survivors)
            assert +read.counts == +result.counts


def row(text: str, module: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| `{module}` |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_score_leaves_equivalent_survivors_out_of_the_denominator() -> None:
    module = "core/buffer.py"
    result = mutation.ModuleResult(module, Counter(killed=7, timeout=1, survived=2), as_of="abc1234")
    result.survivors = [f"{mutation.dotted(module)}.x_f__mutmut_{i}" for i in (1, 2)]
    notes = {result.survivors[0]: "equivalent: never observable", result.survivors[1]: "survives, accepted: ..."}
    cells = row(mutation.render([result], notes, {}), module)
    # 8 caught of 10 generated, one equivalent: 8 / 9.
    assert cells[2:] == ["10", "7", "1", "2", "1", "0", "0", "88.9 %"]
    partial = mutation.ModuleResult(module, Counter(killed=3, survived=1, **{"not run": 6}), as_of="abc1234")
    assert row(mutation.render([partial], {}, {}), module)[-1] == "partial: 75.0 %"


def test_a_module_changed_after_its_run_is_named_for_a_re_run() -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=mutation.ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert not mutation.changed_since("core/spool.py", head.stdout.strip())
    assert mutation.changed_since("core/spool.py", "(unknown)")
    fresh = mutation.ModuleResult("core/spool.py", Counter(killed=1), as_of=head.stdout.strip()[:7])
    stale = mutation.ModuleResult("core/store.py", Counter(killed=1), as_of="(unknown)")
    text = mutation.render([fresh, stale], {}, {})
    assert "Changed since their *as of* commit (re-run them): `core/store.py`." in text
