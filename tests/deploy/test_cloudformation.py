"""deploy/cloudformation.yaml: cfn-lint clean, and in step with the other files in deploy/."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from cfnlint.api import lint
from cfnlint.config import ManualArgs

from resize_server.website import bucket_policy, routing_rules
from tests.deploy.templates import CDN_TEMPLATE, DEPLOY, FLEET_TEMPLATE, LAMBDA_TEMPLATE, ROOT, Resolver, cfn_lint, load

NETWORK = {"BucketName": "images", "VpcId": "vpc-0123", "LoadBalancerSubnets": ["subnet-a", "subnet-b"],
           "InstanceSubnets": ["subnet-c", "subnet-d"]}
CFN_TO_BOTO = {"RoutingRuleCondition": "Condition", "RedirectRule": "Redirect"}


@pytest.fixture(scope="module")
def template() -> dict:
    return load(FLEET_TEMPLATE)


def resolver(template, **params) -> Resolver:
    return Resolver(template, {**NETWORK, **params})


def resource(template, name, **params):
    r = resolver(template, **params)
    return r.resolve(template["Resources"][name]["Properties"])


def user_data(template, **params) -> str:
    return resource(template, "LaunchTemplate", **params)["LaunchTemplateData"]["UserData"]


def graceful_timeout() -> int:
    """gunicorn's graceful_timeout as the packaged settings define it (imported in a clean process)."""
    env = {**os.environ, "RESIZE_BUCKET": "images"}
    out = subprocess.run([sys.executable, "-c", "import resize_server.gunicorn_conf as c; print(c.graceful_timeout)"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=True)
    return int(out.stdout.strip().splitlines()[-1])


# ---- cfn-lint -----------------------------------------------------------------------

@pytest.mark.parametrize("path", [FLEET_TEMPLATE, LAMBDA_TEMPLATE, CDN_TEMPLATE], ids=["fleet", "lambda-sam", "cloudfront"])
def test_cfn_lint_is_clean_including_informational_checks(path):
    result = cfn_lint(path, extra=("--regions", "us-east-1", "eu-west-1", "ap-southeast-2"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("break_it, rule", [
    # A property CloudFormation does not know.
    (lambda t: t.replace("HealthCheckPath: /healthz", "HealthCheckPath: /healthz\n      HealthCheckPathX: /x"), "E3002"),
    # A Ref to nothing.
    (lambda t: t.replace("Roles: [!Ref InstanceRole]", "Roles: [!Ref NoSuchRole]"), "E1020"),
], ids=["unknown-property", "dangling-ref"])
def test_cfn_lint_catches_a_broken_fleet_template(break_it, rule):
    """The lint is real: the same template with one mistake fails (so a clean run means something)."""
    text = FLEET_TEMPLATE.read_text()
    broken = break_it(text)
    assert broken != text
    rules = {m.rule.id for m in lint(broken, config=ManualArgs(regions=["us-east-1"]))}
    assert rule in rules
    assert not lint(text, config=ManualArgs(regions=["us-east-1"]))


# ---- in step with deploy/ ------------------------------------------------------------

@pytest.mark.parametrize("params, host, protocol", [
    ({}, "<GetAtt LoadBalancer.DNSName>", None),
    ({"ResizeHostName": "resize.example.com"}, "resize.example.com", None),
    ({"ResizeHostName": "resize.example.com", "CertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/x"},
     "resize.example.com", "https"),
], ids=["load-balancer", "cname", "cname-https"])
def test_routing_rules_are_those_of_routing_rules_xml_pointed_at_the_load_balancer(template, params, host, protocol):
    website = resource(template, "ImageBucket", **params)["WebsiteConfiguration"]
    rules = [{CFN_TO_BOTO[k]: v for k, v in rule.items()} for rule in website["RoutingRules"]]
    expected = routing_rules((DEPLOY / "routing_rules.xml").read_text(), host_name=host, protocol=protocol)
    assert rules == expected
    assert resolver(template, **params).resource_exists("HttpsListener") is (protocol == "https")
    assert {r["Condition"]["HttpErrorCodeReturnedEquals"] for r in rules} == {"403", "404"}


def test_bucket_policy_is_bucket_policy_json(template):
    policy = resource(template, "ImageBucketPolicy", BucketName="my-images")["PolicyDocument"]
    # In the template the bucket is a Ref; resolved here to the parameter it is created with.
    policy_text = json.dumps(policy).replace("<Ref ImageBucket>", "my-images")
    expected = bucket_policy((DEPLOY / "bucket_policy.json").read_text(), "my-images")
    assert json.loads(policy_text) == json.loads(expected)
    assert resource(template, "ImageBucketPolicy")["Bucket"] == "<Ref ImageBucket>"


def test_notification_suffixes_are_those_of_bucket_notification_json(template):
    shipped = json.loads((DEPLOY / "pregen" / "bucket_notification.json").read_text())
    shipped_suffixes = sorted(c["Filter"]["Key"]["FilterRules"][0]["Value"] for c in shipped["QueueConfigurations"])
    conf = resource(template, "ImageBucket", Pregeneration="true")["NotificationConfiguration"]
    queues = conf["QueueConfigurations"]
    assert sorted(q["Filter"]["S3Key"]["Rules"][0]["Value"] for q in queues) == shipped_suffixes
    assert {q["Event"] for q in queues} == {"s3:ObjectCreated:*"}
    assert {q["Queue"] for q in queues} == {"<GetAtt PregenQueue.Arn>"}


def test_lifecycle_rule_expires_objects_tagged_like_lifecycle_json(template):
    shipped = json.loads((DEPLOY / "pregen" / "lifecycle.json").read_text())["Rules"][0]
    rule, = resource(template, "ImageBucket", DerivedExpiryDays=30)["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == 30
    assert rule["Status"] == "Enabled"
    assert rule["TagFilters"] == [shipped["Filter"]["Tag"]]
    assert "Prefix" not in rule  # never a prefix: originals and derived objects share folders


def test_expiry_zero_means_no_lifecycle_rule(template):
    assert "LifecycleConfiguration" not in resource(template, "ImageBucket", DerivedExpiryDays=0)


@pytest.mark.parametrize("pregen", ["true", "false"])
def test_pregeneration_parts_exist_only_behind_the_condition(template, pregen):
    r = resolver(template, Pregeneration=pregen)
    on = pregen == "true"
    for name in ("PregenQueue", "PregenDeadLetterQueue", "PregenQueuePolicy"):
        assert r.resource_exists(name) is on
    bucket = r.resolve(template["Resources"]["ImageBucket"]["Properties"])
    assert ("NotificationConfiguration" in bucket) is on
    script = user_data(template, Pregeneration=pregen)
    assert f"if [ '{pregen}' = true ]; then systemctl enable --now resize-worker.service; fi" in script
    assert ("RESIZE_QUEUE_URL=<Ref PregenQueue>\n" in script) is on


def test_queue_redrives_to_the_dead_letter_queue(template):
    queue = resource(template, "PregenQueue", Pregeneration="true", PregenMaxReceiveCount=4)
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": "<GetAtt PregenDeadLetterQueue.Arn>", "maxReceiveCount": 4}
    # The queue policy lets exactly this bucket (by name: no Ref, so no cycle) send events.
    policy = resource(template, "PregenQueuePolicy", Pregeneration="true")["PolicyDocument"]
    statement, = policy["Statement"]
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == "arn:aws:s3:::images"


@pytest.mark.parametrize("pregen", ["true", "false"])
def test_bucket_waits_for_the_queue_policy_even_though_it_is_conditional(template, pregen):
    bucket = resolver(template, Pregeneration=pregen).resolve(template["Resources"]["ImageBucket"])
    assert "DependsOn" not in bucket
    if pregen == "true":
        assert bucket["Metadata"] == {"QueuePolicyFirst": "<Ref PregenQueuePolicy>"}
    else:
        assert bucket["Metadata"] == {}


# ---- least privilege ------------------------------------------------------------------

def role_statements(template, **params) -> list[dict]:
    policy, = resource(template, "InstanceRole", **params)["Policies"]
    return policy["PolicyDocument"]["Statement"]


@pytest.mark.parametrize("pregen, expected", [
    ("false", {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:PutObjectTagging"}),
    ("true", {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:PutObjectTagging", "sqs:ReceiveMessage",
              "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"}),
])
def test_instance_role_allows_these_actions_and_nothing_else(template, pregen, expected):
    statements = role_statements(template, Pregeneration=pregen)
    actions = set()
    for s in statements:
        assert s["Effect"] == "Allow"
        assert s["Resource"] != "*" and "*" not in s["Resource"].split(":::")[0]
        acts = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
        assert not any("*" in a for a in acts)
        actions |= set(acts)
    assert actions == expected
    by_sid = {s["Sid"]: s for s in statements}
    assert by_sid["ReadOriginals"]["Resource"] == "arn:aws:s3:::images/*"
    assert by_sid["ListForCleanNotFound"]["Resource"] == "arn:aws:s3:::images"
    # Writes only objects that carry the derived tag.
    assert by_sid["WriteDerived"]["Condition"] == {"StringEquals": {"s3:RequestObjectTag/resize-derived": "true"}}


def test_instance_role_matches_the_shipped_worker_policy(template):
    shipped = json.loads((DEPLOY / "pregen" / "worker_policy.json").read_text())["Statement"]
    ours = role_statements(template, Pregeneration="true")
    queue_arn = "arn:aws:sqs:us-east-1:123456789012:resize-pregen"
    ours = json.loads(json.dumps(ours).replace("<GetAtt PregenQueue.Arn>", queue_arn))
    assert ours == shipped


# ---- the fleet ------------------------------------------------------------------------

def test_target_group_checks_healthz_and_outlasts_the_graceful_drain(template):
    tg = resource(template, "TargetGroup")
    assert tg["HealthCheckPath"] == "/healthz"
    attrs = {a["Key"]: a["Value"] for a in tg["TargetGroupAttributes"]}
    assert int(attrs["deregistration_delay.timeout_seconds"]) > graceful_timeout()


def test_autoscaling_group_tracks_cpu_and_replaces_unhealthy_instances(template):
    asg = resource(template, "AutoScalingGroup", FleetMinSize=3, FleetMaxSize=9)
    assert (asg["MinSize"], asg["MaxSize"]) == (3, 9)
    assert asg["HealthCheckType"] == "ELB"
    assert asg["TargetGroupARNs"] == ["<Ref TargetGroup>"]
    policy = resource(template, "CpuTargetTracking", CpuTargetPercent=55)
    assert policy["PolicyType"] == "TargetTrackingScaling"
    tracking = policy["TargetTrackingConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ASGAverageCPUUtilization"
    assert tracking["TargetValue"] == 55


@pytest.mark.parametrize("params", [
    {},
    {"Pregeneration": "true", "RedisEndpoint": "cache.example:6379", "ConstraintsUrl": "https://x/constraints.txt",
     "Presets": "thumb=50x50,small=200x200"},
], ids=["defaults", "everything-on"])
def test_user_data_is_valid_bash(template, params):
    script = user_data(template, **params)
    assert script.startswith("#!/bin/bash\nset -euxo pipefail\n")
    result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_user_data_builds_the_per_instance_topology(template):
    script = user_data(template, Pregeneration="true", RedisEndpoint="cache.example:6379",
                       Presets="thumb=50x50", AllowedSizes="200x200", PackageSpec="resize-server==9.9")
    env = script.split("cat > /etc/resize-server/env <<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0].splitlines()
    assert env == [
        "RESIZE_BUCKET=images",
        "RESIZE_REGION=us-east-1",
        "RESIZE_ALLOWED_SIZES=200x200",
        "RESIZE_PRESETS=thumb=50x50",
        "RESIZE_REDIS_URL=redis://cache.example:6379/0",
        "RESIZE_QUEUE_URL=<Ref PregenQueue>",
        "RESIZE_BIND=unix:/run/resize-server/gunicorn.sock",
        "MAGICK_CONFIGURE_PATH=/opt/resize-server/share/resize-server/deploy",
    ]
    assert "apt-get install -y -q --no-install-recommends python3-venv libmagickwand-6.q16-6 nginx gettext-base" in script
    assert "/opt/resize-server/bin/pip install --no-cache-dir --disable-pip-version-check  'resize-server==9.9'" in script
    assert "systemctl enable --now resize-server.service resize-front.service" in script
    # The units it installs are the ones in deploy/, shipped in the package's data files.
    setup_cfg = (ROOT / "setup.cfg").read_text()
    for unit in ("resize-server.service", "resize-front.service", "resize-worker.service"):
        assert f'"$share/{unit}"' in script
        assert (DEPLOY / unit).is_file()
        assert f"deploy/{unit}" in setup_cfg
    # The same socket the systemd unit's runtime directory provides.
    assert "RuntimeDirectory=resize-server" in (DEPLOY / "resize-server.service").read_text()


@pytest.mark.parametrize("resource_name, attributes_file", [
    ("PregenQueue", "queue.json"), ("PregenDeadLetterQueue", "dead_letter_queue.json")])
def test_queue_attributes_are_those_of_the_shipped_json(template, resource_name, attributes_file):
    shipped = json.loads((DEPLOY / "pregen" / attributes_file).read_text())
    ours = resource(template, resource_name, Pregeneration="true")
    for name, value in shipped.items():
        if name == "RedrivePolicy":
            assert int(json.loads(value)["maxReceiveCount"]) == int(
                template["Parameters"]["PregenMaxReceiveCount"]["Default"])
        else:
            assert str(ours[name]).lower() == value.lower(), name


def test_user_data_fills_the_nginx_template_consistently_with_the_units_and_the_balancer(template):
    script = user_data(template)
    exported = dict(re.findall(r"\b(RESIZE_NGINX_[A-Z0-9_]+)=(\S+)", script))
    substituted = re.search(r"envsubst '([^']+)'", script).group(1).split()
    # envsubst is given exactly the variables the script sets (nginx's own $variables stay).
    assert substituted == ["${%s}" % name for name in exported]
    assert '< "$share/nginx.conf" > /etc/resize-server/nginx.conf' in script
    front = (DEPLOY / "resize-front.service").read_text()
    assert "-c /etc/resize-server/nginx.conf" in front
    # The run directory is the front unit's runtime directory, temp folders included.
    run_dir = exported["RESIZE_NGINX_RUN_DIR"]
    runtime = re.search(r"^RuntimeDirectory=(.+)$", front, re.M).group(1).split()
    assert run_dir == "/run/" + runtime[0]
    assert {f"{runtime[0]}/{d}" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")} <= set(runtime)
    # nginx proxies to the socket gunicorn binds; the balancer reaches nginx's resize port.
    assert exported["RESIZE_NGINX_UPSTREAM"] == "unix:/run/resize-server/gunicorn.sock"
    assert "RESIZE_BIND=unix:/run/resize-server/gunicorn.sock" in script
    port = int(exported["RESIZE_NGINX_LISTEN"])
    assert resource(template, "TargetGroup")["Port"] == port
    ingress, = resource(template, "InstanceSecurityGroup")["SecurityGroupIngress"]
    assert (ingress["FromPort"], ingress["ToPort"]) == (port, port)
    assert ingress["SourceSecurityGroupId"] == "<Ref LoadBalancerSecurityGroup>"
    # The image-domain server of the template is unused behind the website endpoint: loopback only.
    assert exported["RESIZE_NGINX_IMAGE_LISTEN"].startswith("127.0.0.1:")


@pytest.mark.parametrize("params", [
    {},
    {"Presets": "thumb=50x50,small=200x200,cover=1200x630:fill", "AllowedSizes": "200x200,x200",
     "RedisEndpoint": "cache.example:6379", "Pregeneration": "true"},
], ids=["defaults", "presets-redis-pregen"])
def test_the_env_file_the_user_data_writes_is_a_valid_configuration(template, params):
    from resize_server.config import Settings

    script = user_data(template, **params)
    lines = script.split("cat > /etc/resize-server/env <<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0].splitlines()
    env = dict(line.split("=", 1) for line in lines)
    settings = Settings.from_env(env).validate()
    assert settings.bucket == "images"
    fields = {"RESIZE_" + name.upper() for name in Settings.__dataclass_fields__}
    # Every RESIZE_ line is a setting, except the two read by `serve` (gunicorn) and the worker unit.
    # RESIZE_QUEUE_URL is read by the worker command line (--queue-url), not by Settings
    assert {k for k in env if k.startswith("RESIZE_")} - fields <= {"RESIZE_QUEUE_URL"}
