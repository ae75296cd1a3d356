"""The QA function's worst request: time and peak memory of one ``QuestionAnswerer.answer`` call.

Not part of ``make bench``: it measures one number per case, each in a fresh process (peak RSS
is per process), on the model given. Cases: the issue's ``"." * 20000`` context (20,000 tokens;
refused since the token bound) and the most expensive request still accepted (a 64-token
question with a context of exactly ``max_context_tokens`` tokens). ``--full-size`` uses
DistilBERT's base architecture with random weights (as benchmark 2 does), else the tiny model.
Run it against another checkout's ``inference_fn`` with ``--code DIR`` to compare before/after.
CPU time is reported beside wall time: on a shared machine it is the steadier of the two.

    python -m bench.qa_worst_case [--full-size] [--code DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

from bench._emulated import model_dir

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
#: Each case runs this in its own interpreter: load, warm up, then one timed answer.
PROBE = """
import json, resource, sys, time
code, model, threads, question, context = sys.argv[1:6]
sys.path.insert(0, code)
import torch
torch.set_num_threads(int(threads))
from inference_fn.qa import QuestionAnswerer
qa = QuestionAnswerer.from_dir(model)
assert sys.modules["inference_fn.qa"].__file__.startswith(code)
qa.answer("where?", "paris is in france")
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cpu_started = time.process_time()
started = time.perf_counter()
try:
    answer = qa.answer(question, context)
    outcome = f"answered ({len(answer.text)} characters)"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"[:120]
seconds = time.perf_counter() - started
cpu = time.process_time() - cpu_started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "cpu_s": cpu, "rss_mb": peak / 1024, "extra_mb": (peak - rss_before) / 1024,
                  "outcome": outcome}))
"""


def cases() -> dict[str, tuple[str, str]]:
    question = " ".join(["city"] * 64)  # 64 tokens with both tokenizers: the question limit
    # "the old city" is 3 tokens a word each; 6,144 tokens is the default context bound.
    words = ["the", "old", "city"] * 2048
    return {
        '"." * 20000 (20,000 tokens)': ("where?", "." * 20_000),
        "64-token question, 6,144-token context": (question, " ".join(words)),
    }


def measure(code: Path, model: Path, threads: int, question: str, context: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(code), str(model), str(threads), question, context],
        capture_output=True,
        text=True,
        check=False,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.qa_worst_case", description=__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true", help="DistilBERT's base architecture, random weights")
    parser.add_argument("--code", type=Path, default=ROOT, help="folder holding the inference_fn to measure")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = model_dir(full_size=args.full_size)
    for name, (question, context) in cases().items():
        result = measure(args.code.resolve(), model, args.threads, question, context)
        logger.info(
            "%-40s %7.2f s (CPU %7.2f s)  peak RSS %6.0f MB (+%5.0f MB)  %s",
            name,
            result["seconds"],
            result["cpu_s"],
            result["rss_mb"],
            result["extra_mb"],
            result["outcome"],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
