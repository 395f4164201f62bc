"""The one Lambda handler fed real event shapes: S3 trigger, SQS batch, API Gateway REST v1 and HTTP v2."""

from __future__ import annotations

import base64
import json
import logging
import tempfile

import pytest

from resize_server import aws_lambda
from resize_server.config import ConfigError
from tests.conftest import QUADRANTS, dimensions, mean_rgb, photo
from tests.events.conftest import BUCKET, EXPECTED, PRESETS, Faults

API_KEY = "lambda-test-key"


@pytest.fixture
def lam(aws, monkeypatch, tmp_path):
    """The handler's environment: RESIZE_* variables, moto behind it, an empty TMPDIR to watch."""
    for name, value in {"RESIZE_BUCKET": BUCKET, "RESIZE_PRESETS": PRESETS, "RESIZE_S3_MAX_ATTEMPTS": "1",
                        "RESIZE_API_KEYS": API_KEY, "RESIZE_ALLOWED_SIZES": "200x200,2048x2048",
                        "RESIZE_MAX_SOURCE_PIXELS": "50000000"}.items():
        monkeypatch.setenv(name, value)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # for ImageMagick and anything else that asks the environment
    monkeypatch.setattr(tempfile, "tempdir", None)  # Python's tempfile re-reads TMPDIR
    aws_lambda.reset()
    yield aws
    aws_lambda.reset()
    assert list(tmp.iterdir()) == []  # nothing written to the temporary folder


def s3_put_event(key: str, etag: str, size: int) -> dict:
    """The event of an S3 trigger, as in AWS's sample (``sam local generate-event s3 put``)."""
    from urllib.parse import quote_plus

    return {"Records": [{
        "eventVersion": "2.0", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "1970-01-01T00:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "EXAMPLE"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "EXAMPLE123456789",
                             "x-amz-id-2": "EXAMPLE123/5678abcdefghijklambdaisawesome/mnopqrstuvwxyzABCDEFGH"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "testConfigRule",
               "bucket": {"name": BUCKET, "ownerIdentity": {"principalId": "EXAMPLE"}, "arn": f"arn:aws:s3:::{BUCKET}"},
               "object": {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag.strip('"'),
                          "sequencer": "0A1B2C3D4E5F678901"}}}]}


def sqs_event(messages: list[dict]) -> dict:
    """An SQS event source mapping's batch around messages received from the (moto) queue."""
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1545082649183",
                       "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1545082649185"},
        "messageAttributes": {}, "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:events", "awsRegion": "us-east-1"} for m in messages]}


def rest_v1_event(method: str, path: str, query: dict, body: bytes = b"", headers: dict | None = None) -> dict:
    headers = {"Host": "abc123.execute-api.us-east-1.amazonaws.com", "User-Agent": "curl/8.5.0",
               "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Port": "443", "X-Forwarded-Proto": "https",
               **(headers or {})}
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": method, "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} or None,
        "pathParameters": {"proxy": path.lstrip("/")}, "stageVariables": None,
        "requestContext": {"resourceId": "123456", "resourcePath": "/{proxy+}", "httpMethod": method,
                           "requestTime": "02/Dec/2026:12:00:00 +0000", "path": "/prod" + path,
                           "accountId": "123456789012", "protocol": "HTTP/1.1", "stage": "prod",
                           "domainPrefix": "abc123", "requestTimeEpoch": 1796212800000,
                           "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
                           "identity": {"sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0"},
                           "domainName": "abc123.execute-api.us-east-1.amazonaws.com", "apiId": "abc123"},
        "body": base64.b64encode(body).decode() if body else None, "isBase64Encoded": bool(body),
    }


def http_v2_event(method: str, raw_path: str, raw_query: str, body: bytes = b"", headers: dict | None = None) -> dict:
    headers = {"host": "abc123.execute-api.us-east-1.amazonaws.com", "user-agent": "curl/8.5.0",
               "x-forwarded-for": "203.0.113.7", "x-forwarded-port": "443", "x-forwarded-proto": "https",
               **(headers or {})}
    event = {
        "version": "2.0", "routeKey": "$default", "rawPath": raw_path, "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {"accountId": "123456789012", "apiId": "abc123",
                           "domainName": "abc123.execute-api.us-east-1.amazonaws.com", "domainPrefix": "abc123",
                           "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1",
                                    "sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0"},
                           "requestId": "JKJaXmPLvHcESHA=", "routeKey": "$default", "stage": "$default",
                           "time": "02/Dec/2026:12:00:00 +0000", "timeEpoch": 1796212800000},
        "isBase64Encoded": bool(body),
    }
    if body:
        event["body"] = base64.b64encode(body).decode()
    return event


