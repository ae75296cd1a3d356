"""``capture-ext report``: drift report over captured data, locally or as a SageMaker Processing job.

Exit codes (so a pipeline can gate on them):
  0  report written, no violations
  1  report written, drift detected (at least one baseline_drift_check violated)
  2  bad command line (argparse): bad option, date or duration, empty window, conflicting baselines
  3  no report: the data or the baseline could not be read, or the window holds no records
  4  report written, no drift but data-quality violations (missing/extra field, completeness, type)
With ``--exit-zero`` a written report always exits 0 (gate on violations.json instead).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
from datetime import UTC, datetime
from typing import Any

from capture_ext.argparsing import OneLineParser
from capture_ext.report.baseline import BaselineError, read_statistics
from capture_ext.report.descriptors import Profile
from capture_ext.report.drift import DRIFT, Check, Thresholds, compare
from capture_ext.report.engine import ENGINES, DataSource, Engine, open_engine
from capture_ext.report.outputs import Findings, prepare_out, publish, stage_dir, write_html, write_json
from capture_ext.report.source import SourceError, Window, parse_duration, parse_time

EXIT_OK, EXIT_DRIFT, EXIT_USAGE, EXIT_NO_DATA, EXIT_QUALITY = 0, 1, 2, 3, 4
log = logging.getLogger("capture_ext.report")


def _arg(parse: Any) -> Any:
    """Wrap a parser so argparse shows its message ("not an ISO 8601 date …"), not its name."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return convert


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="capture-ext report",
        description="Profile captured inference records for a time window, test them for drift "
        "against a baseline and write report.html, violations.json and statistics.json.",
        epilog="Exit codes: 0 no violations, 1 drift, 2 usage, 3 no data / unreadable input, "
        "4 data-quality violations only. See docs/report.md.",
    )
    src = p.add_argument_group("current data")
    src.add_argument(
        "--data",
        required=True,
        help="capture prefix: s3://bucket/prefix or a local folder (holding jsonl/ and/or parquet/, or one of them)",
    )
    src.add_argument("--format", choices=("auto", "jsonl", "parquet", "sagemaker"), default="auto")
    src.add_argument("--function", help="only this function (the function= partition)")
    src.add_argument("--start", type=_arg(parse_time), help="window start, ISO 8601 (UTC if no offset)")
    src.add_argument("--end", type=_arg(parse_time), help="window end (exclusive); default: now when --last is used")
    src.add_argument("--last", type=_arg(parse_duration), help="window length ending at --end, e.g. 1h, 24h, 7d")
    eng = p.add_argument_group("engine (see docs/report.md: which one when)")
    eng.add_argument(
        "--engine",
        choices=ENGINES,
        default="duckdb",
        help="duckdb: SQL on this machine in bounded memory; athena: SQL on Athena over the Glue tables; "
        "python: every record in memory (small data)",
    )
    eng.add_argument("--memory-limit", default="512MB", help="duckdb: memory limit before spilling to disk")
    eng.add_argument("--threads", type=_arg(_positive_int), help="duckdb: worker threads (default: all cores)")
    eng.add_argument("--workgroup", help="athena: workgroup (its result location is used)")
    eng.add_argument("--database", help="athena: Glue database holding the capture tables")
    eng.add_argument(
        "--athena-output", metavar="S3_URI", help="athena: query result location, if the workgroup has none"
    )
    base = p.add_argument_group("baseline (default: the older half of the current window's records)")
    base.add_argument("--baseline", metavar="STATISTICS_JSON", help="statistics.json from an earlier report")
    base.add_argument("--baseline-data", metavar="URI", help="another capture prefix (default: --data)")
    base.add_argument("--baseline-format", choices=("auto", "jsonl", "parquet", "sagemaker"), default="auto")
    base.add_argument("--baseline-start", type=_arg(parse_time))
    base.add_argument("--baseline-end", type=_arg(parse_time))
    tests = p.add_argument_group("tests")
    tests.add_argument(
        "--p-value", type=_arg(_probability), default=Thresholds.p_value, help="KS / chi-squared / z; in (0, 1)"
    )
    tests.add_argument(
        "--distance", type=_arg(_distance), default=Thresholds.distance, help="Wasserstein / JS; a number > 0"
    )
    tests.add_argument(
        "--small-sample",
        type=_arg(_count),
        default=Thresholds.small_sample,
        help="reference size up to which hypothesis tests are used instead of distances",
    )
    out = p.add_argument_group("output")
    out.add_argument("--out", default="capture-report", help="output folder (created)")
    out.add_argument(
        "--exit-message",
        metavar="FILE",
        help="also write the one-line verdict here (SageMaker Processing shows /opt/ml/output/message "
        "as the job's ExitMessage)",
    )
    out.add_argument(
        "--no-html",
        action="store_true",
        help="only violations.json and statistics.json: a faster pipeline gate, no plots",
    )
    out.add_argument("--exit-zero", action="store_true", help="exit 0 whenever the report was written")
    out.add_argument("--quiet", "-q", action="store_true", help="no progress bar, warnings only")
    out.add_argument("--verbose", "-v", action="store_true")
    return p


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def _probability(text: str) -> float:
    value = _number(text)
    if not 0 < value < 1:
        raise ValueError(f"a p-value threshold is between 0 and 1 (exclusive), not {text}")
    return value


