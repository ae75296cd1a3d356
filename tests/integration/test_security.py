"""Redacted values reach no sink and not the spool; logs carry no credentials or record contents;
listeners are loopback only; spool and socket are readable by the owner only."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from capture_ext.client import CaptureClient
from tests.faults.process import ExtensionProcess, assert_reconciled
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.timeout(120)

BUCKET = "capture-security"
GROUP = "/aws/capture-ext/faults-fn"
CONTEXT = "CANARY-CONTEXT-7f3a"
EMAIL = "canary.person@example.org"
AWS_SECRET = "CANARY-SECRET-KEY-91c2"
REDACT_KEY = "CANARY-HMAC-KEY-5d10"


def listening_addresses(pid: int) -> list[str]:
    """Local addresses of the TCP sockets this process listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}") if os.path.exists(f"/proc/{pid}/fd/{fd}") else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for row in list(handle)[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    found.append(fields[1].split(":")[0])
    return found


async def test_redaction_logs_permissions_and_loopback(tmp_path: Path, aws: Any, moto_server) -> None:
    aws.create_bucket(BUCKET)
    proxy = FaultProxy(moto_server.endpoint)
    endpoint = await proxy.start()
    out = tmp_path / "out"
    env = {
        **moto_server.env(),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "CAPTURE_SINKS": "file,s3_jsonl,cloudwatch",
        "CAPTURE_FILE_DIR": str(out),
        "CAPTURE_S3_BUCKET": BUCKET,
        "CAPTURE_LOG_GROUP": GROUP,
        "CAPTURE_FLUSH_INTERVAL_S": "0",
        "CAPTURE_REDACT": "input.context, metadata.user.email:hash",
        "CAPTURE_REDACT_KEY": REDACT_KEY,
    }
    ext = await ExtensionProcess(tmp_path, env).start()
    client = CaptureClient(socket_path=env.get("CAPTURE_SOCKET") or ext.env["CAPTURE_SOCKET"], port=ext.port)
    try:
        assert ext.proc is not None
        addresses = listening_addresses(ext.proc.pid)
        assert addresses and set(addresses) == {"0100007F"}, addresses  # 127.0.0.1 only

        proxy.inject("internal", "s3", times=1)  # an error path that logs
        request_id = await ext.invoke()
        body: list[dict[str, Any]] = [
            {"input": {"question": "who?", "context": CONTEXT}, "output": "x", "user": {"email": EMAIL}},
            {"input": {"question": "q", "context": CONTEXT}, "metadata": {"user": {"email": EMAIL, "plan": "p"}}},
        ]
        assert await ext.post(body) == 202
        client.capture(input={"context": CONTEXT}, metadata={"user": {"email": EMAIL}})
        client.capture(input={"context": CONTEXT}, timestamp=f"not a date {CONTEXT}")  # refused, logged
        client.flush(100)
        # Written ahead, before any flush: the spool must already be redacted.
        spool = tmp_path / "spool"
        segments = list(spool.glob("*.seg"))
        assert segments and sum(p.stat().st_size for p in segments) > 0
        for path in segments:
            data = path.read_bytes()
            assert CONTEXT.encode() not in data and EMAIL.encode() not in data
        assert stat.S_IMODE(spool.stat().st_mode) == 0o700
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in spool.iterdir())
        assert stat.S_IMODE(os.stat(ext.env["CAPTURE_SOCKET"]).st_mode) == 0o600

        await ext.done(request_id)
        await ext.api.wait_idle()
        await ext.cycle()  # the S3 error above left a retry
        health = await ext.health()
        assert_reconciled(health)
        assert health["delivered"] == {"file": 3, "s3_jsonl": 3, "cloudwatch": 3}
        code, _ = await ext.shutdown(2000)
        assert code == 0
    finally:
        client.close()
        await ext.close()
        await proxy.stop()

    everything = b"".join(p.read_bytes() for p in out.iterdir())
    everything += b"".join(aws.read_object(BUCKET, key) for key in aws.list_keys(BUCKET))
    s3_records = [r for records in aws.read_all_jsonl(BUCKET).values() for r in records]
    cw_records = [m for messages in aws.all_log_messages(GROUP).values() for m in messages]
    everything += repr(s3_records).encode() + repr(cw_records).encode()
    assert CONTEXT.encode() not in everything and EMAIL.encode() not in everything
    hashed = "sha256:" + hmac.new(REDACT_KEY.encode(), EMAIL.encode(), hashlib.sha256).hexdigest()
    for record in s3_records + cw_records:
        assert record["input"]["context"] == "[REDACTED]"
        assert record["metadata"]["user"]["email"] == hashed
    log = ext.log()
    assert "Internal" in log or "500" in log  # the error path did log
    for secret in (CONTEXT, EMAIL, AWS_SECRET, REDACT_KEY):
        assert secret not in log, secret
