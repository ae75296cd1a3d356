"""What the contract cannot know: the wire format, headers, hints and configuration errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from capture_ext_webhook import WebhookConfig, WebhookSink
from capture_ext_webhook import sink as sink_module
from capture_ext_webhook.sink import retry_after_s
from conftest import Receiver

from capture_ext.models import Outcome, SinkContext
from capture_ext.testing.contract import make_batch, make_record
from capture_ext.variables import ConfigError, markdown_table


def context(**env: str) -> SinkContext:
    return SinkContext(name="webhook", env=env, function_name="fn")


async def test_posts_the_batch_as_json_with_idempotency_key_and_token(receiver: Receiver) -> None:
    sink = WebhookSink(context(CAPTURE_WEBHOOK_URL=receiver.url + "?tenant=a", CAPTURE_WEBHOOK_TOKEN="s3cret"))
    records = [make_record("env1", 1, input={"question": "¿dónde?"}), make_record("env1", 2)]
    await sink.start()
    assert (await sink.write_batch(make_batch(records, "env1", 7, attempt=3))).is_ok
    await sink.close(1.0)
    [request] = receiver.requests
    assert request["path"] == "/capture?tenant=a"
    headers = request["headers"]
    assert headers["Idempotency-Key"] == "env1-00000007"
    assert headers["X-Capture-Attempt"] == "3"
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["Content-Type"] == "application/json"
    body = json.loads(request["body"])
    assert body == {"batch_id": "env1-00000007", "environment_id": "env1", "sequence": 7, "records": records}


async def test_retries_send_byte_identical_bodies(receiver: Receiver) -> None:
    sink = WebhookSink(context(CAPTURE_WEBHOOK_URL=receiver.url))
    records = [make_record("env1", 1)]
    for attempt in (1, 2):
        await sink.write_batch(make_batch(records, "env1", 1, attempt))
    first, second = receiver.requests
    assert first["body"] == second["body"]
    assert first["headers"]["Idempotency-Key"] == second["headers"]["Idempotency-Key"]


async def test_throttling_passes_retry_after_to_the_dispatcher(receiver: Receiver) -> None:
    receiver.failure = (429, {"Retry-After": "7"})
    sink = WebhookSink(context(CAPTURE_WEBHOOK_URL=receiver.url))
    result = await sink.write_batch(make_batch([make_record()]))
    assert result.outcome is Outcome.RETRYABLE
    assert result.retry_after_s == 7.0
    assert "429" in (result.error or "")


async def test_redirect_is_fatal_and_says_why(receiver: Receiver) -> None:
    receiver.failure = (301, {"Location": "http://127.0.0.1:1/elsewhere"})
    sink = WebhookSink(context(CAPTURE_WEBHOOK_URL=receiver.url))
    result = await sink.write_batch(make_batch([make_record()]))
    assert result.outcome is Outcome.FATAL
    assert "redirects are not followed" in (result.error or "")


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "CAPTURE_WEBHOOK_URL is not set"),
        ({"CAPTURE_WEBHOOK_URL": "ftp://example.com/x"}, "is not an http:// or https:// URL"),
        (
            {"CAPTURE_WEBHOOK_URL": "http://h/x", "CAPTURE_WEBHOOK_TIMEOUT_S": "soon"},
            "CAPTURE_WEBHOOK_TIMEOUT_S='soon'",
        ),
        (
            {"CAPTURE_WEBHOOK_URL": "http://h/x", "CAPTURE_WEBHOOK_TIMEOUT_S": "0"},
            "CAPTURE_WEBHOOK_TIMEOUT_S='0' is invalid (must be a number > 0)",
        ),
    ],
)
def test_bad_configuration_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match="CAPTURE_WEBHOOK_") as info:
        WebhookSink(context(**env))
    assert message in str(info.value)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_s("3") == 3.0
    assert retry_after_s(None) is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after_s("soon") is None


def test_every_problem_is_named_in_one_message_and_the_token_never_shows() -> None:
    env = {"CAPTURE_WEBHOOK_TIMEOUT_S": "-1", "CAPTURE_WEBHOOK_TOKEN": "s3cret"}
    with pytest.raises(ConfigError) as info:
        WebhookConfig.from_env(env)
    message = str(info.value)
    assert "CAPTURE_WEBHOOK_URL is not set" in message and "CAPTURE_WEBHOOK_TIMEOUT_S='-1'" in message
    config = WebhookConfig.from_env({**env, "CAPTURE_WEBHOOK_URL": "http://h/x", "CAPTURE_WEBHOOK_TIMEOUT_S": "2"})
    assert "s3cret" not in repr(config) and config.token == "s3cret"


def test_an_argument_wins_over_the_environment() -> None:
    env = {"CAPTURE_WEBHOOK_URL": "http://env/x", "CAPTURE_WEBHOOK_TIMEOUT_S": "9"}
    config = WebhookConfig.from_env(env, url="https://given/y")
    assert (config.url, config.timeout_s) == ("https://given/y", 9.0)
    sink = WebhookSink(context(), config)  # no variable set at all: the config object is enough
    assert sink.config.url == "https://given/y"


def test_the_plugin_registers_the_variables_it_reads() -> None:
    from capture_ext.core.plugins import get_plugin_manager

    plugins = get_plugin_manager()
    assert plugins.sink_variables()["webhook"] == WebhookConfig.variables()
    source = Path(sink_module.__file__).read_text()
    assert set(re.findall(r'"(CAPTURE_WEBHOOK_[A-Z0-9_]+)"', source)) == {v.name for v in WebhookConfig.variables()}


def test_readme_table_is_generated_from_the_config() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"<!-- BEGIN VARIABLES -->\n(.*?)\n<!-- END VARIABLES -->", readme, flags=re.S)
    assert block and block.group(1) == markdown_table(WebhookConfig.variables())
