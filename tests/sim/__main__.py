"""``python -m tests.sim``: run seeds of the delivery-core simulation (``make sim SEEDS=N``)."""

from __future__ import annotations

import argparse
import sys
import time

from tests.sim.history import Op, describe, run, shrink


def parse_ops(text: str) -> list[Op]:
    """``kind:target:seed,...`` as printed by a failing run."""
    ops = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, target, seed = item.split(":")
        ops.append(Op(kind, int(target), int(seed)))
    return ops


def encode(ops: list[Op]) -> str:
    return ",".join(f"{op.kind}:{op.target}:{op.seed}" for op in ops)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__)
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default: 100)")
    parser.add_argument("--start", type=int, default=0, help="first seed (default: 0)")
    parser.add_argument("--seed", type=int, help="run this one seed only (replay)")
    parser.add_argument("--ops", help="replay this exact history (kind:target:seed,...) with --seed")
    parser.add_argument("--no-shrink", action="store_true", help="report failures without shrinking them")
    parser.add_argument("--keep-going", action="store_true", help="run every seed even after a failure")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.ops and args.seed is None:
        parser.error("--ops needs --seed")
    seeds = [args.seed] if args.seed is not None else list(range(args.start, args.start + args.seeds))
    started = time.perf_counter()
    failures = 0
    steps = 0
    for seed in seeds:
        outcome = run(seed, parse_ops(args.ops) if args.ops else None)
        steps += outcome.steps
        if outcome.ok:
            continue
        failures += 1
        if not args.no_shrink:
            outcome = shrink(outcome)
        print(describe(outcome))
        print(f"  replay: python -m tests.sim --seed {seed} --ops '{encode(outcome.ops)}'")
        if not args.keep_going:
            break
    elapsed = time.perf_counter() - started
    print(f"simulation: {len(seeds)} seeds, {steps} steps, {failures} failing, {elapsed:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
