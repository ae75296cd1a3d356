"""``make mutate``: mutation testing of the delivery core, written up in docs/mutation.md.

Coverage says a line ran; a mutant says whether any test would notice that line being wrong.
mutmut (configured in pyproject.toml, ``[tool.mutmut]``) copies the package to ``mutants/``,
changes one operator, constant or call at a time and runs the tests that reach the changed
function. This script runs it module by module with one worker (the machine is shared), then
writes the table per module and every survivor with its explanation from
``tests/mutation_notes.toml``: why it is equivalent, or why it is accepted.

    python -m tests.mutation                      # every module, then the report
    python -m tests.mutation --modules core/spool.py client.py
    python -m tests.mutation --survivors --modules core/records.py   # after writing tests
    python -m tests.mutation --report-only        # rewrite the report from mutants/*.meta
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "mutation.md"
NOTES = ROOT / "tests" / "mutation_notes.toml"
MODULES = (
    "core/spool.py",
    "core/spool_format.py",
    "core/store.py",
    "core/buffer.py",
    "core/dispatcher.py",
    "core/write_results.py",
    "core/ingest.py",
    "core/records.py",
    "client.py",
    "client_support.py",
)
#: The simulation is the strongest oracle of the core, and the slowest test: fewer seeds here.
SIM_SEEDS = "50"
#: The test files whose tests run against a module's mutants; a module not named here gets the
#: whole ``pytest_add_cli_args_test_selection`` of ``[tool.mutmut]`` (the simulation included).
#: Parsing, ingest and the client are not what the simulation checks, and it would cost them an
#: hour each: their mutants get the fast unit tests written for them. The spool's recovery is
#: checked by its own crash and fault tests; with the simulation its run would take hours.
FAST_TESTS: dict[str, tuple[str, ...]] = {
    "core/spool.py": (
        "tests/unit/core/test_spool.py",
        "tests/unit/core/test_spool_faults.py",
        "tests/unit/core/test_store.py",
        "tests/unit/core/test_store_bookkeeping.py",
        "tests/unit/core/test_dispatcher_faults.py",
    ),
    "core/spool_format.py": (
        "tests/unit/core/test_spool.py",
        "tests/unit/core/test_spool_faults.py",
        "tests/unit/core/test_spool_coverage.py",
    ),
    "core/write_results.py": (
        "tests/unit/core/test_write_results.py",
        "tests/unit/core/test_dispatcher.py",
        "tests/unit/core/test_dispatcher_faults.py",
    ),
    "core/ingest.py": ("tests/unit/core/test_ingest.py", "tests/unit/core/test_store.py"),
    "core/records.py": (
        "tests/unit/core/test_records.py",
        "tests/unit/core/test_records_fast_paths.py",
        "tests/unit/core/test_ingest.py",
    ),
    "client.py": ("tests/unit/client/test_client.py", "tests/unit/client/test_client_transport.py"),
    "client_support.py": (
        "tests/unit/client/test_client_support.py",
        "tests/unit/client/test_client.py",
        "tests/unit/client/test_client_transport.py",
    ),
}

log = logging.getLogger("mutation")

#: mutmut's exit codes (mutmut.stats.status_by_exit_code), folded into the report's columns.
KILLED_CODES = {1, 3}
TIMEOUT_CODES = {36, 24, -24, 152, 255}
SURVIVED_CODES = {0}
NO_TEST_CODES = {5, 33}


@dataclass
class ModuleResult:
    module: str
    counts: Counter[str] = field(default_factory=Counter)
    survivors: list[str] = field(default_factory=list)
    #: Mutants without a verdict: never run, reset by mutmut because their function changed, or
    #: without a test when they last ran (tests may reach them now).
    unrun: list[str] = field(default_factory=list)
    seconds: float | None = None
    #: The commit of the code measured ("(unknown)" when not recorded).
    as_of: str = "(unknown)"

    @property
    def generated(self) -> int:
        return sum(self.counts.values())


def status(code: int | None) -> str:
    if code is None:
        return "not run"
    if code in KILLED_CODES:
        return "killed"
    if code in TIMEOUT_CODES:
        return "timeout"
    if code in SURVIVED_CODES:
        return "survived"
    if code in NO_TEST_CODES:
        return "no test"
    return "other"  # segfault, suspicious, type check


def dotted(module: str) -> str:
    return "capture_ext." + module.removesuffix(".py").replace("/", ".")


#: Per module, the commit whose code its mutants were made from (modules are run at different times).
SOURCE_NOTE = ROOT / "mutants" / "source-commits.json"


def source_commit() -> str:
    """The last commit that changed ``capture_ext``: the code being mutated (the report is only true of it).

    Not ``HEAD``: commits that only add tests or notes do not change what was mutated, and a branch
    rebased after its run keeps a commit that is on main.
    """
    head = subprocess.run(
        ["git", "log", "-1", "--format=%h", "HEAD", "--", "capture_ext"], cwd=ROOT, capture_output=True, text=True
    )
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "capture_ext"], cwd=ROOT).returncode
    return head.stdout.strip() + (" with uncommitted changes" if dirty else "")


def selection() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return [str(path) for path in config["pytest_add_cli_args_test_selection"]]


SIMULATION = "tests/unit/core/test_simulation.py"


def deselected(module: str, survivors_only: bool = False) -> list[str]:
    """The files of the whole selection that do not run against ``module``'s mutants.

    Deselected through ``PYTEST_ADDOPTS`` rather than by changing ``[tool.mutmut]``: a change
    there makes mutmut forget every module's results. A re-run of survivors leaves out the
    simulation too: its seeded histories already ran against them and let them live.
    """
    allowed = FAST_TESTS.get(module)
    skipped = [] if allowed is None else [path for path in selection() if path not in allowed]
    if survivors_only and SIMULATION not in skipped:
        skipped.append(SIMULATION)
    return skipped


def run_module(
    module: str, timeout_s: float | None, names: list[str] | None = None, survivors_only: bool = False
) -> float | None:
    """Run ``module``'s mutants (or ``names``); its wall time, or None when stopped by ``timeout_s``."""
    SOURCE_NOTE.parent.mkdir(exist_ok=True)
    measured = json.loads(SOURCE_NOTE.read_text()) if SOURCE_NOTE.exists() else {}
    measured[module] = source_commit()
    SOURCE_NOTE.write_text(json.dumps(measured))
    skipped = " ".join(f"--deselect {path}" for path in deselected(module, survivors_only))
    env = {**os.environ, "CAPTURE_SIM_SEEDS": SIM_SEEDS, "PYTEST_ADDOPTS": skipped}
    targets = names if names is not None else [dotted(module) + ".*"]
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", "1", *targets]
    log.info(
        "mutating %s: %s (PYTEST_ADDOPTS=%r)", module, " ".join([*command[:6], f"{len(targets)} target(s)"]), skipped
    )
    started = time.monotonic()
    try:
        subprocess.run(command, cwd=ROOT, env=env, check=False, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("%s: stopped after %.0f s; its unrun mutants are reported as not run", module, timeout_s)
        return None  # not the wall time of a full run
    return time.monotonic() - started


def collect(module: str) -> ModuleResult:
    result = ModuleResult(module, as_of=measured_on().get(module, "(unknown)"))
    meta = ROOT / "mutants" / "capture_ext" / (module + ".meta")
    if not meta.exists():
        return result
    data = json.loads(meta.read_text())
    for name, code in sorted(data.get("exit_code_by_key", {}).items()):
        state = status(code)
        result.counts[state] += 1
        if state == "survived":
            result.survivors.append(name)
        elif state in ("not run", "no test"):
            result.unrun.append(name)
    return result


TIMINGS = ROOT / "mutants" / "wall-times.json"


WALL_TIMES = "Wall time of the last full run of each module, one worker: "


def reported_timings(report: str) -> dict[str, float]:
    """The wall times a report lists."""
    known: dict[str, float] = {}
    for line in report.splitlines():
        if line.startswith(WALL_TIMES):
            for part in line.removeprefix(WALL_TIMES).rstrip(".").split(", "):
                module, seconds = part.rsplit(" ", 2)[:2]
                known[module.strip("`")] = float(seconds)
    return known


def remember(timings: dict[str, float], report: str = "") -> dict[str, float]:
    """Wall times of the last full run of every module, this run's included, in module order.

    Those of modules this ``mutants/`` never ran come from the last report.
    """
    known = reported_timings(report)
    known.update(json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {})
    known.update(timings)
    if timings:
        TIMINGS.write_text(json.dumps(known))
    return {module: known[module] for module in MODULES if module in known}


def load_notes() -> dict[str, str]:
    if not NOTES.exists():
        return {}
    return {str(k): str(v) for k, v in tomllib.loads(NOTES.read_text()).get("survivors", {}).items()}


def measured_on() -> dict[str, str]:
    return {str(k): str(v) for k, v in json.loads(SOURCE_NOTE.read_text()).items()} if SOURCE_NOTE.exists() else {}


COLUMNS = ("generated", "killed", "timed out", "survived", "equivalent", "no test", "not run")


def previous(text: str) -> dict[str, ModuleResult]:
    """The rows (and survivors) of an earlier report, for modules this ``mutants/`` has not run.

    A run of some modules must not erase what the others measured; their rows are kept with the
    commit they were measured on (reports before the per-module column give one commit for all).
    """
    shared = "(unknown)"
    results: dict[str, ModuleResult] = {}
    names: list[str] = []
    for line in text.splitlines():
        if line.startswith("Measured on `capture_ext` as of commit "):
            shared = line.removeprefix("Measured on `capture_ext` as of commit ").split(";")[0]
        elif line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            module = cells[0].strip("`")
            as_of = cells[1].strip("`") if len(cells) == len(COLUMNS) + 3 else shared
            numbers = cells[-1 - len(COLUMNS) : -1]
            result = ModuleResult(module, as_of=as_of)
            for column, value in zip(COLUMNS, numbers, strict=True):
                key = {"timed out": "timeout"}.get(column, column)
                if key not in ("generated", "equivalent"):  # both follow from the rest
                    result.counts[key] = int(value)
            results[module] = result
        elif line.startswith("- `capture_ext."):
            names.append(line.split("`")[1])
    for module, result in results.items():
        result.survivors = [name for name in names if name.startswith(dotted(module) + ".")]
    return results


def changed_since(module: str, commit: str) -> bool:
    """Whether ``module``'s source differs from ``commit``'s (an unknown commit counts as changed)."""
    revision = commit.split()[0] if commit and commit[0] != "(" else ""
    if not revision:
        return True
    path = f"capture_ext/{module}"
    return subprocess.run(["git", "diff", "--quiet", revision, "--", path], cwd=ROOT).returncode != 0


def render(results: list[ModuleResult], notes: dict[str, str], timings: dict[str, float]) -> str:
    lines = [
        "# Mutation testing of the delivery core",
        "",
        "Generated by `make mutate` (`python -m tests.mutation`, mutmut configured in `pyproject.toml`);",
        "do not edit by hand: explanations of survivors live in `tests/mutation_notes.toml`.",
        "",
        "Each mutant changes one thing in one function (an operator, a constant, a call argument) and",
        "runs the unit tests that reach that function, among the test files listed for its module below",
        f"(the simulation, `tests/unit/core/test_simulation.py`, runs at `CAPTURE_SIM_SEEDS={SIM_SEEDS}`).",
        "*Score* is killed (or timed out) over generated minus the survivors explained as equivalent.",
        "Goal: at least 85 % per module.",
        "",
        "*As of* is the commit whose `capture_ext` a module's mutants were made from (modules are run at",
        "different times); its mutant names follow that code.",
        "",
        "| module | as of | generated | killed | timed out | survived | equivalent | no test | not run | score |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        c = r.counts
        equivalent = sum(1 for name in r.survivors if notes.get(name, "").startswith("equivalent"))
        measured = r.generated - c["not run"]
        caught = c["killed"] + c["timeout"]
        denominator = measured - equivalent
        if c["not run"] == r.generated:
            score = "not measured"
        elif c["not run"]:
            score = f"partial: {100 * caught / max(denominator, 1):.1f} %"
        else:
            score = f"{100 * caught / max(denominator, 1):.1f} %"
        lines.append(
            f"| `{r.module}` | `{r.as_of}` | {r.generated} | {c['killed']} | {c['timeout']} | {c['survived']}"
            f" | {equivalent} | {c['no test']} | {c['not run']} | {score} |"
        )
    stale = [r.module for r in results if r.generated and changed_since(r.module, r.as_of)]
    if stale:
        lines += ["", "Changed since their *as of* commit (re-run them): " + ", ".join(f"`{m}`" for m in stale) + "."]
    else:
        lines += ["", "Every module's source is as it was at its *as of* commit."]
    unmeasured = [r.module for r in results if r.generated == 0 or r.counts["not run"] == r.generated]
    if unmeasured:
        lines += ["", "Not yet measured: " + ", ".join(f"`{m}`" for m in unmeasured) + "."]
    if timings:
        spent = ", ".join(f"`{m}` {s:.0f} s" for m, s in timings.items())
        lines += ["", f"{WALL_TIMES}{spent}."]
    lines += ["", "Tests run against each module's mutants:", ""]
    for r in results:
        files = FAST_TESTS.get(r.module)
        listed = (
            "the whole selection of `[tool.mutmut]`, the simulation included"
            if files is None
            else ", ".join(f"`{Path(f).name}`" for f in files)
        )
        lines.append(f"- `{r.module}`: {listed}.")
    lines += ["", "## Survivors", ""]
    any_survivor = False
    for r in results:
        for name in r.survivors:
            any_survivor = True
            note = notes.get(name, "**not yet explained**")
            lines.append(f"- `{name}`: {note}")
    if not any_survivor:
        lines.append("None.")
    lines += [
        "",
        "`mutmut show <name>` prints a mutant's diff (after `make mutate`, which leaves `mutants/`).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="*", default=list(MODULES), choices=MODULES, metavar="MODULE")
    parser.add_argument("--report-only", action="store_true", help="only rewrite docs/mutation.md")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per module")
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="run only the last run's survivors and the mutants without a result (after writing tests, or after"
        " a change to some functions of the module)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    timings: dict[str, float] = {}
    if not args.report_only:
        for module in args.modules:
            if args.survivors:
                last = collect(module)
                if last.survivors:
                    run_module(module, args.timeout, last.survivors, survivors_only=True)
                if last.unrun:
                    run_module(module, args.timeout, last.unrun)
            else:
                seconds = run_module(module, args.timeout)
                if seconds is not None:
                    timings[module] = seconds
    report = REPORT.read_text() if REPORT.exists() else ""
    earlier = previous(report)
    results = []
    for module in MODULES:
        result = collect(module)
        if result.counts["not run"] == result.generated and module in earlier:
            result = earlier[module]  # not run in this mutants/: the last report's row stands
        results.append(result)
    REPORT.write_text(render(results, load_notes(), remember(timings, report)))
    log.info("wrote %s", REPORT.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
