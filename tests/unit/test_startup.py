"""startup_check(settings): the bucket check serve (and the event worker) run before taking work."""

from __future__ import annotations

import time

import pytest
from moto import mock_aws

from resize_server.config import Settings
from resize_server.errors import BucketNotFound, UpstreamCredentials, UpstreamTimeout, UpstreamUnreachable
from resize_server.startup import startup_check
from resize_server.storage.s3 import make_client
from tests.conftest import BUCKET
from tests.netfaults import BlackHole, dead_port


def test_passes_on_a_reachable_bucket_and_checks_another_one_when_asked():
    with mock_aws():
        settings = Settings(bucket=BUCKET)
        make_client(settings).create_bucket(Bucket=BUCKET)
        startup_check(settings)
        with pytest.raises(BucketNotFound):
            startup_check(settings, bucket="other-bucket")


def test_names_an_unreachable_endpoint():
    url = f"http://127.0.0.1:{dead_port()}"
    with pytest.raises(UpstreamUnreachable) as info:
        startup_check(Settings(bucket=BUCKET, s3_endpoint_url=url))
    assert url in info.value.detail


def test_is_bounded_by_the_ready_timeout_with_one_attempt():
    with BlackHole() as hole:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            startup_check(Settings(bucket=BUCKET, s3_endpoint_url=hole.url, ready_timeout=0.5))
        assert time.monotonic() - started < 0.5 + 2  # the margin: building the client, on a shared machine
        assert hole.accepted == 1


def test_no_credentials(no_credentials):
    with pytest.raises(UpstreamCredentials, match="no AWS credentials found"):
        startup_check(Settings(bucket=BUCKET, s3_endpoint_url=f"http://127.0.0.1:{dead_port()}"))


def test_partial_credentials(monkeypatch):
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(UpstreamCredentials) as info:
        startup_check(Settings(bucket=BUCKET, s3_endpoint_url=f"http://127.0.0.1:{dead_port()}"))
    assert "missing: AWS_SECRET_ACCESS_KEY" in info.value.detail


def test_startup_check_false_skips_it():
    with BlackHole() as hole:
        startup_check(Settings(bucket=BUCKET, s3_endpoint_url=hole.url, startup_check=False))
        assert hole.accepted == 0
