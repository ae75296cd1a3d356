"""The public moto fixtures that plugin authors rely on do what they promise."""

from __future__ import annotations

import os
import time

import boto3

from capture_ext.testing.aws import AwsHelper, MotoServer


def test_aws_env_points_plain_botocore_at_moto(aws_env: dict[str, str], aws: AwsHelper) -> None:
    assert os.environ["AWS_ENDPOINT_URL"] == aws_env["AWS_ENDPOINT_URL"].rstrip("/")
    assert aws_env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    aws.create_bucket("seen-through-env")
    s3 = boto3.client("s3")  # no endpoint, no credentials given: all from the environment
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["seen-through-env"]


def test_reset_forgets_everything(moto_server: MotoServer, aws: AwsHelper) -> None:
    aws.create_bucket("short-lived")
    aws.create_log_group("/short/lived")
    moto_server.reset()
    assert aws.client("s3").list_buckets()["Buckets"] == []
    assert aws.client("logs").describe_log_groups()["logGroups"] == []


def test_helpers_read_back_what_was_written(aws: AwsHelper, tmp_path) -> None:
    import gzip

    aws.create_bucket("read-back")
    aws.client("s3").put_object(Bucket="read-back", Key="p/x.jsonl.gz", Body=gzip.compress(b'{"a":1}\n{"a":2}\n'))
    assert aws.read_all_jsonl("read-back", "p/") == {"p/x.jsonl.gz": [{"a": 1}, {"a": 2}]}
    assert aws.download("read-back", "p/", str(tmp_path)) == [str(tmp_path / "p" / "x.jsonl.gz")]
    aws.create_log_group("/g")
    logs = aws.client("logs")
    logs.create_log_stream(logGroupName="/g", logStreamName="s")
    logs.put_log_events(
        logGroupName="/g",
        logStreamName="s",
        logEvents=[{"timestamp": int(time.time() * 1000) + i, "message": f'{{"i": {i}}}'} for i in range(3)],
    )
    assert aws.log_streams("/g") == ["s"]
    assert aws.all_log_messages("/g") == {"s": [{"i": 0}, {"i": 1}, {"i": 2}]}
