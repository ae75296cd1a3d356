"""A real local AWS for tests: moto in server mode over HTTP, plus read-back helpers.

Server mode, never in-process ``mock_aws``: aioboto3 then talks HTTP exactly as in
production (signing, retries config, timeouts, XML/JSON parsing), and in-process mocking
does not work with aiobotocore at all. moto is imported only when a server starts, so
importing this module is cheap.

The helpers use plain (synchronous) boto3: they run between the awaits of a test, and the
server answers from its own thread.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

from capture_ext.testing.net import free_port

REGION = "us-east-1"
#: Dummy credentials: moto accepts anything, and these can never reach a real account.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def endpoint_env(endpoint: str) -> dict[str, str]:
    """The environment that points botocore (and every sink) at a local AWS at ``endpoint``."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, **CREDENTIALS}


class MotoServer:
    """``ThreadedMotoServer`` on a free loopback port, with reset between tests."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def reset(self) -> None:
        """Forget every bucket, log group and stream (``POST /moto-api/reset``)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def env(self) -> dict[str, str]:
        """The environment that points botocore (and every sink) at this server."""
        return endpoint_env(self.endpoint)

    def stop(self) -> None:
        self._server.stop()


@contextlib.contextmanager
def moto_server_process(startup_timeout_s: float = 30.0) -> Iterator[str]:
    """moto's server as a child process on a free loopback port; yields its endpoint URL.

    For when moto must not share this process's interpreter (and GIL) with what is measured,
    as in ``make demo``; tests use the cheaper in-thread :class:`MotoServer`. The child is
    terminated (then killed) by PID on the way out.
    """
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on {endpoint}") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class AwsHelper:
    """Create resources and read back what sinks wrote, through the server's public API."""

    def __init__(self, endpoint: str, region: str = REGION) -> None:
        self.endpoint = endpoint
        self.region = region
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3

            factory: Any = boto3.client  # the stubs' per-service overloads need a literal name
            self._clients[service] = factory(
                service,
                endpoint_url=self.endpoint,
                region_name=self.region,
                aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            )
        return self._clients[service]

    # -- S3 -------------------------------------------------------------------------------
    def create_bucket(self, bucket: str) -> str:
        self.client("s3").create_bucket(Bucket=bucket)
        return bucket

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        keys: list[str] = []
        paginator = self.client("s3").get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)

    def read_object(self, bucket: str, key: str) -> bytes:
        return bytes(self.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())

    def read_jsonl(self, bucket: str, key: str) -> list[dict[str, Any]]:
        """The JSON lines of one object, gunzipped when the key ends in ``.gz``."""
        data = self.read_object(bucket, key)
        if key.endswith(".gz"):
            data = gzip.decompress(data)
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def read_all_jsonl(self, bucket: str, prefix: str = "") -> dict[str, list[dict[str, Any]]]:
        return {key: self.read_jsonl(bucket, key) for key in self.list_keys(bucket, prefix)}

    def download(self, bucket: str, prefix: str, directory: str) -> list[str]:
        """Copy every object under ``prefix`` into ``directory`` keeping the key layout."""
        from pathlib import Path

        paths = []
        for key in self.list_keys(bucket, prefix):
            path = Path(directory) / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.read_object(bucket, key))
            paths.append(str(path))
        return paths

    def read_parquet(self, bucket: str, key: str) -> Any:
        """One Parquet object as a pyarrow Table."""
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(self.read_object(bucket, key)))

    # -- CloudWatch Logs ---------------------------------------------------------------
    def create_log_group(self, group: str) -> str:
        self.client("logs").create_log_group(logGroupName=group)
        return group

    def log_streams(self, group: str) -> list[str]:
        names: list[str] = []
        paginator = self.client("logs").get_paginator("describe_log_streams")
        for page in paginator.paginate(logGroupName=group):
            names.extend(s["logStreamName"] for s in page.get("logStreams", []))
        return sorted(names)

    def log_events(self, group: str, stream: str) -> list[dict[str, Any]]:
        """Every event of a stream, oldest first (``timestamp`` + ``message``)."""
        return list(self._iter_events(group, stream))

    def _iter_events(self, group: str, stream: str) -> Iterator[dict[str, Any]]:
        logs = self.client("logs")
        kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        token = None
        while True:
            if token:
                kwargs["nextToken"] = token
            page = logs.get_log_events(**kwargs)
            yield from page["events"]
            if not page["events"] or page.get("nextForwardToken") == token:
                return
            token = page.get("nextForwardToken")

    def all_log_messages(self, group: str) -> dict[str, list[dict[str, Any]]]:
        """stream -> the JSON-decoded messages of that stream."""
        return {s: [json.loads(e["message"]) for e in self.log_events(group, s)] for s in self.log_streams(group)}

    # -- Firehose -------------------------------------------------------------------------
    def create_delivery_stream(self, stream: str, bucket: str, prefix: str = "firehose/") -> str:
        """A DirectPut stream delivering to ``bucket`` (moto writes one object per call)."""
        self.client("firehose").create_delivery_stream(
            DeliveryStreamName=stream,
            DeliveryStreamType="DirectPut",
            ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::123456789012:role/firehose-test",
                "BucketARN": f"arn:aws:s3:::{bucket}",
                "Prefix": prefix,
            },
        )
        return stream
