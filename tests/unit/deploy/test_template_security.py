"""The security properties of the deployed stack, checked on the template SAM would deploy.

aws-sam-translator (the code behind ``sam deploy``'s transform, offline) expands template.yaml to
plain CloudFormation; the conditions are then resolved for a set of parameter values, the way
CloudFormation resolves them, so each assertion is about the resources a stack would really
get: every API method authenticated (SigV4 or an API key), the stage throttled and
access-logged into a log group that outlives the stack, the function's concurrency bounded,
and the captured data kept by ``make delete``.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from boto3.session import Session
from cfnlint.decode import decode_str
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

ROOT = Path(__file__).resolve().parents[3]
TEXT = (ROOT / "template.yaml").read_text()
NO_VALUE = object()


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    decoded, problems = decode_str(TEXT)
    assert not problems
    return decoded


def packaged(source: dict[str, Any]) -> dict[str, Any]:
    """What `sam package` hands to the transform: local artifacts replaced by their uploaded copies."""
    template = copy.deepcopy(source)
    for name, res in template["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::Serverless::Function" and props.get("PackageType") == "Image":
            props["ImageUri"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/nlp-qa:inferencefunction-python3.12-v1"
        elif res["Type"] == "AWS::Serverless::LayerVersion":
            props["ContentUri"] = f"s3://sam-artifacts/nlp-qa/{name}.zip"
    return template


def translate(source: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    """SAM's transform, as `sam deploy` runs it (no AWS call: the template names no managed policy)."""
    translator = Translator(managed_policy_map={}, sam_parser=Parser(), boto_session=Session(region_name="us-east-1"))
    result: dict[str, Any] = translator.translate(
        sam_template=packaged(source), parameter_values=dict(params), get_managed_policy_map=lambda: {}
    )
    return result


