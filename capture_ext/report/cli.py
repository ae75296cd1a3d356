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
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from capture_ext.report.baseline import BaselineError, read_statistics, write_statistics
from capture_ext.report.descriptors import Profile, build_profile
from capture_ext.report.drift import DRIFT, Check, Thresholds, compare
from capture_ext.report.source import SourceError, Window, parse_duration, parse_time, read_records

EXIT_OK, EXIT_DRIFT, EXIT_USAGE, EXIT_NO_DATA, EXIT_QUALITY = 0, 1, 2, 3, 4
PLOTS_DIR = "plots"
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
    p = argparse.ArgumentParser(
        prog="capture-ext report",
        description="Profile captured inference records for a time window, test them for drift "
        "against a baseline and write report.html, violations.json and statistics.json.",
        epilog="Exit codes: 0 no violations, 1 drift, 2 usage, 3 no data / unreadable input, "
        "4 data-quality violations only. See docs/report.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    base = p.add_argument_group("baseline (default: the older half of the current window's records)")
    base.add_argument("--baseline", metavar="STATISTICS_JSON", help="statistics.json from an earlier report")
    base.add_argument("--baseline-data", metavar="URI", help="another capture prefix (default: --data)")
    base.add_argument("--baseline-format", choices=("auto", "jsonl", "parquet", "sagemaker"), default="auto")
    base.add_argument("--baseline-start", type=_arg(parse_time))
    base.add_argument("--baseline-end", type=_arg(parse_time))
    tests = p.add_argument_group("tests")
    tests.add_argument("--p-value", type=float, default=Thresholds.p_value, help="KS / chi-squared / z")
    tests.add_argument("--distance", type=float, default=Thresholds.distance, help="Wasserstein / JS")
    tests.add_argument(
        "--small-sample",
        type=int,
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


def _window(start: datetime | None, end: datetime | None, last: Any) -> Window:
    if last is not None:
        end = end or datetime.now(UTC)
        if start is not None:
            raise ValueError("give either --start or --last, not both")
        start = end - last
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


def _load(args: argparse.Namespace, window: Window) -> tuple[Profile, Profile, str, str]:
    """(baseline profile, current profile, current window text, baseline description)."""
    baseline_window = args.baseline_start is not None or args.baseline_end is not None
    records = read_records(
        args.data, window, fmt=args.format, function=args.function, quiet=args.quiet, label="current"
    )
    if not records:
        raise SourceError(f"no records captured in {window.describe()} under {args.data}")
    if args.baseline:
        baseline, description = read_statistics(args.baseline)
    elif args.baseline_data or baseline_window:
        uri = args.baseline_data or args.data
        bwin = _window(args.baseline_start, args.baseline_end, None)
        base_records = read_records(
            uri, bwin, fmt=args.baseline_format, function=args.function, quiet=args.quiet, label="baseline"
        )
        if not base_records:
            raise SourceError(f"no baseline records in {bwin.describe()} under {uri}")
        description = f"{uri} · {bwin.describe()}"
        baseline = build_profile(base_records, "baseline")
    else:
        if len(records) < 2:
            raise SourceError("only one record in the window: give a --baseline or a baseline window")
        half = len(records) // 2
        base_records, records = records[:half], records[half:]
        split_at = records[0]["_ts"]
        description = f"older half of the window (before {split_at:%Y-%m-%dT%H:%M:%S}Z)"
        window = Window(split_at, window.end)
        baseline = build_profile(base_records, "baseline")
    current = build_profile(records, "current", kinds=baseline.kinds, qa=baseline.qa)
    return baseline, current, window.describe(), description


def exit_code(checks: list[Check]) -> int:
    if any(c.violated and c.check_type == DRIFT for c in checks):
        return EXIT_DRIFT
    return EXIT_QUALITY if any(c.violated for c in checks) else EXIT_OK


def write_html(
    args: argparse.Namespace,
    baseline: Profile,
    current: Profile,
    checks: list[Check],
    window: str,
    baseline_source: str,
    code: int,
) -> str:
    """Render the plots (as files and embedded) and report.html; return the report's path."""
    from capture_ext.report import html, plots

    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, PLOTS_DIR), exist_ok=True)
    verdicts = {c.feature: c for c in checks if c.check_type == DRIFT}
    order = sorted(current.features, key=lambda n: (not (n in verdicts and verdicts[n].violated), n))
    distributions = []
    for name in order:
        check = verdicts.get(name)
        verdict = "drift" if check and check.violated else "not tested" if not check or check.skipped else "no drift"
        distributions.append(plots.distribution(name, baseline.features.get(name), current.features[name], verdict))
    series = [plots.volume(current)] if current.timestamps else []
    over_time = plots.descriptors_over_time(current, baseline)
    series += [over_time] if over_time else []
    for plot in (*series, *distributions):
        with open(os.path.join(out, PLOTS_DIR, plot.filename), "wb") as handle:
            handle.write(plot.png)
    thresholds = Thresholds(args.p_value, args.distance, args.small_sample)
    ctx = html.Context(args.data, window, baseline_source, thresholds, code)
    page = html.render(ctx, baseline, current, checks, series, distributions, PLOTS_DIR)
    report = os.path.join(out, "report.html")
    with open(report, "w", encoding="utf-8") as handle:
        handle.write(page)
    return report


def write_json(
    args: argparse.Namespace,
    baseline: Profile,
    current: Profile,
    checks: list[Check],
    window: str,
    baseline_source: str,
    code: int,
) -> str:
    """Write violations.json and statistics.json; return the path of violations.json."""
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    violations = {
        "violations": [c.as_json() for c in checks if c.violated],
        "drift_detected": code == EXIT_DRIFT,
        "exit_code": code,
        "data": args.data,
        "window": window,
        "baseline": baseline_source,
        "num_records": {"baseline": baseline.n_rows, "current": current.n_rows},
        "checks": [c.as_json() | {"violated": c.violated, "skipped": c.skipped} for c in checks],
    }
    path = os.path.join(out, "violations.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(violations, handle, indent=1, ensure_ascii=False)
        handle.write("\n")
    write_statistics(os.path.join(out, "statistics.json"), current, window, args.data)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        window = _check_options(args)
    except ValueError as exc:
        parser.error(str(exc))  # exits 2, like every other command-line mistake
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    log.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    try:
        baseline, current, window_text, baseline_source = _load(args, window)
    except (SourceError, BaselineError, ValueError) as exc:
        print(f"capture-ext report: error: {exc}", file=sys.stderr)
        if args.exit_message:
            with open(args.exit_message, "w", encoding="utf-8") as handle:
                handle.write(f"error: {exc}"[:1000] + "\n")
        return EXIT_NO_DATA
    thresholds = Thresholds(args.p_value, args.distance, args.small_sample)
    checks = compare(baseline, current, thresholds)
    code = exit_code(checks)
    outputs = (args, baseline, current, checks, window_text, baseline_source, code)
    violations = write_json(*outputs)
    report = None if args.no_html else write_html(*outputs)
    drifted = sorted({c.feature for c in checks if c.violated and c.check_type == DRIFT})
    other = sum(c.violated and c.check_type != DRIFT for c in checks)
    verdict = f"drift in {', '.join(drifted)}" if drifted else "no drift"
    summary = f"{verdict}; {other} data-quality violation(s); {current.n_rows} records vs {baseline.n_rows} baseline"
    print(summary)
    if report:
        print(f"report: {report}")
    print(f"violations: {violations} (exit {code})")
    if args.exit_message:
        with open(args.exit_message, "w", encoding="utf-8") as handle:
            handle.write(f"{summary} (exit {code})\n")
    return EXIT_OK if args.exit_zero else code
