"""The whole system: HTTP request → API Gateway front → the QA function under awslambdaric →
capture-ext (installed through its launcher, as the layer installs it) → S3 JSONL, S3 Parquet and
CloudWatch Logs on a moto server, through freezes, a reset and SHUTDOWN.

Every environment imports torch and transformers in the runtime, so each test here pays a few
seconds of init; the assertions are about records, never about timings.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from capture_ext.emulator import Faults, LambdaEmulator
from capture_ext.emulator.apigw import ApiGatewayFront
from tests.e2e.fixtures.full_stack import (
    BUCKET,
    FUNCTION,
    LOG_GROUP,
    QUESTIONS,
    REPO,
    SINKS,
    delivered_ids,
    function_env,
    install_extension,
)
from tests.qa_models import END_WORD, START_WORD, tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
FIXTURE_TASK = Path(__file__).resolve().parent / "fixtures" / "task"


@pytest.fixture
def stack(tmp_path: Path, aws: Any, aws_env: dict[str, str]) -> dict[str, Any]:
    aws.create_bucket(BUCKET)
    aws.create_log_group(LOG_GROUP)
    return {"ext": install_extension(tmp_path / "extensions"), "env": function_env(tmp_path, aws_env, tiny_model())}


async def _ask(session: aiohttp.ClientSession, url: str, question: str, context: str) -> tuple[int, dict, str]:
    async with session.post(f"{url}/nlp-qa", json={"question": question, "context": context}) as r:
        return r.status, await r.json(), r.headers["x-amzn-RequestId"]


async def test_every_answered_request_lands_in_all_three_sinks_through_shutdown(lambda_emulator, stack, aws):
    # Three buffered records make a flush due; whatever is left when the environment ends goes out
    # during SHUTDOWN. The default flush timeout (2 s) on purpose: it starts when the runtime is done.
    env = {**stack["env"], "CAPTURE_FLUSH_INTERVAL_S": "60", "CAPTURE_FLUSH_MAX_RECORDS": "3"}
    emu: LambdaEmulator = await lambda_emulator(
        "inference_fn.app.handler", REPO, stack["ext"], env, function_name=FUNCTION, init_timeout_s=120
    )
    front = ApiGatewayFront(emu)
    url = await front.start()
    answered: dict[str, str] = {}
    try:
        async with aiohttp.ClientSession() as session:
            for question, context in QUESTIONS:
                status, body, request_id = await _ask(session, url, question, context)
                assert status == 200, body
                assert body["Answer"].lower().split()[0] == START_WORD  # the wired model's known span
                assert body["Answer"].lower().split()[-1] == END_WORD
                answered[body["inference_id"]] = request_id
            status, body, request_id = await _ask(session, url, "", "no question")
            assert status == 400 and "question" in body["error"]
            # A refused request is captured too, flagged (docs/deployment.md, "Limits and refused requests").
            refused = {body["inference_id"]: request_id}
    finally:
        await front.close()
    before_shutdown = delivered_ids(aws)
    report = await emu.shutdown()

    assert report is not None and report.killed == () and report.exit_codes["capture-ext"] == 0
    assert [r.reason for r in emu.resets] == ["spindown"]
    sinks = delivered_ids(aws)
    captured = {**answered, **refused}
    for sink, ids in sinks.items():
        assert sorted(ids) == sorted(captured), sink  # every record, once, in every sink
        assert 0 < len(before_shutdown[sink]) < len(captured), sink  # some by a due flush, the rest at SHUTDOWN
    jsonl = [r for rows in aws.read_all_jsonl(BUCKET, "inference-capture/jsonl/").values() for r in rows]
    for record in jsonl:
        assert record["request_id"] == captured[record["inference_id"]]  # the Lambda request id, end to end
        assert record["function_name"] == FUNCTION
        assert record["model"]["name"].startswith("tiny-distilbert-qa")
        if record["inference_id"] in refused:
            assert record["metadata"] == {"source": "api", "rejected": True, "status": 400,
                                          "error": "field 'question' is empty"}  # fmt: skip
        else:
            assert record["input"]["question"] in {q for q, _ in QUESTIONS}
    [stream] = aws.log_streams(LOG_GROUP)
    assert stream.endswith(f"/{FUNCTION}/{jsonl[0]['environment_id']}")


async def test_frozen_extension_flushes_only_after_the_handler_and_not_between_invokes(lambda_emulator, stack, aws):
    # A wrapper handler answers with the real function, then holds the runtime for a while: the
    # record is captured at once, but nothing may reach the sinks while a handler runs or while
    # the sandbox is frozen. Two buffered records make a flush due; it must come after an invoke.
    env = {**stack["env"], "CAPTURE_FLUSH_INTERVAL_S": "60", "CAPTURE_FLUSH_MAX_RECORDS": "2",
           "PYTHONPATH": str(REPO), "SLOW_QA_HOLD_S": "0.8"}  # fmt: skip
    emu = await lambda_emulator(
        "slow_qa.handler", FIXTURE_TASK, stack["ext"], env, function_name=FUNCTION, init_timeout_s=120
    )
    await emu.init()
    during_handler, while_frozen, results = [], [], []
    for question, context in QUESTIONS[:3]:
        pending = emu.start_invoke({"question": question, "context": context})
        await asyncio.sleep(0.5)  # the handler has captured and is holding
        during_handler.append(aws.list_keys(BUCKET))
        results.append(await pending.result())
        await asyncio.sleep(0.5)  # frozen: a timer-based flush would fire now
        while_frozen.append(aws.list_keys(BUCKET))
    await emu.shutdown()

    story = (
        f"during handler {during_handler}, frozen {while_frozen}, post-runtime {[r.post_runtime_ms for r in results]}"
    )
    assert all(r.ok for r in results)
    assert while_frozen[0] == [], story  # one record is not due, and a frozen extension cannot flush it
    assert during_handler == [[], *while_frozen[:-1]], story  # nothing ever lands while a handler runs
    assert while_frozen[-1] != [], story  # the due flush came at the end of an invoke
    flushed_at = next(n for n, keys in enumerate(while_frozen) if keys)
    assert results[flushed_at].post_runtime_ms == max(r.post_runtime_ms or 0 for r in results), story
    ids = sorted(r.payload["inference_id"] for r in results)
    assert {k: sorted(v) for k, v in delivered_ids(aws).items()} == dict.fromkeys(SINKS, ids), story


async def test_rie_stub_mode_still_captures_everything(lambda_emulator, stack, aws):
    env = {**stack["env"], "CAPTURE_RUNTIME_DONE_TIMEOUT_MS": "200"}
    emu = await lambda_emulator(
        "inference_fn.app.handler", REPO, stack["ext"], env, function_name=FUNCTION, telemetry="stub",
        init_timeout_s=120,
    )  # fmt: skip
    ids = []
    for question, context in QUESTIONS[:3]:
        result = await emu.invoke({"question": question, "context": context})
        assert result.ok, result.raw
        ids.append(result.payload["inference_id"])
    await emu.shutdown()

    assert emu.deliveries == []  # no telemetry at all, as with AWS's RIE
    for sink, got in delivered_ids(aws).items():
        assert sorted(got) == sorted(ids), sink


async def test_killing_the_extension_mid_run_resets_and_the_function_keeps_answering(lambda_emulator, stack, aws):
    faults = Faults(kill_extension="capture-ext", kill_at="response", kill_on_invoke=2)
    emu = await lambda_emulator(
        "inference_fn.app.handler", REPO, stack["ext"], stack["env"], function_name=FUNCTION, faults=faults,
        init_timeout_s=120,
    )  # fmt: skip
    results = []
    for question, context in QUESTIONS[:4]:
        results.append(await emu.invoke({"question": question, "context": context}))
    await emu.shutdown()

    assert all(r.ok for r in results), [r.raw for r in results]  # every caller got an answer
    assert [r.reset_reason for r in results] == [None, "failure", None, None]
    assert results[2].init_ms is not None  # a fresh environment after the reset
    assert [r.reason for r in emu.resets] == ["failure", "spindown"]
    assert sum(" ready in " in line for line in emu.logs("capture-ext")) == 2  # the extension started again
    ids = [r.payload["inference_id"] for r in results]
    for sink, got in delivered_ids(aws).items():
        # The record of the killed invoke may be lost or replayed from the spool; all others arrive.
        assert set(ids) - {ids[1]} <= set(got) <= set(ids), sink