def _distance(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise ValueError(f"a distance threshold is a number above 0, not {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise ValueError(f"a sample size is 0 or more, not {text}")
    return value


def _positive_int(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise ValueError(f"must be 1 or more, not {text}")
    return value


def _window(start: datetime | None, end: datetime | None, last: Any) -> Window:
    if last is not None:
        end = end or datetime.now(UTC)
        if start is not None:
            raise ValueError("give either --start or --last, not both")
        try:
            start = end - last
        except OverflowError:
            raise ValueError(f"--last {last} reaches before year 1") from None
    if start and end and start >= end:
        raise ValueError(f"window start {start:%Y-%m-%dT%H:%M:%SZ} is not before its end {end:%Y-%m-%dT%H:%M:%SZ}")
    return Window(start, end)


def _check_options(args: argparse.Namespace) -> Window:
    """The current window, after the checks argparse cannot express; ValueError names the problem."""
    window = _window(args.start, args.end, args.last)
    _window(args.baseline_start, args.baseline_end, None)
    baseline_window = args.baseline_start is not None or args.baseline_end is not None
    if args.baseline and (args.baseline_data or baseline_window):
        raise ValueError("give either --baseline (a statistics file) or a baseline window/--baseline-data, not both")
    return window


def _engine(args: argparse.Namespace, uri: str, fmt: str) -> Engine:
    return open_engine(
        args.engine,
        DataSource(uri, fmt, args.function),
        quiet=args.quiet,
        memory_limit=args.memory_limit,
        threads=args.threads,
        workgroup=args.workgroup,
        database=args.database,
        athena_output=args.athena_output,
    )


def _load(args: argparse.Namespace, window: Window) -> tuple[Profile, Profile, str, str]:
    """(baseline profile, current profile, current window text, baseline description)."""
    baseline_window = args.baseline_start is not None or args.baseline_end is not None
    engine = _engine(args, args.data, args.format)
    try:
        if args.baseline:
            baseline, description = read_statistics(args.baseline)
        elif args.baseline_data or baseline_window:
            uri = args.baseline_data or args.data
            bwin = _window(args.baseline_start, args.baseline_end, None)
            base_engine = engine if uri == args.data and args.baseline_format == args.format else None
            base_engine = base_engine or _engine(args, uri, args.baseline_format)
            try:
                baseline = base_engine.profile(bwin, "baseline")
            finally:
                if base_engine is not engine:
                    base_engine.close()
            if not baseline.n_rows:
                raise SourceError(f"no baseline records in {bwin.describe()} under {uri}")
            description = f"{uri} · {bwin.describe()}"
        else:
            engine.scope = window
            n, split_at = engine.split_time(window)
            if not n:
                raise SourceError(f"no records captured in {window.describe()} under {args.data}")
            if split_at is None:
                raise SourceError("only one record in the window: give a --baseline or a baseline window")
            baseline = engine.profile(Window(window.start, split_at), "baseline")
            window = Window(split_at, window.end)
            description = f"older half of the window (before {split_at:%Y-%m-%dT%H:%M:%S}Z)"
        current = engine.profile(window, "current", kinds=baseline.kinds, qa=baseline.qa)
        if not current.n_rows:
            raise SourceError(f"no records captured in {window.describe()} under {args.data}")
    finally:
        engine.close()
    return baseline, current, window.describe(), description


def exit_code(checks: list[Check]) -> int:
    if any(c.violated and c.check_type == DRIFT for c in checks):
        return EXIT_DRIFT
    return EXIT_QUALITY if any(c.violated for c in checks) else EXIT_OK


def _fail(args: argparse.Namespace, message: str) -> int:
    """One line on stderr (and in --exit-message): never a traceback, never a drift code."""
    message = " ".join(message.split())[:2000]
    print(f"capture-ext report: error: {message}", file=sys.stderr)
    if args.exit_message:
        try:
            with open(args.exit_message, "w", encoding="utf-8") as handle:
                handle.write(f"error: {message}"[:1000] + "\n")
        except OSError as exc:
            print(f"capture-ext report: cannot write --exit-message: {exc}", file=sys.stderr)
    return EXIT_NO_DATA


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        window = _check_options(args)
        prepare_out(args.out)
    except ValueError as exc:
        parser.error(str(exc))  # exits 2, like every other command-line mistake
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    log.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    try:
        return _report(args, window)
    except (SourceError, BaselineError, ValueError) as exc:
        log.debug("no report", exc_info=True)
        return _fail(args, str(exc))
    except Exception as exc:  # a bug must read as "no report", not as drift
        log.debug("report failed", exc_info=True)
        return _fail(args, f"internal error, no report written ({type(exc).__name__}: {exc}); run with -v for details")
    finally:
        if getattr(args, "stage", None):
            shutil.rmtree(args.stage, ignore_errors=True)


def _report(args: argparse.Namespace, window: Window) -> int:
    baseline, current, window_text, baseline_source = _load(args, window)
    thresholds = Thresholds(args.p_value, args.distance, args.small_sample)
    checks = compare(baseline, current, thresholds)
    code = exit_code(checks)
    found = Findings(args.data, window_text, baseline_source, baseline, current, checks, thresholds, code)
    try:
        args.stage = stage_dir(args.out)
    except OSError as exc:
        raise SourceError(f"cannot write the report to {args.out}: {exc.strerror or exc}") from exc
    if not args.no_html:
        write_html(found, args.stage)
    write_json(found, args.stage)
    out = os.path.abspath(args.out)
    try:
        publish(args.stage, out)
    except OSError as exc:
        raise SourceError(f"cannot write the report to {args.out}: {exc}") from exc
    report = None if args.no_html else os.path.join(out, "report.html")
    violations = os.path.join(out, "violations.json")
    drifted = sorted({c.feature for c in checks if c.violated and c.check_type == DRIFT})
    other = sum(c.violated and c.check_type != DRIFT for c in checks)
    verdict = f"drift in {', '.join(drifted)}" if drifted else "no drift"
    summary = f"{verdict}; {other} data-quality violation(s); {current.n_rows} records vs {baseline.n_rows} baseline"
    print(summary)
    if report:
        print(f"report: {report}")
    print(f"violations: {violations} (exit {code})")
    if args.exit_message:
        try:
            with open(args.exit_message, "w", encoding="utf-8") as handle:
                handle.write(f"{summary} (exit {code})\n")
        except OSError as exc:
            log.warning("cannot write --exit-message %s: %s", args.exit_message, exc)
    return EXIT_OK if args.exit_zero else code
