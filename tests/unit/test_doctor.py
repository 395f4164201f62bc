"""``resize-server doctor`` against moto's S3 and SQS (which, unlike s3rver, implement bucket policies)."""

from __future__ import annotations

import json

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws

from resize_server.cli import main
from resize_server.doctor import policy_problems
from resize_server.website import bucket_policy, read_deploy_file, website_configuration
from tests.conftest import photo

BUCKET = "doc-images"
HOST = "resize.example.org"
ANON_READ = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}


def policy(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@pytest.mark.parametrize("statements, problem, reads", [
    ([ANON_READ], None, [f"arn:aws:s3:::{BUCKET}/*"]),
    ([{**ANON_READ, "Principal": {"AWS": "*"}}], None, [f"arn:aws:s3:::{BUCKET}/*"]),
    ([{**ANON_READ, "Resource": f"arn:aws:s3:::{BUCKET}/photos/*"}], None, [f"arn:aws:s3:::{BUCKET}/photos/*"]),
    ([ANON_READ, {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:role/resize"},
                  "Action": ["s3:PutObject"], "Resource": f"arn:aws:s3:::{BUCKET}/*"}], None,
     [f"arn:aws:s3:::{BUCKET}/*"]),  # a named principal's grant is not public
    ([ANON_READ, {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": f"arn:aws:s3:::{BUCKET}/x/*"}],
     None, [f"arn:aws:s3:::{BUCKET}/*"]),
    ([{**ANON_READ, "Action": ["s3:GetObject", "s3:ListBucket"]}], "anonymous callers may also s3:ListBucket", []),
    ([ANON_READ, {**ANON_READ, "Sid": "Upload", "Action": "s3:PutObject"}], "Upload: anonymous callers may also s3:PutObject",
     [f"arn:aws:s3:::{BUCKET}/*"]),
    ([{**ANON_READ, "Action": "s3:*"}], "anonymous callers may also s3:*", []),
    ([{**ANON_READ, "Action": "s3:Get*"}], "anonymous callers may also s3:Get*", []),
    ([{**ANON_READ, "Resource": f"arn:aws:s3:::{BUCKET}"}], "not objects of", []),
    ([{**ANON_READ, "Resource": "arn:aws:s3:::other-bucket/*"}], "not objects of", []),
    ([{"Effect": "Allow", "NotPrincipal": {"AWS": "arn:aws:iam::1:root"}, "Action": "s3:GetObject",
       "Resource": f"arn:aws:s3:::{BUCKET}/*"}], "NotPrincipal", []),
    ([], None, []),
])
def test_policy_problems(statements, problem, reads):
    problems, found = policy_problems(policy(*statements), BUCKET)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems
    assert found == reads


@pytest.fixture
def aws(monkeypatch):
    """moto's S3 and SQS, with the bucket set up the way `resize-server setup-bucket` does it."""
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_website(Bucket=BUCKET, WebsiteConfiguration=website_configuration(
            read_deploy_file("routing_rules.xml"), HOST))
        s3.put_bucket_policy(Bucket=BUCKET, Policy=bucket_policy(read_deploy_file("bucket_policy.json"), BUCKET))
        s3.put_object(Bucket=BUCKET, Key="photos/earth.jpg", Body=photo(), ContentType="image/jpeg")
        monkeypatch.setenv("RESIZE_BUCKET", BUCKET)
        monkeypatch.setenv("RESIZE_PUBLIC_HOST", HOST)
        yield s3


def doctor(*args: str):
    result = CliRunner().invoke(main, ["doctor", *args])
    lines = {}  # check name -> (label, its first line)
    for line in result.output.splitlines():
        for label in ("PASS", "FAIL", "SKIP"):
            if line.startswith(label + "  "):
                name = line[6:].split("  ")[0].strip()
                lines[name] = (label, line)
    return result, lines


def block(output: str, line: str) -> str:
    """A check's first line with its continuation lines (indented), fix excluded."""
    rest = output.split(line, 1)[1].splitlines()[1:]
    more = [r for r in rest[:next((i for i, r in enumerate(rest) if not r.startswith("        ")), len(rest))]]
    return "\n".join([line, *more])


def test_a_bucket_set_up_like_setup_bucket_passes_every_check(aws):
    sqs = boto3.client("sqs", region_name="us-east-1")
    dlq = sqs.create_queue(QueueName="resize-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(QueueName="resize-events", Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})})["QueueUrl"]
    result, lines = doctor("--queue-url", queue)
    assert result.exit_code == 0, result.output
    for name in ("configuration", "credentials", "bucket", "website", "redirect host", "bucket policy",
                 "read a source", "write a derived key", "imagemagick coders", "imagemagick limits", "queue"):
        assert lines[name][0] == "PASS", result.output
    assert "every redirect goes to " + HOST in lines["redirect host"][1]
    assert f"anonymous callers may s3:GetObject on arn:aws:s3:::{BUCKET}/* and nothing more" in lines["bucket policy"][1]
    assert "read photos/earth.jpg" in lines["read a source"][1] and "jpeg" in lines["read a source"][1]
    assert "wrote and deleted" in lines["write a derived key"][1]
    assert dlq_arn in lines["queue"][1]
    assert lines["redis"][0] == "SKIP"
    assert "not configured" in lines["redis"][1]
    # the probe is gone again
    assert [o["Key"] for o in aws.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["photos/earth.jpg"]


@pytest.mark.parametrize("change, check, message, fix", [
    (lambda s3: s3.put_bucket_policy(Bucket=BUCKET, Policy=policy(
        {**ANON_READ, "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": [f"arn:aws:s3:::{BUCKET}/*"]},
        {**ANON_READ, "Sid": "List", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{BUCKET}"})),
     "bucket policy", "anonymous callers may also s3:ListBucket", "resize-server setup-bucket --host " + HOST),
    (lambda s3: s3.delete_bucket_policy(Bucket=BUCKET),
     "bucket policy", "no bucket policy", "resize-server setup-bucket --host " + HOST),
    (lambda s3: s3.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}),
     "bucket policy", "Block Public Access", "put-public-access-block"),
    (lambda s3: s3.delete_bucket_website(Bucket=BUCKET),
     "website", "has no website configuration", "resize-server setup-bucket --host " + HOST),
    (lambda s3: s3.put_bucket_website(Bucket=BUCKET, WebsiteConfiguration={
        "IndexDocument": {"Suffix": "index.html"},
        "RoutingRules": [website_configuration(read_deploy_file("routing_rules.xml"), HOST)["RoutingRules"][0]]}),
     "website", "no RoutingRule redirects on 403", "resize-server setup-bucket"),
    (lambda s3: s3.put_bucket_website(Bucket=BUCKET, WebsiteConfiguration=website_configuration(
        read_deploy_file("routing_rules.xml").replace(">302<", ">301<"), HOST)),
     "website", "HttpRedirectCode 301 is cached", "resize-server setup-bucket"),
    (lambda s3: s3.put_bucket_website(Bucket=BUCKET, WebsiteConfiguration=website_configuration(
        read_deploy_file("routing_rules.xml"), "old-balancer.example.org")),
     "redirect host", "the rules point at old-balancer.example.org, not at " + HOST, "--host " + HOST),
])
def test_a_misconfigured_bucket_fails_with_its_fix(aws, change, check, message, fix):
    change(aws)
    result, lines = doctor()
    assert result.exit_code == 1, result.output
    status, line = lines[check]
    assert status == "FAIL" and message in line, result.output
    following = result.output.split(line, 1)[1].splitlines()[1]
    assert following.strip().startswith("fix: ") and fix in following, result.output
    failed = [name for name, (s, _) in lines.items() if s == "FAIL"]
    assert failed == [check], result.output  # nothing else is blamed


@pytest.mark.parametrize("env, args, check, message", [
    ({"RESIZE_BUCKET": "no-such-bucket"}, (), "bucket", "bucket 'no-such-bucket' does not exist"),
    ({"RESIZE_JPEG_QUALITY": "0"}, (), "configuration", "RESIZE_JPEG_QUALITY=0"),
    ({}, ("--probe-source", "photos/missing.jpg"), "read a source", "photos/missing.jpg: source image not found"),
    ({}, ("--queue-url", "https://sqs.us-east-1.amazonaws.com/123456789012/absent"), "queue", "did not answer"),
    ({"RESIZE_REDIS_URL": "redis://127.0.0.1:1/0"}, (), "redis", "did not answer PING"),
])
def test_each_failure_is_named(aws, monkeypatch, env, args, check, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result, lines = doctor(*args)
    assert result.exit_code == 1, result.output
    assert lines[check][0] == "FAIL" and message in block(result.output, lines[check][1]), result.output


def test_without_a_host_the_redirect_host_is_reported_not_compared(aws, monkeypatch):
    monkeypatch.delenv("RESIZE_PUBLIC_HOST")
    result, lines = doctor()
    assert result.exit_code == 0, result.output
    assert lines["redirect host"][0] == "SKIP"
    assert f"the rules point at {HOST}; pass --host" in lines["redirect host"][1]


def test_one_bad_upload_does_not_fail_the_read_check(aws):
    """The probe reads the first original listed; a pixel bomb there is a client's 413, not a broken deployment."""
    import struct
    import zlib

    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    aws.put_object(Bucket=BUCKET, Key="a-first/bomb.png", Body=bomb)
    result, lines = doctor()
    assert lines["read a source"][0] == "PASS", result.output
    assert "a-first/bomb.png" in lines["read a source"][1] and "413" in block(result.output, lines["read a source"][1])
