"""template.yaml: lints clean, least privilege, and agrees with the code that writes the data.

``make template-lint`` also runs ``cfn-lint`` and ``sam validate --lint`` on it; the checks here are
the ones a linter cannot know: that the IAM grants match what the sinks do, that every
``CAPTURE_*`` variable exists, and that the Glue tables describe the keys and columns the sinks
actually write.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint
from cfnlint.decode import decode_str

from capture_ext.core.config import VARIABLES
from capture_ext.core.config_check import builtin_sink_variables
from capture_ext.core.records import ENRICHED_FIELDS, KNOWN_FIELDS
from capture_ext.sinks._layout import PARTITION_COLUMNS, object_key, partition_path
from capture_ext.sinks._parquet import COLUMNS as PARQUET_COLUMNS

ROOT = Path(__file__).resolve().parents[3]
TEXT = (ROOT / "template.yaml").read_text()
LINT_CONFIG = ManualArgs(regions=["us-east-1"])
ARROW_TO_ATHENA = {"string": "string", "double": "double", "int64": "bigint", "timestamp[ms, tz=UTC]": "timestamp"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, problems = decode_str(TEXT)
    assert not problems
    return decoded


def resources(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == kind}


def policies(template: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """(condition or None, policy) for every inline policy of the function's role."""
    out = []
    for policy in template["Resources"]["InferenceFunctionRole"]["Properties"]["Policies"]:
        if "Fn::If" in policy:
            condition, when_true, when_false = policy["Fn::If"]
            assert when_false == {"Ref": "AWS::NoValue"}
            out.append((condition, when_true))
        else:
            out.append((None, policy))
    return out


def sub_text(value: Any) -> str:
    return value["Fn::Sub"] if isinstance(value, dict) and "Fn::Sub" in value else str(value)


def test_cfn_lint_finds_nothing() -> None:
    assert [str(m) for m in lint(TEXT, config=LINT_CONFIG)] == []


def test_cfn_lint_would_catch_a_broken_template() -> None:
    broken = TEXT.replace("PackageType: Image", "PackageType: Imagee", 1)
    assert any("Imagee" in str(m) for m in lint(broken, config=LINT_CONFIG))


def test_role_grants_only_what_the_sinks_need(template: dict[str, Any]) -> None:
    granted: dict[str, tuple[str | None, list[str]]] = {}
    for condition, policy in policies(template):
        for statement in policy["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resource = statement["Resource"]
            assert "*" not in str(resource) or "${CaptureBucket.Arn}/${CaptureS3Prefix}/*" in str(resource)
            for action in actions:
                assert "*" not in action
                granted.setdefault(action, (condition, []))[1].append(str(resource))
    assert set(granted) == {"logs:CreateLogStream", "logs:PutLogEvents", "s3:PutObject", "firehose:PutRecordBatch"}
    # S3: writes only, and only under the capture prefix; no read, list or delete.
    assert granted["s3:PutObject"][1] == [str({"Fn::Sub": "${CaptureBucket.Arn}/${CaptureS3Prefix}/*"})]
    # Firehose only when a stream is configured.
    assert granted["firehose:PutRecordBatch"][0] == "HasFirehose"
    assert template["Conditions"]["HasFirehose"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "CaptureFirehoseStreamName"}, ""]}]
    }
    # Logs: the function's own group, plus the capture group only when the cloudwatch sink is on.
    log_policies = {
        condition: policy["PolicyDocument"]["Statement"][0]["Resource"]
        for condition, policy in policies(template)
        if "logs:PutLogEvents" in str(policy)
    }
    assert log_policies == {
        None: {"Fn::GetAtt": ["FunctionLogGroup", "Arn"]},
        "UsesCloudWatch": {"Fn::GetAtt": ["CaptureLogGroup", "Arn"]},
    }
    assert "logs:CreateLogGroup" not in granted


def test_function_is_an_image_behind_post_nlp_qa(template: dict[str, Any]) -> None:
    function = template["Resources"]["InferenceFunction"]
    props = function["Properties"]
    assert props["PackageType"] == "Image"
    assert props["Architectures"] == [{"Ref": "Architecture"}]
    assert template["Parameters"]["Architecture"]["AllowedValues"] == ["x86_64", "arm64"]
    assert props["MemorySize"] == {"Ref": "FunctionMemorySize"}
    assert props["Timeout"] == {"Ref": "FunctionTimeout"}
    # The API is plain API Gateway (tests/unit/deploy/test_template_security.py): no SAM event.
    assert "Events" not in props
    method = template["Resources"]["NlpQaPost"]["Properties"]
    assert method["HttpMethod"] == "POST"
    assert template["Resources"]["NlpQaResource"]["Properties"]["PathPart"] == "nlp-qa"
    assert "${InferenceFunction.Arn}" in sub_text(method["Integration"]["Uri"])
    assert (ROOT / function["Metadata"]["Dockerfile"]).is_file()


def test_capture_environment_uses_real_variables(template: dict[str, Any]) -> None:
    env = template["Resources"]["InferenceFunction"]["Properties"]["Environment"]["Variables"]
    known = {var.name for var in VARIABLES + builtin_sink_variables()[0]}
    assert set(env) <= known, set(env) - known
    assert env["CAPTURE_SINKS"] == {"Ref": "CaptureSinks"}
    assert env["CAPTURE_FLUSH_INTERVAL_S"] == {"Ref": "CaptureFlushIntervalSeconds"}
    assert env["CAPTURE_SAMPLE_RATE"] == {"Ref": "CaptureSampleRate"}
    assert env["CAPTURE_S3_BUCKET"] == {"Ref": "CaptureBucket"}
    assert env["CAPTURE_LOG_GROUP"] == {"Ref": "CaptureLogGroup"}
    # The template creates the group, so the role needs no logs:CreateLogGroup.
    assert env["CAPTURE_LOG_GROUP_CREATE"] == "0"


