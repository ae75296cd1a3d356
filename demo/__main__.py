"""``make demo``: the whole product on this machine, in one command, and a summary a person can read.

A moto server (S3 + CloudWatch Logs) stands in for AWS, the local Lambda emulator runs the QA
function under AWS's runtime client with capture-ext installed through its launcher (as the layer
installs it), and real question-answering requests go in through the API Gateway front. Then the
environment is shut down with a SHUTDOWN event and the summary shows where every record landed,
and what capture cost the function: the same requests are also sent to the function without the
extension.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from capture_ext.testing.aws import AwsHelper, endpoint_env, moto_server_process
from capture_ext.testing.net import free_port

REPO = Path(__file__).resolve().parents[1]
FUNCTION = "nlp-qa-demo"
BUCKET = "capture-demo"
LOG_GROUP = f"/aws/capture-ext/{FUNCTION}"
SINKS = "s3_jsonl,s3_parquet,cloudwatch"
DEFAULT_MODEL_DIR = REPO / "models" / "distilbert-base-cased-distilled-squad"
REQUESTS = [
    ("What is the capital of France?", "Paris is the capital and largest city of France, on the Seine."),
    ("Which river flows through Paris?", "Paris is the capital and largest city of France, on the Seine."),
    ("When was AWS Lambda introduced?", "AWS Lambda was introduced in November 2014 as a serverless compute service."),
    (
        "What does an extension run next to?",
        "A Lambda extension runs next to the function in its execution environment.",
    ),
    ("Who wrote the first compiler?", "Grace Hopper wrote the A-0 system, often called the first compiler, in 1952."),
    ("How long is the Nile?", "The Nile is about 6,650 km long and flows north into the Mediterranean Sea."),
    ("What language is the extension written in?", "capture-ext is written in Python and uses asyncio for its I/O."),
    ("Where does captured data go?", "Captured records go to S3 as JSON Lines and Parquet, and to CloudWatch Logs."),
    ("What is DistilBERT?", "DistilBERT is a smaller, faster version of BERT trained by distillation."),
    ("How many people live in Berlin?", "Berlin, the capital of Germany, has about 3.8 million inhabitants."),
]


def prepare_model(model_dir: Path, work: Path) -> tuple[Path, bool]:
    """The model to serve and whether it is the tiny stand-in."""
    if (model_dir / "config.json").exists() and any(
        (model_dir / name).exists() for name in ("model.safetensors", "pytorch_model.bin")
    ):
        return model_dir, False
    from inference_fn.tiny_model import build_tiny_model

    return build_tiny_model(work / "tiny-model", seed=0), True


def function_env(endpoint: str, model: Path, work: Path, flush_interval: str) -> dict[str, str]:
    return {
        **endpoint_env(endpoint),
        "MODEL_DIR": str(model),
        "HF_HUB_OFFLINE": "1",
        "CAPTURE_SINKS": SINKS,
        "CAPTURE_S3_BUCKET": BUCKET,
        "CAPTURE_LOG_GROUP": LOG_GROUP,
        "CAPTURE_FLUSH_INTERVAL_S": flush_interval,
        "CAPTURE_PORT": str(free_port()),
        "CAPTURE_SOCKET": str(work / "capture.sock"),  # work is this environment's own folder
        "CAPTURE_SPOOL_DIR": str(work / "spool"),
        # The launcher's dependency folder (/opt/capture-ext in the layer) is the source tree here.
        "CAPTURE_EXT_HOME": str(REPO),
        "CAPTURE_EXT_PYTHON": sys.executable,
    }


def install_extension(work: Path) -> Path:
    """``extensions/capture-ext`` copied where Lambda looks for it (``/opt/extensions``)."""
    launcher = REPO / "extensions" / "capture-ext"
    if not launcher.exists():
        raise SystemExit(f"the extension launcher {launcher} is missing")
    ext_dir = work / "opt-extensions"
    ext_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(launcher, ext_dir / launcher.name)
    (ext_dir / launcher.name).chmod(0o755)
    return ext_dir


class Environment:
    """One emulated function behind its own API Gateway front, and what its callers saw."""

    def __init__(self, label: str, env: dict[str, str], ext_dir: Path | None) -> None:
        from capture_ext.emulator import LambdaEmulator

        self.label = label
        self.emu = LambdaEmulator("inference_fn.app.handler", REPO, ext_dir, env, function_name=FUNCTION,
                                  timeout_s=60, init_timeout_s=180)  # fmt: skip
        self.answers: list[dict[str, Any]] = []
        self.report: Any = None
        self.url = ""

    async def start(self) -> None:
        from capture_ext.emulator.apigw import ApiGatewayFront

        await self.emu.start()
        self.front = ApiGatewayFront(self.emu)
        self.url = await self.front.start()
        started = time.monotonic()
        await self.emu.init()
        print(f"   {self.label}: initialised in {time.monotonic() - started:.1f} s, POST {self.url}/nlp-qa")

    async def ask(self, session: Any, question: str, context: str, warmup: bool = False) -> dict[str, Any]:
        # Lambda sends a request to a free environment, never to one still busy after its last
        # response: wait for that, then time the HTTP round trip alone.
        await self.emu.idle()
        t0 = time.monotonic()
        async with session.post(f"{self.url}/nlp-qa", json={"question": question, "context": context}) as r:
            status, body = r.status, await r.json(content_type=None)
        answer = {"status": status, "ms": (time.monotonic() - t0) * 1000, "warmup": warmup,
                  **(body if isinstance(body, dict) else {})}  # fmt: skip
        self.answers.append(answer)
        return answer

    async def stop(self) -> None:
        with contextlib.suppress(AttributeError):
            await self.front.close()
        self.report = await self.emu.shutdown()
        await self.emu.close()
        if self.report is not None:
            rep, killed = self.report, ", ".join(self.report.killed) or "none"
            print(f"   {self.label}: SHUTDOWN ({rep.reason}) in {rep.duration_ms:.0f} ms; SIGKILLed: {killed}")

    @property
    def results(self) -> list[Any]:
        return list(self.emu.results)


async def run_side_by_side(envs: list[Environment], requests: list[tuple[str, str]]) -> None:
    """Both environments up at once and the requests alternated, so machine load hits both alike."""
    import aiohttp

    print("\n== starting the function twice: with capture-ext installed, and without any extension ...", flush=True)
    try:
        await asyncio.gather(*(e.start() for e in envs))
        async with aiohttp.ClientSession() as session:
            # Each new input shape costs torch a one-off warm-up; pay it outside the measurements.
            warmup = list(dict.fromkeys(requests))
            print(f"== warm-up: {len(warmup)} distinct requests to each (captured too, not timed)", flush=True)
            for question, context in warmup:
                for e in envs:
                    await e.ask(session, question, context, warmup=True)
            print(f"== {len(requests)} timed requests to each, alternating (with capture | without extension):")
            for n, (question, context) in enumerate(requests, 1):
                got = [await e.ask(session, question, context) for e in envs]
                answer = str(got[0].get("Answer", got[0]))[:34]
                times = " | ".join(f"{a['status']} {a['ms']:6.1f} ms" for a in got)
                print(f"   [{n:>3}/{len(requests)}] {times}  {question[:36]!r} -> {answer!r}", flush=True)
    finally:
        print("== shutting down (SHUTDOWN event, reason spindown) ...")
        for e in envs:
            await e.stop()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    body = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(["   " + line, "   " + "  ".join("-" * w for w in widths), *("   " + b for b in body)])


def read_back(endpoint: str) -> dict[str, Any]:
    """What each sink holds, read through the AWS APIs the way a user would."""
    aws = AwsHelper(endpoint)
    jsonl = aws.read_all_jsonl(BUCKET, "inference-capture/jsonl/")
    parquet_keys = aws.list_keys(BUCKET, "inference-capture/parquet/")
    parquet_ids = [i for k in parquet_keys for i in aws.read_parquet(BUCKET, k).column("inference_id").to_pylist()]
    logs = aws.all_log_messages(LOG_GROUP)
    return {
        "s3_jsonl": ([r["inference_id"] for rows in jsonl.values() for r in rows], sorted(jsonl)),
        "s3_parquet": (parquet_ids, parquet_keys),
        "cloudwatch": ([m["inference_id"] for msgs in logs.values() for m in msgs], sorted(logs)),
        "records": [r for rows in jsonl.values() for r in rows],
    }


def summarise(with_capture: Environment, without: Environment, sinks: dict[str, Any], tiny: bool) -> None:
    answers = with_capture.answers
    ok = [a for a in answers if a["status"] == 200]
    answered = {a["inference_id"] for a in ok}
    print("\n" + "=" * 78 + "\ncapture-ext demo: summary\n" + "=" * 78)
    warm = sum(a["warmup"] for a in answers)
    print(f"requests answered: {len(ok)}/{len(answers)} ({warm} warm-up + {len(answers) - warm} timed; HTTP 200 "
          "through the local API Gateway)")  # fmt: skip
    if tiny:
        print("model: a TINY RANDOM stand-in — the answers above are meaningless. Run `make model` where there is\n"
              "       internet to fetch distilbert-base-cased-distilled-squad, then `make demo` again.")  # fmt: skip
    print("\nrecords captured, per sink:")
    rows, examples = [], []
    for sink in ("s3_jsonl", "s3_parquet", "cloudwatch"):
        ids, places = sinks[sink]
        complete = "all" if set(ids) >= answered and len(ids) == len(set(ids)) else "MISSING/DUPLICATES"
        if sink == "cloudwatch":
            where = f"log group {LOG_GROUP}: {len(places)} stream(s)"
            examples += [f"{sink:<10}  stream {p}" for p in places[:1]]
        else:
            where = f"s3://{BUCKET}/inference-capture/{sink[3:]}/: {len(places)} object(s)"
            examples += [f"{sink:<10}  s3://{BUCKET}/{p}" for p in places[:1]]
        rows.append([sink, str(len(ids)), complete, where])
    print(table(rows, ["sink", "records", "of answered", "where"]))
    print("   e.g.\n" + "\n".join(f"   {line}" for line in examples))
    print("\na few captured records (s3_jsonl):")
    sample = [
        [r["inference_id"][:8], r["request_id"][:8], textwrap.shorten(r["input"]["question"], 34),
         textwrap.shorten(str(r["output"]["answer"]), 24), f"{r['output']['score']:.3f}", f"{r['latency_ms']:.1f}"]
        for r in sinks["records"][:5]
    ]  # fmt: skip
    print(table(sample, ["inference", "request", "question", "answer", "score", "model ms"]))

    def stats(phase: Environment) -> list[str]:
        skip = sum(a["warmup"] for a in phase.answers)  # invokes are in request order
        results = [r for r in phase.results[skip:] if r.ok]
        caller = [a["ms"] for a in phase.answers[skip:]]
        post = [r.post_runtime_ms for r in results if r.post_runtime_ms is not None]
        handler = [r.duration_ms for r in results]
        return [f"{pct(handler, 0.5):.1f}", f"{pct(handler, 0.95):.1f}", f"{pct(caller, 0.5):.1f}",
                f"{pct(post, 0.5):.1f}", f"{max(post, default=0):.1f}"]  # fmt: skip

    print("\nlatency the function saw (ms; the timed requests, after the warm-up):")
    head = ["", "handler p50", "handler p95", "caller p50", "post-runtime p50", "post-runtime max"]
    print(table([["with capture", *stats(with_capture)], ["without extension", *stats(without)]], head))

    def handler_ms(phase: Environment) -> list[float]:
        skip = sum(a["warmup"] for a in phase.answers)
        return [r.duration_ms for r in phase.results[skip:]]

    # Requests went to the two environments back to back, so a pairwise difference cancels most of
    # the load that other work puts on this machine in bursts.
    paired = [a - b for a, b in zip(handler_ms(with_capture), handler_ms(without), strict=False)]
    print(f"   paired difference of handler time (with - without, same request back to back): "
          f"p50 {pct(paired, 0.5):+.1f} ms over {len(paired)} requests")  # fmt: skip
    print("   handler = invoke to response; caller = HTTP round trip through the API Gateway front (each\n"
          "   request sent once the environment is free); post-runtime = the extension's work after the response,\n"
          "   before the environment freezes (billed as duration, never seen by that invoke's caller).\n"
          "   Both ran side by side with alternating requests; on a shared machine a few ms are noise.")  # fmt: skip


def drift_report(endpoint: str, out: Path) -> int:
    """Run ``capture-ext report`` over the captured data, as a user would, and say where it is.

    No baseline is given, so the report compares the older half of the window with the newer half;
    ``--exit-zero`` because differences between two handfuls of tiny-model answers are noise.
    """
    command = [sys.executable, "-m", "capture_ext.report", "--data", f"s3://{BUCKET}/inference-capture",
               "--out", str(out), "--exit-zero", "--quiet"]  # fmt: skip
    env = {**os.environ, **endpoint_env(endpoint)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    print("\ndrift report over the captured data (capture-ext report, older half vs newer half):")
    if result.returncode != 0:
        print(f"   report failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
        return result.returncode
    print(f"   open {out / 'report.html'}   (machine-readable: {out / 'violations.json'})")
    print("   the same command on your own bucket: capture-ext report --data s3://BUCKET/inference-capture --out DIR")
    return 0


async def demo(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="capture-demo-"))
    try:
        model_dir = Path(args.model_dir or os.environ.get("MODEL_DIR") or DEFAULT_MODEL_DIR)
        model, tiny = prepare_model(model_dir, work)
        print(f"model: {model}" + (" (tiny random stand-in: answers will be meaningless)" if tiny else ""))
        requests = [REQUESTS[i % len(REQUESTS)] for i in range(args.requests)]
        with moto_server_process() as endpoint:
            print(f"moto server (S3 + CloudWatch Logs) on {endpoint}")

            aws = AwsHelper(endpoint)
            aws.create_bucket(BUCKET)
            aws.create_log_group(LOG_GROUP)
            print(f"created bucket s3://{BUCKET} and log group {LOG_GROUP}")
            # Separate sockets and ports: the function without the extension must not reach the other's.
            with_capture = Environment("with capture", function_env(endpoint, model, work / "a", args.flush_interval),
                                       install_extension(work))  # fmt: skip
            without = Environment("without extension", function_env(endpoint, model, work / "b", "0"), None)
            await run_side_by_side([with_capture, without], requests)
            sinks = read_back(endpoint)
            summarise(with_capture, without, sinks, tiny)
            reported = drift_report(endpoint, Path(args.report_dir))
        ok = all(a["status"] == 200 for a in with_capture.answers)
        complete = all(set(sinks[s][0]) >= {a["inference_id"] for a in with_capture.answers} for s in SINKS.split(","))
        return 0 if ok and complete and reported == 0 else 1
    finally:
        if args.keep:
            print(f"\nwork folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20, help="QA requests per phase (default: %(default)s)")
    parser.add_argument(
        "--model-dir", help=f"model folder (default: $MODEL_DIR or {DEFAULT_MODEL_DIR.relative_to(REPO)})"
    )
    parser.add_argument(
        "--flush-interval", default="0", help="CAPTURE_FLUSH_INTERVAL_S (default: %(default)s, every invoke)"
    )
    parser.add_argument(
        "--report-dir",
        default=str(REPO / "build" / "demo-report"),
        help="where the drift report is written (default: build/demo-report)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (model, spool) for a look")
    args = parser.parse_args(argv)
    if args.requests < 2:
        parser.error("--requests must be at least 2")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(demo(args))


if __name__ == "__main__":
    sys.exit(main())
