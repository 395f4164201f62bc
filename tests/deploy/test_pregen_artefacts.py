"""deploy/pregen/: the bucket notification, queues, IAM policy and lifecycle rule, on moto.

The files are what ``aws s3api put-bucket-notification-configuration``,
``aws sqs create-queue --attributes``, ``aws iam create-policy`` and
``aws s3api put-bucket-lifecycle-configuration`` take; the tests hand them to
moto through boto3 the same way and check the behaviour (events arrive for
images only, the redrive moves a poison message to the dead-letter queue).
"""

from __future__ import annotations

import json
from urllib.parse import unquote_plus

import boto3
import pytest
from moto import mock_aws

from tests.deploy.templates import DEPLOY

PREGEN = DEPLOY / "pregen"
PLACEHOLDER_QUEUE = "arn:aws:sqs:us-east-1:123456789012:resize-pregen"
PLACEHOLDER_DLQ = "arn:aws:sqs:us-east-1:123456789012:resize-pregen-dlq"
IMAGE_SUFFIXES = [".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".gif", ".GIF", ".webp", ".WEBP"]


def shipped(name: str) -> dict:
    return json.loads((PREGEN / name).read_text())


def receive_all(sqs, url: str, wait: int = 0) -> list[dict]:
    out = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait).get("Messages", [])
        if not got:
            return out
        for message in got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        out += got


@pytest.fixture
def aws():
    with mock_aws():
        yield boto3.client("s3", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")


@pytest.fixture
def notified_bucket(aws):
    """A bucket with deploy/pregen/bucket_notification.json applied, pointed at a real (moto) queue."""
    s3, sqs = aws
    s3.create_bucket(Bucket="images")
    url = sqs.create_queue(QueueName="resize-pregen")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={
        "Policy": (PREGEN / "queue_policy.json").read_text().replace(PLACEHOLDER_QUEUE, arn)})
    conf = json.loads((PREGEN / "bucket_notification.json").read_text().replace(PLACEHOLDER_QUEUE, arn))
    s3.put_bucket_notification_configuration(Bucket="images", NotificationConfiguration=conf)
    test_events = [json.loads(m["Body"]) for m in receive_all(sqs, url)]
    assert all(e.get("Event") == "s3:TestEvent" for e in test_events)  # S3 (and moto) announce the config
    return s3, sqs, url


def test_notification_file_has_one_object_created_configuration_per_image_suffix():
    configs = shipped("bucket_notification.json")["QueueConfigurations"]
    assert [c["Filter"]["Key"]["FilterRules"] for c in configs] == [[{"Name": "suffix", "Value": s}]
                                                                     for s in IMAGE_SUFFIXES]
    assert all(c["Events"] == ["s3:ObjectCreated:*"] for c in configs)
    assert len({c["Id"] for c in configs}) == len(configs)


def test_moto_accepts_and_keeps_the_notification_configuration(notified_bucket):
    s3, _sqs, _url = notified_bucket
    stored = s3.get_bucket_notification_configuration(Bucket="images")["QueueConfigurations"]
    assert sorted(c["Filter"]["Key"]["FilterRules"][0]["Value"] for c in stored) == sorted(IMAGE_SUFFIXES)


@pytest.mark.parametrize("suffix", IMAGE_SUFFIXES)
def test_an_uploaded_image_sends_one_object_created_message(notified_bucket, suffix):
    s3, sqs, url = notified_bucket
    key = f"photos/my photo{suffix}"
    s3.put_object(Bucket="images", Key=key, Body=b"x")
    messages = receive_all(sqs, url)
    assert len(messages) == 1
    record, = json.loads(messages[0]["Body"])["Records"]
    assert record["eventName"].startswith("ObjectCreated:")
    assert record["s3"]["bucket"]["name"] == "images"
    # Event keys are URL-encoded with + for a space (moto encodes "/" too, S3 does not).
    assert unquote_plus(record["s3"]["object"]["key"]) == key


@pytest.mark.parametrize("key", ["notes/readme.txt", "photos/earth.jpg.bak", "photos/earth.tiff", "index.html"])
def test_other_uploads_send_nothing(notified_bucket, key):
    s3, sqs, url = notified_bucket
    s3.put_object(Bucket="images", Key=key, Body=b"x")
    s3.put_object(Bucket="images", Key="control.png", Body=b"x")  # the queue does receive, just not for `key`
    keys = [unquote_plus(json.loads(m["Body"])["Records"][0]["s3"]["object"]["key"]) for m in receive_all(sqs, url)]
    assert keys == ["control.png"]


