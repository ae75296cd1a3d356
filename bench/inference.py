"""Benchmark 2: inference latency seen by the caller, with and without capture, through the emulator.

Two local Lambdas run side by side: one with ``bench.handlers.plain`` and no extension, one with
``inference_fn.app.handler`` (which captures every answer) and the real capture-ext extension.
Both load DistilBERT's full-size architecture (random weights), answer a ~60-token prompt on one
thread, and are invoked in alternating blocks so that machine noise hits both alike. Latency is
the emulator's ``duration_ms``: from the invoke to the runtime's response (what the caller waits
for; the extension's post-runtime work is benchmark 3).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile

from bench._emulated import emulator, model_dir, qa_event
from bench._harness import Result, Sample, fmt_ms

NAME = "inference"


async def _measure(quick: bool) -> tuple[Sample, Sample, list[float], list[float], bool]:
    full = not quick
    model = str(model_dir(full))
    env = {"MODEL_DIR": model}
    rounds, per_block, warmup = (2, 4, 2) if quick else (6, 40, 10)
    event = qa_event(60)
    plain, captured = Sample(), Sample()
    p50_ratios: list[float] = []
    p99_ratios: list[float] = []
    with tempfile.TemporaryDirectory(prefix="capture-bench-") as tmp:
        without = emulator("bench.handlers.plain", env, False, tmp)
        with_capture = emulator("inference_fn.app.handler", env, True, tmp)
        async with without, with_capture:
            await without.init()
            await with_capture.init()
            for emu in (without, with_capture):
                for _ in range(warmup):
                    result = await emu.invoke(event)
                    if not result.ok:
                        raise RuntimeError(f"invoke failed: {result.payload}")
            for _ in range(rounds):
                # Paired and interleaved invoke by invoke, the order alternating, so that a burst
                # of load from other processes lands on both functions alike.
                block: dict[int, list[float]] = {id(without): [], id(with_capture): []}
                for i in range(per_block):
                    for emu in (without, with_capture) if i % 2 == 0 else (with_capture, without):
                        result = await emu.invoke(event)
                        if not result.ok:
                            raise RuntimeError(f"invoke failed: {result.payload}")
                        block[id(emu)].append(result.duration_ms)
                plain.add_round(block[id(without)])
                captured.add_round(block[id(with_capture)])
                p50_ratios.append(Sample([block[id(with_capture)]]).p(50) / Sample([block[id(without)]]).p(50))
                p99_ratios.append(Sample([block[id(with_capture)]]).p(99) / Sample([block[id(without)]]).p(99))
            delivered = await with_capture.shutdown()
    return plain, captured, p50_ratios, p99_ratios, delivered is not None


def run(quick: bool) -> Result:
    result = Result(NAME, "2. Inference latency with and without capture")
    plain, captured, p50_ratios, p99_ratios, _ = asyncio.run(_measure(quick))
    a, b = plain.summary(), captured.summary()
    rows = [
        ["without capture (no extension)", fmt_ms(a["p50"]), fmt_ms(a["p99"]), fmt_ms(a["mean"]), a["n"]],
        ["with capture (client + extension)", fmt_ms(b["p50"]), fmt_ms(b["p99"]), fmt_ms(b["mean"]), b["n"]],
    ]
    arch = "tiny test model (quick mode)" if quick else "DistilBERT full-size architecture, random weights"
    result.table(
        f"{arch}, ~60 tokens, OMP_NUM_THREADS=1; emulator duration_ms (invoke → response)",
        ["function", "p50", "p99", "mean", "invokes"],
        rows,
    )
    r50, r99 = b["p50"] / a["p50"], b["p99"] / a["p99"]
    result.table(
        "Ratio with/without; spread = lowest–highest ratio over rounds (each round: interleaved pairs)",
        ["ratio", "pooled", "per-block spread"],
        [
            ["p50", f"{r50:.3f}", f"{min(p50_ratios):.3f} – {max(p50_ratios):.3f}"],
            ["p99", f"{r99:.3f}", f"{min(p99_ratios):.3f} – {max(p99_ratios):.3f}"],
        ],
    )
    result.goal("inference p50 with/without capture", f"{r50:.3f}", "≤ 1.01", r50 <= 1.01)
    result.goal("inference p99 with/without capture", f"{r99:.3f}", "≤ 1.01", r99 <= 1.01)
    result.series["inference"] = {"without": a, "with": b, "p50_ratios": p50_ratios, "p99_ratios": p99_ratios}
    return result


def main(argv: list[str] | None = None) -> int:
    from bench._harness import cli

    return cli(NAME, "Inference latency with and without capture (emulator).", run, argv)


if __name__ == "__main__":
    sys.exit(main())