def assert_grayscale(data: bytes) -> None:
    for box in QUADRANTS:
        r, g, b = mean_rgb(data, box)
        assert max(r, g, b) - min(r, g, b) < 1.5, (box, r, g, b)


def test_direct_s3_put_event(lam):
    put = lam.s3.put_object(Bucket=BUCKET, Key="uploads/my photo.jpg", Body=photo())
    result = aws_lambda.handler(s3_put_event("uploads/my photo.jpg", put["ETag"], len(photo())), None)
    assert result == {"rendered": 3, "skipped": 0, "failed": []}
    for preset, (width, height) in EXPECTED.items():
        assert dimensions(lam.body(f"uploads/my photo_{preset}.jpg")) == ("JPEG", width, height)
    # The same event again (S3 delivers at least once): nothing is rendered.
    assert aws_lambda.handler(s3_put_event("uploads/my photo.jpg", put["ETag"], 1), None)["rendered"] == 0


def test_direct_s3_event_transient_failure_raises_for_a_retry(lam):
    put = lam.s3.put_object(Bucket=BUCKET, Key="flaky.jpg", Body=photo())
    container = aws_lambda._get_container()
    Faults(container.service.storage.client, "PutObject", match="flaky_small.jpg")
    with pytest.raises(aws_lambda.TransientFailure):
        aws_lambda.handler(s3_put_event("flaky.jpg", put["ETag"], 1), None)


def test_direct_s3_event_poison_is_dropped(lam):
    put = lam.s3.put_object(Bucket=BUCKET, Key="poison.jpg", Body=b"not an image")
    result = aws_lambda.handler(s3_put_event("poison.jpg", put["ETag"], 1), None)
    assert result == {"rendered": 0, "skipped": 0, "failed": [
        {"key": "poison.jpg", "status": 415, "error": "UnsupportedFormat"}]}


def test_sqs_batch_reports_exactly_the_transient_failure(lam):
    for key in ("a.jpg", "b.jpg", "c.jpg"):
        lam.s3.put_object(Bucket=BUCKET, Key=key, Body=photo())
    messages = lam.sqs.receive_message(QueueUrl=lam.queue_url, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 3
    by_key = {json.loads(m["Body"])["Records"][0]["s3"]["object"]["key"]: m["MessageId"] for m in messages}
    container = aws_lambda._get_container()
    faults = Faults(container.service.storage.client, "GetObject", match="/b.jpg")
    result = aws_lambda.handler(sqs_event(messages), None)
    assert result == {"batchItemFailures": [{"itemIdentifier": by_key["b.jpg"]}]}
    assert faults.raised == 1
    keys = lam.keys()
    assert {"a_thumb.jpg", "a_small.jpg", "a_large.jpg", "c_thumb.jpg", "c_small.jpg", "c_large.jpg"} <= set(keys)
    assert not any(k.startswith("b_") for k in keys)


def test_sqs_batch_permanent_failures_are_not_reported(lam):
    lam.s3.put_object(Bucket=BUCKET, Key="bad.jpg", Body=b"not an image")
    messages = lam.sqs.receive_message(QueueUrl=lam.queue_url, MaxNumberOfMessages=10)["Messages"]
    test_event = {"MessageId": "t", "ReceiptHandle": "r", "MD5OfBody": "",
                  "Body": json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET})}
    assert aws_lambda.handler(sqs_event(messages + [test_event]), None) == {"batchItemFailures": []}


@pytest.mark.parametrize("make_event", [
    lambda body: rest_v1_event("POST", "/transform", {"grayscale": "1"}, body,
                               {"Content-Type": "image/jpeg", "Authorization": f"Bearer {API_KEY}"}),
    lambda body: http_v2_event("POST", "/transform", "grayscale=1", body,
                               {"content-type": "image/jpeg", "authorization": f"Bearer {API_KEY}"}),
], ids=["rest-v1", "http-v2"])
def test_transform_through_api_gateway(lam, make_event):
    original = photo()
    assert max(mean_rgb(original)) - min(mean_rgb(original)) > 5  # the input has colour
    response = aws_lambda.handler(make_event(original), None)
    assert response["statusCode"] == 200, response.get("body", "")[:200]
    assert response["isBase64Encoded"] is True
    headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
    # REST events with multiValueHeaders get multiValueHeaders back.
    headers.update({k.lower(): v[-1] for k, v in response.get("multiValueHeaders", {}).items()})
    assert headers["content-type"] == "image/jpeg"
    data = base64.b64decode(response["body"])
    assert dimensions(data) == ("JPEG", 1800, 1200)
    assert_grayscale(data)