def test_queue_redrives_a_message_to_the_dead_letter_queue_after_max_receives(aws):
    _s3, sqs = aws
    dlq_url = sqs.create_queue(QueueName="resize-pregen-dlq", Attributes=shipped("dead_letter_queue.json"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = shipped("queue.json")
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == PLACEHOLDER_DLQ
    attributes["RedrivePolicy"] = attributes["RedrivePolicy"].replace(PLACEHOLDER_DLQ, dlq_arn)
    url = sqs.create_queue(QueueName="resize-pregen", Attributes=attributes)["QueueUrl"]
    got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert json.loads(got["RedrivePolicy"]) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}
    assert got["VisibilityTimeout"] == "120"

    sqs.send_message(QueueUrl=url, MessageBody="poison")
    max_receives = int(redrive["maxReceiveCount"])
    for _ in range(max_receives):  # received, never deleted (a transient failure each time)
        message, = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0, WaitTimeSeconds=0)["Messages"]
        assert message["Body"] == "poison"
    # (WaitTimeSeconds=0: the queue long-polls 20 s by default.)
    assert sqs.receive_message(QueueUrl=url, VisibilityTimeout=0, WaitTimeSeconds=0).get("Messages", []) == []
    moved = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=0).get("Messages", [])
    assert [m["Body"] for m in moved] == ["poison"]


WORKER_ACTIONS = {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:PutObjectTagging", "sqs:ReceiveMessage",
                  "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"}


def statement_actions(statement) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else action


def test_worker_policy_has_no_wildcards_and_only_the_needed_actions():
    policy = shipped("worker_policy.json")
    actions = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement
        assert not any("*" in a for a in statement_actions(statement)), statement
        resources = [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
        assert "*" not in resources
        assert not any(r.startswith("arn:aws:sqs") and "*" in r for r in resources)
        actions |= set(statement_actions(statement))
    assert actions == WORKER_ACTIONS
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert statement_actions(by_sid["PregenQueue"]) == ["sqs:ReceiveMessage", "sqs:DeleteMessage",
                                                        "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"]
    assert by_sid["PregenQueue"]["Resource"] == PLACEHOLDER_QUEUE
    # Writes must carry the derived tag, so the role cannot replace an original with an untagged object.
    assert by_sid["WriteDerived"]["Condition"] == {"StringEquals": {"s3:RequestObjectTag/resize-derived": "true"}}


def test_iam_accepts_the_worker_policy(aws):
    iam = boto3.client("iam", region_name="us-east-1")
    arn = iam.create_policy(PolicyName="resize-worker",
                            PolicyDocument=(PREGEN / "worker_policy.json").read_text())["Policy"]["Arn"]
    version = iam.get_policy_version(PolicyArn=arn, VersionId="v1")["PolicyVersion"]["Document"]
    assert version == shipped("worker_policy.json")


def test_moto_rejects_a_malformed_policy_document(aws):
    """The acceptance above means something: moto validates policy grammar."""
    iam = boto3.client("iam", region_name="us-east-1")
    broken = shipped("worker_policy.json")
    broken["Statement"][0]["Effect"] = "Permit"
    with pytest.raises(iam.exceptions.MalformedPolicyDocumentException):
        iam.create_policy(PolicyName="broken", PolicyDocument=json.dumps(broken))


@pytest.mark.parametrize("days", [90, 7])
def test_lifecycle_rule_is_accepted_and_expires_tagged_derived_objects(aws, days):
    s3, _sqs = aws
    s3.create_bucket(Bucket="images")
    conf = shipped("lifecycle.json")
    assert conf["Rules"][0]["Expiration"] == {"Days": 90}
    conf["Rules"][0]["Expiration"]["Days"] = days  # the configurable number of days
    s3.put_bucket_lifecycle_configuration(Bucket="images", LifecycleConfiguration=conf)
    rule, = s3.get_bucket_lifecycle_configuration(Bucket="images")["Rules"]
    assert rule["Expiration"] == {"Days": days}
    assert rule["Filter"] == {"Tag": {"Key": "resize-derived", "Value": "true"}}
    assert rule["Status"] == "Enabled"
