"""Benchmark 2: inference latency seen by the caller, with and without capture, through the emulator.

Three local Lambdas run side by side: ``bench.handlers.plain`` with no extension, the same with a
do-nothing extension (what having any extension costs in this emulator), and
``inference_fn.app.handler`` (which captures every answer) with the real capture-ext extension.
All load DistilBERT's full-size architecture (random weights), answer a ~60-token prompt on one
thread, and are invoked in turn, invoke by invoke, so that machine noise hits them alike. Latency is
the emulator's ``duration_ms``: from the invoke to the runtime's response (what the caller waits
for; the extension's post-runtime work is benchmark 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from typing import Any

from bench._emulated import emulator, model_dir, qa_event
from bench._harness import Result, Sample, fmt_ms, percentile

NAME = "inference"


CONFIGS = {
    "without capture (no extension)": ("bench.handlers.plain", None),
    "without capture, do-nothing extension": ("bench.handlers.plain", "noop"),
    "with capture (client + capture-ext)": ("inference_fn.app.handler", "capture-ext"),
}
PLAIN, NOOP, CAPTURE = CONFIGS


async def _measure(quick: bool) -> dict[str, Sample]:
    env = {"MODEL_DIR": str(model_dir(full_size=not quick))}
    rounds, per_round, warmup = (2, 4, 2) if quick else (6, 40, 10)
    event = qa_event(60)
    samples = {name: Sample() for name in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="capture-bench-") as tmp:
        emus = {name: emulator(handler, env, ext, tmp) for name, (handler, ext) in CONFIGS.items()}
        async with contextlib.AsyncExitStack() as stack:
            for emu in emus.values():
                await stack.enter_async_context(emu)
                await emu.init()
            for _ in range(warmup):
                for emu in emus.values():
                    await _invoke(emu, event)
            names = list(CONFIGS)
            for _ in range(rounds):
                # Interleaved invoke by invoke, the order rotating, so that a burst of load from
                # other processes lands on every configuration alike.
                block: dict[str, list[float]] = {name: [] for name in names}
                for i in range(per_round):
                    for name in names[i % 3 :] + names[: i % 3]:
                        block[name].append(await _invoke(emus[name], event))
                for name, values in block.items():
                    samples[name].add_round(values)
    return samples


async def _invoke(emu: Any, event: dict[str, str]) -> float:
    result = await emu.invoke(event)
    if not result.ok:
        raise RuntimeError(f"invoke failed: {result.payload}")
    return float(result.duration_ms)


def _ratios(samples: dict[str, Sample], over: str, q: float) -> tuple[float, float, float]:
    """Pooled ratio of percentile ``q`` (capture over ``over``), and its range over rounds."""
    per_round = [
        Sample([a]).p(q) / Sample([b]).p(q) for a, b in zip(samples[CAPTURE].rounds, samples[over].rounds, strict=True)
    ]
    return samples[CAPTURE].p(q) / samples[over].p(q), min(per_round), max(per_round)


def _paired_diffs(samples: dict[str, Sample], over: str) -> list[float]:
    return [
        c - o
        for cr, orr in zip(samples[CAPTURE].rounds, samples[over].rounds, strict=True)
        for c, o in zip(cr, orr, strict=True)
    ]


def run(quick: bool) -> Result:
    result = Result(NAME, "2. Inference latency with and without capture")
    samples = asyncio.run(_measure(quick))
    rows = []
    for name, sample in samples.items():
        s = sample.summary()
        rows.append([name, fmt_ms(s["p50"]), fmt_ms(s["p99"]), fmt_ms(s["mean"]), s["n"]])
    arch = "tiny test model (quick mode)" if quick else "DistilBERT full-size architecture, random weights"
    result.table(
        f"{arch}, ~60 tokens, OMP_NUM_THREADS=1; emulator duration_ms (invoke → response)",
        ["function", "p50", "p99", "mean", "invokes"],
        rows,
    )
    rows = []
    for over, label in ((PLAIN, "with capture / no extension"), (NOOP, "with capture / do-nothing extension")):
        for q in (50, 99):
            pooled, lo, hi = _ratios(samples, over, q)
            rows.append([label, f"p{q}", f"{pooled:.3f}", f"{lo:.3f} – {hi:.3f}"])
    result.table(
        "Ratios; spread = lowest–highest ratio over rounds (each round: interleaved invokes)",
        ["ratio", "percentile", "pooled", "per-round spread"],
        rows,
    )
    rows = []
    for over in (PLAIN, NOOP):
        diffs = _paired_diffs(samples, over)
        lo, mid, hi = (percentile(diffs, q) for q in (25, 50, 75))
        base = samples[over].p(50)
        rows.append([f"with capture − {over}", f"{mid:+.2f} ms ({mid / base:+.1%})", f"{lo:+.2f} – {hi:+.2f} ms"])
    result.table(
        "Paired differences: each invoke with capture minus its neighbour invoke of the other function "
        "(same moment, same load); median and interquartile range",
        ["difference", "median", "IQR"],
        rows,
    )
    r50, r99 = _ratios(samples, PLAIN, 50)[0], _ratios(samples, PLAIN, 99)[0]
    n50 = _ratios(samples, NOOP, 50)[0]
    result.goal("inference p50 with/without capture", f"{r50:.3f}", "≤ 1.01", r50 <= 1.01)
    result.goal("inference p99 with/without capture", f"{r99:.3f}", "≤ 1.01", r99 <= 1.01)
    result.goal("  … p50 against a do-nothing extension", f"{n50:.3f}", "≤ 1.01", n50 <= 1.01)
    diff = percentile(_paired_diffs(samples, PLAIN), 50)
    result.goal("  … median paired difference (capture − no extension)", f"{diff:+.2f} ms")
    result.series["inference"] = {name: s.summary() for name, s in samples.items()}
    return result


def main(argv: list[str] | None = None) -> int:
    from bench._harness import cli

    return cli(NAME, "Inference latency with and without capture (emulator).", run, argv)


if __name__ == "__main__":
    sys.exit(main())