class Resolver:
    """CloudFormation's evaluation of Ref (parameters), Fn::If / Equals / Not / Join / Split."""

    def __init__(self, template: dict[str, Any], overrides: dict[str, str]) -> None:
        self.params = {name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()}
        self.params.update(overrides)
        self.params["AWS::StackName"] = overrides.get("AWS::StackName", "nlp-qa")
        self.conditions = {name: bool(self.value(body)) for name, body in template.get("Conditions", {}).items()}

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.value(n) for n in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                if arg == "AWS::NoValue":
                    return NO_VALUE
                return self.params.get(arg, {"Ref": arg})
            if key == "Fn::If":
                name, yes, no = arg
                return self.value(yes if self.conditions[name] else no)
            if key == "Fn::Equals":
                left, right = (self.value(a) for a in arg)
                return left == right
            if key == "Fn::Not":
                return not self.value(arg[0])
            if key == "Fn::Split":
                sep, text = arg
                resolved = self.value(text)
                return resolved.split(sep) if isinstance(resolved, str) else node
            if key == "Fn::Join":
                sep, parts = arg
                resolved = self.value(parts)
                return sep.join(resolved) if all(isinstance(p, str) for p in resolved) else node
            if key == "Condition":
                return self.conditions[arg]
        return {k: v for k, v in ((k, self.value(v)) for k, v in node.items()) if v is not NO_VALUE}

    def resources(self, template: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The resources a stack with these parameters gets, intrinsics resolved where they can be."""
        out = {}
        for name, res in template["Resources"].items():
            if "Condition" in res and not self.conditions[res["Condition"]]:
                continue
            out[name] = {**res, "Properties": self.value(res.get("Properties", {}))}
        return out


def deployed(source: dict[str, Any], **params: str) -> dict[str, dict[str, Any]]:
    expanded = translate(source, {k: v for k, v in params.items() if not k.startswith("AWS::")})
    return Resolver(expanded, params).resources(expanded)


def of_type(resources: dict[str, dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in resources.items() if res["Type"] == kind}


def ref_name(value: Any) -> str:
    """The logical id behind Ref / Fn::GetAtt."""
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return str(value["Fn::GetAtt"][0])
    raise AssertionError(f"not a reference: {value!r}")


@pytest.mark.parametrize("auth", ["AWS_IAM", "API_KEY"])
def test_every_api_method_requires_authentication(source: dict[str, Any], auth: str) -> None:
    resources = deployed(source, ApiAuth=auth)
    methods = of_type(resources, "AWS::ApiGateway::Method")
    assert methods, "no API method"
    # Only the one API: a SAM Api event would add an implicit ServerlessRestApi, open by default.
    assert set(of_type(resources, "AWS::ApiGateway::RestApi")) == {"InferenceApi"}
    for name, method in methods.items():
        props = method["Properties"]
        if auth == "AWS_IAM":
            assert props["AuthorizationType"] == "AWS_IAM", name
            assert props["ApiKeyRequired"] is False
        else:
            assert props["AuthorizationType"] == "NONE", name
            assert props["ApiKeyRequired"] is True, name
    keys = of_type(resources, "AWS::ApiGateway::ApiKey")
    plans = of_type(resources, "AWS::ApiGateway::UsagePlan")
    if auth == "AWS_IAM":
        assert not keys and not plans
    else:
        (plan,) = plans.values()
        assert plan["Properties"]["Throttle"] == {"RateLimit": "10", "BurstLimit": "20"}
        assert plan["Properties"]["Quota"] == {"Limit": "10000", "Period": "DAY"}
        (link,) = of_type(resources, "AWS::ApiGateway::UsagePlanKey").values()
        assert ref_name(link["Properties"]["KeyId"]) in keys


def test_aws_iam_is_the_default(source: dict[str, Any]) -> None:
    assert source["Parameters"]["ApiAuth"]["Default"] == "AWS_IAM"
    (method,) = of_type(deployed(source), "AWS::ApiGateway::Method").values()
    assert method["Properties"]["AuthorizationType"] == "AWS_IAM"


@pytest.mark.parametrize("auth", ["AWS_IAM", "API_KEY"])
def test_the_stage_serves_a_deployment_of_the_chosen_auth(source: dict[str, Any], auth: str) -> None:
    """Switching ApiAuth must redeploy: a stage keeps serving the snapshot it points at."""
    resources = deployed(source, ApiAuth=auth)
    (deployment,) = of_type(resources, "AWS::ApiGateway::Deployment")
    (stage,) = of_type(resources, "AWS::ApiGateway::Stage").values()
    assert ref_name(stage["Properties"]["DeploymentId"]) == deployment
    assert deployment == {"AWS_IAM": "ApiDeploymentIam", "API_KEY": "ApiDeploymentApiKey"}[auth]


def test_stage_is_throttled_traced_and_access_logged_to_a_kept_group(source: dict[str, Any]) -> None:
    resources = deployed(source, ApiThrottlingRateLimit="7", ApiThrottlingBurstLimit="3")
    (stage,) = of_type(resources, "AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    (setting,) = props["MethodSettings"]
    assert (setting["ResourcePath"], setting["HttpMethod"]) == ("/*", "*")
    assert (setting["ThrottlingRateLimit"], setting["ThrottlingBurstLimit"]) == ("7", "3")
    assert props["TracingEnabled"] is True
    group = ref_name(props["AccessLogSetting"]["DestinationArn"])
    assert resources[group]["Type"] == "AWS::Logs::LogGroup"
    assert resources[group]["DeletionPolicy"] == "Retain"
    # The documented format: one JSON object per request, with who called.
    fields = re.findall(r'"(\w+)":"\$context\.([\w.]+)"', props["AccessLogSetting"]["Format"])
    assert ("requestId", "requestId") in fields
    assert {"sourceIp", "userArn", "apiKeyId", "status"} <= {name for name, _ in fields}
    doc = (ROOT / "docs" / "deployment.md").read_text()
    for name, variable in fields:
        assert f"`{name}`" in doc and f"$context.{variable}" in doc, name
    # API Gateway logs only through the account's CloudWatch role, which the stage waits for.
    depends = stage["DependsOn"]
    assert "ApiGatewayAccount" in ([depends] if isinstance(depends, str) else depends)


def test_function_has_reserved_concurrency_and_the_chosen_architecture(source: dict[str, Any]) -> None:
    resources = deployed(source, ReservedConcurrency="3", Architecture="arm64")
    (function,) = of_type(resources, "AWS::Lambda::Function").values()
    assert function["Properties"]["ReservedConcurrentExecutions"] == "3"
    assert function["Properties"]["Architectures"] == ["arm64"]
    # Lambda keeps an account's last 10 (new accounts) or 100 executions unreserved: "none" must deploy there.
    (unreserved,) = of_type(deployed(source, ReservedConcurrency="none"), "AWS::Lambda::Function").values()
    assert "ReservedConcurrentExecutions" not in unreserved["Properties"]
    (permission,) = of_type(resources, "AWS::Lambda::Permission").values()
    assert permission["Properties"]["Principal"] == "apigateway.amazonaws.com"
    assert "/*/POST/nlp-qa" in str(permission["Properties"]["SourceArn"])


def test_make_delete_keeps_the_captured_data_and_the_access_log(source: dict[str, Any]) -> None:
    resources = deployed(source, CaptureSinks="s3_jsonl,cloudwatch")
    for name in ("CaptureBucket", "CaptureLogGroup", "ApiAccessLogGroup"):
        assert resources[name]["DeletionPolicy"] == "Retain", name
        assert resources[name]["UpdateReplacePolicy"] == "Retain", name
        # A kept group with a fixed name would make the next deploy of the same stack fail.
        assert "LogGroupName" not in resources[name]["Properties"], name
    # What holds no data goes with the stack.
    assert resources["FunctionLogGroup"].get("DeletionPolicy", "Delete") == "Delete"


@pytest.mark.parametrize("versioning", ["Enabled", "Suspended"])
def test_bucket_versioning_is_a_parameter_and_old_versions_expire(source: dict[str, Any], versioning: str) -> None:
    bucket = deployed(source, BucketVersioning=versioning)["CaptureBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": versioning}
    for rule in bucket["LifecycleConfiguration"]["Rules"]:
        assert "NoncurrentDays" in rule["NoncurrentVersionExpiration"], rule["Id"]


def test_log_kms_key_is_optional(source: dict[str, Any]) -> None:
    key = "arn:aws:kms:us-east-1:123456789012:key/0b1f5c2e-1111-2222-3333-444455556666"
    with_key = of_type(deployed(source, LogKmsKeyArn=key), "AWS::Logs::LogGroup")
    without = of_type(deployed(source), "AWS::Logs::LogGroup")
    assert {g["Properties"]["KmsKeyId"] for g in with_key.values()} == {key}
    assert all("KmsKeyId" not in g["Properties"] for g in without.values())


@pytest.mark.parametrize(
    ("stack", "override", "database"),
    [("nlp-qa", "", "nlp_qa_capture"), ("team-b-qa", "", "team_b_qa_capture"), ("nlp-qa", "shared_db", "shared_db")],
)
def test_glue_database_is_derived_from_the_stack_name(
    source: dict[str, Any], stack: str, override: str, database: str
) -> None:
    """Two stacks in one account and region get two databases, unless told otherwise."""
    resources = deployed(source, **{"AWS::StackName": stack, "GlueDatabaseName": override})
    (db,) = of_type(resources, "AWS::Glue::Database").values()
    assert db["Properties"]["DatabaseInput"]["Name"] == database
