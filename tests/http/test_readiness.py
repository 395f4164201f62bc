"""/healthz and /readyz: readiness answers within RESIZE_READY_TIMEOUT with one attempt, and the log names the cause.

The clients here are the ones ``create_app`` builds itself (the composition
root), pointed at moto, at a loopback port nobody listens on, or at a black
hole that accepts connections and never answers.
"""

from __future__ import annotations

import logging
import time

import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws

from resize_server.http import create_app
from tests.conftest import BUCKET
from tests.http.test_s3_faults import FakeRaw, Injector, error_response
from tests.netfaults import BlackHole, dead_port


def inject_all(client, operation: str, fault) -> Injector:
    """Fault every request of ``operation``, whatever its key."""
    return Injector(client, operation, fault, key=None)


def readyz(app, caplog):
    """GET /readyz; returns (response, seconds, the error log records' fields)."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="resize_server"):
        started = time.monotonic()
        response = app.test_client().get("/readyz")
        elapsed = time.monotonic() - started
    records = [r.fields for r in caplog.records if "error" in getattr(r, "fields", {})]
    return response, elapsed, records


def assert_plain_error(response, status: int, message: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_data(as_text=True) == message + "\n"


# ---- the deadline ------------------------------------------------------------------------------


@pytest.mark.parametrize("env, deadline", [({}, 3.0), ({"ready_timeout": "1"}, 1.0)], ids=["default-3s", "1s"])
def test_readyz_against_a_black_hole_is_504_within_the_deadline(caplog, env, deadline):
    """The endpoint accepts the connection and never answers: 504 after one read timeout, not 30 s of retries."""
    with BlackHole() as hole:
        app = create_app({"bucket": BUCKET, "s3_endpoint_url": hole.url, **env})
        response, elapsed, records = readyz(app, caplog)
        assert hole.accepted == 1  # one attempt: no retry, no second connection
    assert_plain_error(response, 504, "storage backend timed out")
    assert deadline - 0.2 <= elapsed <= deadline + 2.0, f"{elapsed:.2f} s for a {deadline} s deadline"
    assert records and records[0]["error"] == "UpstreamTimeout"
    assert hole.url in records[0]["detail"]


def test_the_probe_client_is_made_once_with_one_attempt_and_the_deadline():
    app = create_app({"bucket": BUCKET, "s3_endpoint_url": f"http://127.0.0.1:{dead_port()}", "ready_timeout": "1.5"})
    storage = app.extensions["resize"].storage
    probe = storage.probe_client
    assert probe is not storage.client
    assert (probe.meta.config.connect_timeout, probe.meta.config.read_timeout) == (1.5, 1.5)
    assert probe.meta.config.retries["total_max_attempts"] == 1
    # the request-serving client keeps its own timeouts and retries
    assert storage.client.meta.config.retries["total_max_attempts"] == 3
    app.test_client().get("/readyz")
    app.test_client().get("/readyz")
    assert app.extensions["resize"].storage.probe_client is probe


def test_healthz_answers_while_s3_is_a_black_hole():
    """Liveness never touches S3: the check a load balancer should use."""
    with BlackHole() as hole:
        app = create_app({"bucket": BUCKET, "s3_endpoint_url": hole.url})
        started = time.monotonic()
        response = app.test_client().get("/healthz")
        assert time.monotonic() - started < 1.0
        assert hole.accepted == 0
    assert response.status_code == 200 and response.get_data(as_text=True) == "ok\n"


# ---- the cause in the log, a short message in the response ---------------------------------------


def test_readyz_on_an_unreachable_endpoint_names_the_url(caplog):
    url = f"http://127.0.0.1:{dead_port()}"
    app = create_app({"bucket": BUCKET, "s3_endpoint_url": url})
    response, elapsed, records = readyz(app, caplog)
    assert_plain_error(response, 502, "storage backend error")
    assert elapsed < 2.0  # refused at once, one attempt
    assert records[0]["error"] == "UpstreamUnreachable"
    assert f"cannot reach the S3 endpoint {url}" in records[0]["detail"]
    assert url not in response.get_data(as_text=True)


def test_readyz_without_credentials_says_so(no_credentials, caplog):
    # Not under moto (it supplies credentials of its own): botocore refuses to sign before connecting.
    with BlackHole() as hole:
        app = create_app({"bucket": BUCKET, "s3_endpoint_url": hole.url})
        response, _, records = readyz(app, caplog)
        assert hole.accepted == 0
    assert_plain_error(response, 502, "storage backend error")
    assert records[0]["error"] == "UpstreamCredentials"
    assert "no AWS credentials found" in records[0]["detail"]


def test_readyz_for_a_missing_bucket_names_it(caplog):
    with mock_aws():
        app = create_app({"bucket": "no-such-bucket"})
        response, _, records = readyz(app, caplog)
    assert_plain_error(response, 502, "storage backend error")
    assert records[0]["error"] == "BucketNotFound"
    assert "bucket 'no-such-bucket' does not exist" in records[0]["detail"]


@pytest.mark.parametrize("code, message, error, cause", [
    ("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.",
     "UpstreamCredentials", "is not known to"),
    ("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.",
     "UpstreamCredentials", "secret access key does not match"),
    ("AccessDenied", "Access Denied", "UpstreamAccessDenied", f"lack s3:ListBucket on arn:aws:s3:::{BUCKET}"),
])
def test_readyz_tells_bad_credentials_from_a_missing_permission(caplog, code, message, error, cause):
    """HeadBucket's 403 has no body; the one ListObjectsV2 that follows carries S3's reason."""
    with mock_aws():
        app = create_app({"bucket": BUCKET})
        probe = app.extensions["resize"].storage.probe_client
        probe.create_bucket(Bucket=BUCKET)
        head = inject_all(probe, "HeadBucket", lambda request, attempt: AWSResponse(request.url, 403, {}, FakeRaw(b"")))
        listing = inject_all(probe, "ListObjectsV2", lambda request, attempt: error_response(request.url, 403, code, message))
        response, _, records = readyz(app, caplog)
    assert len(head.calls) == 1 and len(listing.calls) == 1
    status, public = (502, "storage backend denied access") if error == "UpstreamAccessDenied" else (502, "storage backend error")
    assert_plain_error(response, status, public)
    assert records[0]["error"] == error
    assert cause in records[0]["detail"]
    if error == "UpstreamCredentials":
        assert "lack s3:" not in records[0]["detail"]


def test_readyz_is_ready_when_the_bucket_is_there(s3, app):
    response = app.test_client().get("/readyz")
    assert response.status_code == 200 and response.get_data(as_text=True) == "ready\n"
