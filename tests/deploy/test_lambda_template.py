"""deploy/lambda/: the SAM template (cfn-lint runs in test_cloudformation.py) and the Dockerfile.

What is not tested here: building the image (no Docker engine on this machine). The handler
itself is tested against real event shapes and moto in the Lambda adapter's own tests.
"""

from __future__ import annotations

import configparser
import json
import shlex

import pytest
from packaging.requirements import Requirement

from resize_server.website import bucket_policy, routing_rules
from tests.deploy.templates import DEPLOY, LAMBDA_TEMPLATE, ROOT, Resolver, load

PARAMS = {"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/resize:1", "BucketName": "images"}
DOCKERFILE = DEPLOY / "lambda" / "Dockerfile"
CFN_TO_BOTO = {"RoutingRuleCondition": "Condition", "RedirectRule": "Redirect"}


@pytest.fixture(scope="module")
def template() -> dict:
    return load(LAMBDA_TEMPLATE)


def props(template, name, **params):
    return Resolver(template, {**PARAMS, **params}).resolve(template["Resources"][name]["Properties"])


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            word, _, rest = current.partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def test_function_is_a_container_image_with_the_one_handler(template):
    function = props(template, "ResizeFunction")
    assert template["Resources"]["ResizeFunction"]["Type"] == "AWS::Serverless::Function"
    assert function["PackageType"] == "Image"
    assert function["ImageUri"] == PARAMS["ImageUri"]
    cmd = json.loads(dict(dockerfile())["CMD"])
    assert function["ImageConfig"]["Command"] == cmd == ["resize_server.aws_lambda.handler"]
    assert function["Role"] == "<GetAtt FunctionRole.Arn>"  # not SAM's default (Resource "*") policies
    env = function["Environment"]["Variables"]
    assert env["RESIZE_BUCKET"] == "images"
    assert all(name.startswith("RESIZE_") for name in env)


def test_uploads_reach_the_function_through_sqs_with_partial_batch_failures(template):
    events = props(template, "ResizeFunction")["Events"]
    sqs = events["Uploads"]
    assert sqs["Type"] == "SQS"
    assert sqs["Properties"]["Queue"] == "<GetAtt PregenQueue.Arn>"
    assert sqs["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue = props(template, "PregenQueue", MaxReceiveCount=3)
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": "<GetAtt PregenDeadLetterQueue.Arn>", "maxReceiveCount": 3}
    # A batch still in work must not become visible to another invocation.
    assert queue["VisibilityTimeout"] >= 6 * props(template, "ResizeFunction")["Timeout"]
    shipped = json.loads((DEPLOY / "pregen" / "bucket_notification.json").read_text())["QueueConfigurations"]
    queues = props(template, "ImageBucket")["NotificationConfiguration"]["QueueConfigurations"]
    assert sorted(q["Filter"]["S3Key"]["Rules"][0]["Value"] for q in queues) == \
        sorted(c["Filter"]["Key"]["FilterRules"][0]["Value"] for c in shipped)
    assert {q["Queue"] for q in queues} == {"<GetAtt PregenQueue.Arn>"}


def test_api_gateway_routes_with_binary_media_types(template):
    api = props(template, "ResizeApi")
    assert api["BinaryMediaTypes"] == ["*~1*"]  # "*/*" in SAM's escaping
    routes = {(e["Properties"]["Method"], e["Properties"]["Path"])
              for e in props(template, "ResizeFunction")["Events"].values() if e["Type"] == "Api"}
    assert routes == {("post", "/transform"), ("get", "/resize.php"), ("get", "/{proxy+}")}
    assert {e["Properties"]["RestApiId"] for e in props(template, "ResizeFunction")["Events"].values()
            if e["Type"] == "Api"} == {"<Ref ResizeApi>"}


def test_website_redirects_to_the_api_with_the_rules_of_routing_rules_xml(template):
    rules = [{CFN_TO_BOTO[k]: v for k, v in r.items()}
             for r in props(template, "ImageBucket", StageName="v1")["WebsiteConfiguration"]["RoutingRules"]]
    expected = routing_rules((DEPLOY / "routing_rules.xml").read_text(),
                             host_name="<Ref ResizeApi>.execute-api.us-east-1.amazonaws.com", protocol="https")
    for rule in expected:  # API Gateway's stage comes first in the path; the function sees /resize.php
        rule["Redirect"]["ReplaceKeyPrefixWith"] = "v1/" + rule["Redirect"]["ReplaceKeyPrefixWith"]
    assert rules == expected
    policy = json.dumps(props(template, "ImageBucketPolicy")["PolicyDocument"]).replace("<Ref ImageBucket>", "images")
    assert json.loads(policy) == json.loads(bucket_policy((DEPLOY / "bucket_policy.json").read_text(), "images"))


def test_function_role_is_the_worker_policy_plus_its_own_logs(template):
    statements = props(template, "FunctionRole")["Policies"][0]["PolicyDocument"]["Statement"]
    shipped = json.loads((DEPLOY / "pregen" / "worker_policy.json").read_text())["Statement"]
    shipped = json.loads(json.dumps(shipped).replace("arn:aws:sqs:us-east-1:123456789012:resize-pregen",
                                                     "<GetAtt PregenQueue.Arn>"))
    logs = [s for s in statements if s["Sid"] == "OwnLogs"]
    assert [s for s in statements if s["Sid"] != "OwnLogs"] == shipped
    assert logs == [{"Sid": "OwnLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                     "Resource": "<GetAtt FunctionLogGroup.Arn>"}]


def test_dockerfile_builds_the_documented_image():
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim-bookworm")
    run = " ".join(args for word, args in steps if word == "RUN")
    assert "apt-get install -y --no-install-recommends libmagickwand-6.q16-6" in run
    assert "pip install --no-cache-dir --disable-pip-version-check -c constraints.txt '.[lambda]'" in run
    for word, args in steps:  # everything it copies exists in the repository (build context = root)
        if word == "COPY":
            *sources, _dest = shlex.split(args)
            assert all((ROOT / s).exists() for s in sources), sources
    assert dict(steps)["ENTRYPOINT"] == '["python", "-m", "awslambdaric"]'
    env = dict(item.split("=", 1) for item in shlex.split(" ".join(a for w, a in steps if w == "ENV")))
    # pip puts the package's data files under sys.prefix (/usr/local in this base image).
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    data = {k: v.split() for k, v in cfg["options.data_files"].items()}
    assert env["MAGICK_CONFIGURE_PATH"] == "/usr/local/" + "share/resize-server/deploy"
    assert "deploy/policy.xml" in data["share/resize-server/deploy"]


def test_the_runtime_interface_client_is_pinned_within_its_range():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    wanted = [Requirement(line) for line in cfg["options.extras_require"]["lambda"].split()]
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().split())
    assert [r.name for r in wanted] == ["awslambdaric"]
    for requirement in wanted:
        assert requirement.specifier.contains(pins[requirement.name]), (requirement, pins.get(requirement.name))


def test_the_function_environment_is_a_valid_configuration(template):
    from resize_server.config import Settings

    env = props(template, "ResizeFunction")["Environment"]["Variables"]
    fields = {"RESIZE_" + name.upper() for name in Settings.__dataclass_fields__}
    assert set(env) <= fields
    settings = Settings.from_env(env).validate()
    assert settings.bucket == "images"