def test_on_demand_get_through_http_v2_stores_before_returning(lam):
    lam.s3.put_object(Bucket=BUCKET, Key="photos/my photo+1.jpg", Body=photo())
    response = aws_lambda.handler(http_v2_event("GET", "/photos/my%20photo+1_200x200.jpg", ""), None)
    assert response["statusCode"] == 200, response.get("body", "")[:200]
    data = base64.b64decode(response["body"])
    assert dimensions(data) == ("JPEG", 200, 133)
    # Stored before the handler returned (a frozen container would never run a background store).
    stored = lam.s3.get_object(Bucket=BUCKET, Key="photos/my photo+1_200x200.jpg")
    assert stored["Body"].read() == data


def test_on_demand_get_through_rest_v1_resize_php(lam):
    lam.s3.put_object(Bucket=BUCKET, Key="earth.jpg", Body=photo())
    response = aws_lambda.handler(rest_v1_event("GET", "/resize.php", {"src": "earth_200x200.jpg"}), None)
    assert response["statusCode"] == 200
    assert dimensions(base64.b64decode(response["body"])) == ("JPEG", 200, 133)


def noisy_png(width: int, height: int) -> bytes:
    """Random noise compresses to nothing: a PNG of ~3 bytes a pixel."""
    from wand.color import Color
    from wand.image import Image

    with Image(width=width, height=height, background=Color("rgb(128,100,150)")) as img:  # colour: 3 channels
        img.noise("random")
        img.format = "png"
        return img.make_blob()


@pytest.mark.slow
@pytest.mark.parametrize("website", ["", "http://images.s3-website-us-east-1.amazonaws.com"])
def test_response_over_the_payload_limit(lam, monkeypatch, website):
    monkeypatch.setenv("RESIZE_WEBSITE_URL", website)
    monkeypatch.setenv("RESIZE_MAX_SOURCE_BYTES", str(64 << 20))
    aws_lambda.reset()
    lam.s3.put_object(Bucket=BUCKET, Key="big.png", Body=noisy_png(2048, 1400))
    response = aws_lambda.handler(http_v2_event("GET", "/big_2048x2048.png", ""), None)
    if website:
        assert response["statusCode"] == 302
        assert response["headers"]["Location"] == website + "/big_2048x2048.png"
    else:
        assert response["statusCode"] == 413
        assert "6 MB" in response["body"]
    assert lam.s3.head_object(Bucket=BUCKET, Key="big_2048x2048.png")["ContentLength"] > 4 << 20
    assert len(json.dumps(response)) < 1024


@pytest.mark.slow
def test_response_over_the_payload_limit_redirects_to_the_reading_that_was_stored(lam, monkeypatch):
    """``src=big+one_...``: curl's form of a space; only the second reading ("big one") has a source."""
    website = "http://images.s3-website-us-east-1.amazonaws.com"
    monkeypatch.setenv("RESIZE_WEBSITE_URL", website)
    monkeypatch.setenv("RESIZE_MAX_SOURCE_BYTES", str(64 << 20))
    aws_lambda.reset()
    lam.s3.put_object(Bucket=BUCKET, Key="big one.png", Body=noisy_png(2048, 1400))
    response = aws_lambda.handler(http_v2_event("GET", "/resize.php", "src=big+one_2048x2048.png"), None)
    assert response["statusCode"] == 302, response.get("body", "")[:200]
    assert response["headers"]["Location"] == website + "/big%20one_2048x2048.png"
    assert lam.s3.head_object(Bucket=BUCKET, Key="big one_2048x2048.png")["ContentLength"] > 4 << 20


def test_container_singletons_are_created_once_on_the_first_call(lam):
    assert aws_lambda._container is None  # not at import
    lam.s3.put_object(Bucket=BUCKET, Key="earth.jpg", Body=photo())
    aws_lambda.handler(http_v2_event("GET", "/healthz", ""), None)
    first = aws_lambda._container
    aws_lambda.handler(http_v2_event("GET", "/earth_200x200.jpg", ""), None)
    assert aws_lambda._container is first
    assert first.service is first.app.extensions["resize"]


def test_bad_setting_is_named_at_cold_start(lam, monkeypatch, caplog):
    monkeypatch.setenv("RESIZE_JPEG_QUALITY", "500")
    aws_lambda.reset()
    with caplog.at_level(logging.ERROR, logger="resize_server"), pytest.raises(ConfigError):
        aws_lambda.handler(http_v2_event("GET", "/healthz", ""), None)
    [record] = [r for r in caplog.records if r.getMessage() == "invalid configuration"]
    assert "RESIZE_JPEG_QUALITY=500" in record.fields["problems"]
    assert aws_lambda._container is None  # a fixed configuration is picked up by the next call


def test_unknown_event_is_an_error(lam):
    with pytest.raises(ValueError):
        aws_lambda.handler({"detail-type": "Scheduled Event"}, None)