def test_bucket_is_private_encrypted_tls_only_and_expires_data(template: dict[str, Any]) -> None:
    props = template["Resources"]["CaptureBucket"]["Properties"]
    sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert sse["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    rules = {rule["Id"]: rule for rule in props["LifecycleConfiguration"]["Rules"]}
    assert rules["ExpireCapturedData"]["ExpirationInDays"] == {"Ref": "CaptureRetentionDays"}
    (statement,) = template["Resources"]["CaptureBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_log_groups_have_retention_and_optional_kms(template: dict[str, Any]) -> None:
    groups = resources(template, "AWS::Logs::LogGroup")
    assert set(groups) == {"FunctionLogGroup", "CaptureLogGroup", "ApiAccessLogGroup"}
    for group in groups.values():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        assert group["Properties"]["KmsKeyId"] == {
            "Fn::If": ["HasLogKmsKey", {"Ref": "LogKmsKeyArn"}, {"Ref": "AWS::NoValue"}]
        }


def table(template: dict[str, Any], name: str) -> dict[str, Any]:
    result: dict[str, Any] = template["Resources"][name]["Properties"]["TableInput"]
    return result


def test_parquet_table_matches_the_parquet_sink_schema(template: dict[str, Any]) -> None:
    columns = table(template, "ParquetTable")["StorageDescriptor"]["Columns"]
    assert [(c["Name"], c["Type"]) for c in columns] == [
        (name, ARROW_TO_ATHENA[kind]) for name, kind in PARQUET_COLUMNS
    ]


def test_jsonl_table_has_every_enriched_record_field(template: dict[str, Any]) -> None:
    columns = {c["Name"] for c in table(template, "JsonlTable")["StorageDescriptor"]["Columns"]}
    assert columns == set(KNOWN_FIELDS) | set(ENRICHED_FIELDS)


@pytest.mark.parametrize(
    ("resource", "fmt", "extension"), [("JsonlTable", "jsonl", "jsonl.gz"), ("ParquetTable", "parquet", "parquet")]
)
def test_partition_projection_finds_the_keys_the_sinks_write(
    template: dict[str, Any], resource: str, fmt: str, extension: str
) -> None:
    spec = table(template, resource)
    params = spec["Parameters"]
    assert [k["Name"] for k in spec["PartitionKeys"]] == list(PARTITION_COLUMNS)
    assert params["projection.enabled"] == "true"
    function_name = sub_text(template["Resources"]["InferenceFunction"]["Properties"]["FunctionName"])
    assert sub_text(params["projection.function.values"]) == function_name

    stack, bucket, prefix = "demo", "my-bucket", "inference-capture"
    moment = datetime(2026, 11, 22, 4, 1, 7, tzinfo=UTC)

    def resolve(text: str, **values: str) -> str:
        text = text.replace("${AWS::StackName}", stack).replace("${CaptureBucket}", bucket)
        text = text.replace("${CaptureS3Prefix}", prefix)
        return re.sub(r"\$\{!(\w+)\}", lambda m: values[m.group(1)], text)

    function = resolve(function_name)
    location = resolve(
        sub_text(params["storage.location.template"]),
        function=function,
        dt=moment.strftime(
            params["projection.dt.format"].replace("yyyy", "%Y").replace("MM", "%m").replace("dd", "%d")
        ),
        hour=f"{moment.hour:0{int(params['projection.hour.digits'])}d}",
    )
    key = object_key(prefix, fmt, partition_path(function, moment), "envid-00000001", extension)
    assert f"s3://{bucket}/{key}".rsplit("/", 1)[0] == location
    assert location.startswith(resolve(sub_text(spec["StorageDescriptor"]["Location"])))


def test_outputs_name_the_api_bucket_and_tables(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert "/nlp-qa" in sub_text(outputs["ApiUrl"]["Value"])
    assert "${InferenceApi}" in sub_text(outputs["ApiUrl"]["Value"])
    names = ("CaptureBucketName", "AthenaJsonlTable", "AthenaParquetTable", "ApiAccessLogGroupName", "GlueDatabase")
    for name in names:
        assert name in outputs
    for version in ("311", "312", "313"):
        assert outputs[f"CaptureExtensionLayerPy{version}Arn"]["Value"] == {"Ref": f"CaptureExtensionLayerPy{version}"}


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_one_layer_per_python_for_the_stacks_architecture(template: dict[str, Any], version: str) -> None:
    """`make stack-layers` copies layer-build/<ARCH>/python<version>/layer to what ContentUri names."""
    layer = template["Resources"][f"CaptureExtensionLayerPy{version.replace('.', '')}"]
    props = layer["Properties"]
    assert layer["Condition"] == "ShouldPublishLayer"
    assert props["CompatibleRuntimes"] == [f"python{version}"]
    assert props["CompatibleArchitectures"] == [{"Ref": "Architecture"}]
    assert props["ContentUri"].rstrip("/") == f"layer-build/stack/python{version}"
    makefile = (ROOT / "Makefile").read_text()
    assert f"LAYER_PYTHONS := {' '.join(['3.11', '3.12', '3.13'])}" in makefile
    assert "layer-build/$(ARCH)/python$$py/layer layer-build/stack/python$$py" in makefile
