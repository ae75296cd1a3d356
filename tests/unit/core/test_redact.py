"""CAPTURE_REDACT: syntax, masking, hashing, lists and wildcards, and failing closed."""

import hashlib
import hmac

import pytest

from capture_ext.core.config import Settings
from capture_ext.core.redact import MASK, Redactor, parse_rules


def record():
    return {
        "inference_id": "i1",
        "input": {"question": "q?", "context": "secret context", "docs": [{"text": "a"}, {"text": "b"}]},
        "output": {"answer": "x", "score": 0.5},
        "metadata": {"user": {"email": "alice@example.com", "plan": "pro"}},
    }


def test_mask_hash_lists_and_wildcards():
    rules = parse_rules("input.context, metadata.user.email:hash, input.docs.text, output.*")
    rec = record()
    Redactor(rules).apply(rec)
    assert rec["input"]["context"] == MASK
    assert rec["input"]["docs"] == [{"text": MASK}, {"text": MASK}]
    assert rec["output"] == {"answer": MASK, "score": MASK}
    assert rec["metadata"]["user"]["email"] == "sha256:" + hashlib.sha256(b"alice@example.com").hexdigest()
    assert rec["metadata"]["user"]["plan"] == "pro" and rec["input"]["question"] == "q?"


def test_hash_is_keyed_when_a_key_is_given_and_missing_paths_are_ignored():
    rec = record()
    Redactor(parse_rules("metadata.user.email:hash,metadata.nothing.here"), key="k").apply(rec)
    expected = hmac.new(b"k", b"alice@example.com", hashlib.sha256).hexdigest()
    assert rec["metadata"]["user"]["email"] == f"sha256:{expected}"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("inference_id", "starts with"),
        ("input..context", "empty path segment"),
        ("input.context:scramble", "mask or hash"),
    ],
)
def test_bad_entries_are_named(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_rules(raw)


def test_an_invalid_setting_fails_closed():
    settings = Settings.from_env({"CAPTURE_REDACT": "input.context:scramble"})
    assert any("CAPTURE_REDACT" in p for p in settings.problems)
    rec = record()
    Redactor(settings.redact).apply(rec)
    assert rec["input"] == rec["output"] == rec["metadata"] == MASK


def test_the_key_is_never_shown_in_settings():
    settings = Settings.from_env({"CAPTURE_REDACT_KEY": "topsecret"})
    assert "topsecret" not in repr(settings)
