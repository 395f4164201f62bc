"""S3 event notifications: shapes, skipping, and key decoding exactly as S3 encodes keys."""

from __future__ import annotations

import json
from urllib.parse import quote_plus

import pytest

from resize_server.events.s3events import (
    MalformedEvent,
    decode_event_key,
    lambda_event_kind,
    parse_body,
    parse_event,
)


def record(key: str, name: str = "ObjectCreated:Put", bucket: str = "images") -> dict:
    # The shape S3 sends (eventVersion 2.1), trimmed of fields the parser does not read.
    return {
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-12-02T12:00:00.000Z", "eventName": name,
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "pregen",
               "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": key, "size": 1024, "eTag": "0123456789abcdef0123456789abcdef",
                          "sequencer": "0055AED6DCD90281E5"}},
    }


# (as S3 writes it in the event record, the real key)
KEY_ENCODING = [
    ("photos/earth.jpg", "photos/earth.jpg"),
    ("photos/my+photo.jpg", "photos/my photo.jpg"),          # a space is "+"
    ("photos/a%2Bb.jpg", "photos/a+b.jpg"),                  # a literal plus is %2B
    ("photos/my+photo%2B1.jpg", "photos/my photo+1.jpg"),
    ("photos/my%20photo.jpg", "photos/my photo.jpg"),        # AWS's sample events use %20
    ("photos/%C3%A9t%C3%A9.jpg", "photos/été.jpg"),          # UTF-8, percent-encoded
    ("photos/%E5%86%99%E7%9C%9F.jpg", "photos/写真.jpg"),
    ("a/b/c/d/deep.jpg", "a/b/c/d/deep.jpg"),                # folders keep their slashes
    ("photos%2Fmy+photo%2B1+%C3%A9.jpg", "photos/my photo+1 é.jpg"),  # moto encodes the slashes too
    ("photos/100%25.jpg", "photos/100%.jpg"),
    ("photos/a%26b%3Dc.jpg", "photos/a&b=c.jpg"),
]


@pytest.mark.parametrize("raw, key", KEY_ENCODING)
def test_event_keys_are_decoded_as_s3_encodes_them(raw, key):
    assert decode_event_key(raw) == key
    parsed = parse_body(json.dumps({"Records": [record(raw)]}))
    assert [c.key for c in parsed.created] == [key]


@pytest.mark.parametrize("key", [k for _, k in KEY_ENCODING])
def test_round_trip_through_s3s_encoding(key):
    # S3 encodes like a form (quote_plus, slashes kept): decoding gives the key back.
    assert decode_event_key(quote_plus(key, safe="/")) == key


def test_invalid_utf8_in_an_event_key_is_malformed():
    with pytest.raises(MalformedEvent):
        decode_event_key("photos/%FF.jpg")


def test_test_event_is_skipped():
    body = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-12-02T12:00:00.000Z",
                       "Bucket": "images", "RequestId": "5582815E1AEA5ADF", "HostId": "8cLeGAmw"})
    parsed = parse_body(body)
    assert parsed.created == []
    assert parsed.skipped == [("test-event", "images")]


@pytest.mark.parametrize("name", ["ObjectRemoved:Delete", "ObjectRemoved:DeleteMarkerCreated",
                                  "ObjectRestore:Completed", "ObjectTagging:Put", "LifecycleExpiration:Delete",
                                  "ReducedRedundancyLostObject"])
def test_events_other_than_created_are_skipped(name):
    parsed = parse_event({"Records": [record("photos/earth.jpg", name)]})
    assert parsed.created == []
    assert parsed.skipped == [("not-created", name)]


@pytest.mark.parametrize("name", ["ObjectCreated:Put", "ObjectCreated:Post", "ObjectCreated:Copy",
                                  "ObjectCreated:CompleteMultipartUpload"])
def test_every_kind_of_creation_is_kept(name):
    parsed = parse_event({"Records": [record("photos/earth.jpg", name)]})
    [created] = parsed.created
    assert (created.bucket, created.key, created.event_name, created.size) == ("images", "photos/earth.jpg", name, 1024)


def test_mixed_records_in_one_message():
    parsed = parse_event({"Records": [record("a.jpg"), record("b.jpg", "ObjectRemoved:Delete"),
                                      record("c+d.jpg", bucket="other")]})
    assert [(c.bucket, c.key) for c in parsed.created] == [("images", "a.jpg"), ("other", "c d.jpg")]
    assert len(parsed.skipped) == 1


def test_sns_wrapped_event_is_unwrapped():
    inner = json.dumps({"Records": [record("photos/my+photo.jpg")]})
    body = json.dumps({"Type": "Notification", "MessageId": "x", "TopicArn": "arn:aws:sns:us-east-1:1:t",
                       "Message": inner})
    assert [c.key for c in parse_body(body).created] == ["photos/my photo.jpg"]


@pytest.mark.parametrize("body", [
    "not json", "[]", "42", json.dumps({"hello": "world"}), json.dumps({"Records": "x"}),
    json.dumps({"Records": [{"eventSource": "aws:sqs"}]}),
    json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {}}]}),
    json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                             "s3": {"bucket": {"name": "b"}, "object": {"key": ""}}}]}),
])
def test_malformed_bodies_are_reported(body):
    with pytest.raises(MalformedEvent):
        parse_body(body)


SQS_BATCH = {"Records": [{"messageId": "m1", "receiptHandle": "r", "body": "{}", "attributes": {},
                          "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                          "eventSourceARN": "arn:aws:sqs:us-east-1:1:q", "awsRegion": "us-east-1"}]}
APIGW_V1 = {"resource": "/{proxy+}", "path": "/transform", "httpMethod": "POST", "headers": {},
            "queryStringParameters": {"grayscale": "1"}, "requestContext": {"stage": "prod", "httpMethod": "POST"},
            "body": "", "isBase64Encoded": True}
APIGW_V2 = {"version": "2.0", "routeKey": "$default", "rawPath": "/transform", "rawQueryString": "grayscale=1",
            "headers": {}, "requestContext": {"http": {"method": "POST", "path": "/transform"}},
            "body": "", "isBase64Encoded": True}


@pytest.mark.parametrize("event, kind", [
    ({"Records": [record("a.jpg")]}, "s3"),
    (SQS_BATCH, "sqs"),
    (APIGW_V1, "apigw-v1"),
    (APIGW_V2, "apigw-v2"),
    ({"Service": "Amazon S3", "Event": "s3:TestEvent"}, "s3-test"),
    ({"Records": [{"eventSource": "aws:dynamodb"}]}, "unknown"),
    ({}, "unknown"),
    ([], "unknown"),
])
def test_lambda_event_kind(event, kind):
    assert lambda_event_kind(event) == kind


def test_parsers_are_pure():
    # The event and access-log parsers load neither boto3, Wand nor Flask (fast, testable anywhere).
    import subprocess
    import sys

    code = ("import sys, resize_server.events.s3events, resize_server.accesslog; "
            "print(sorted(m for m in ('boto3', 'botocore', 'wand', 'flask') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
