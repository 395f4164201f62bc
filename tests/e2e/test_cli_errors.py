"""The CLI against a real s3rver: the cause of each S3 failure is printed, and ``serve`` refuses to start on one.

These are the issue's reproductions: no credentials, a wrong access key, a
missing bucket, run as a user would run them (the installed ``resize-server``
script in a subprocess, with the environment the README gives).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from resize_server import devstack
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

SCRIPT = str(Path(sys.executable).with_name("resize-server"))
NO_AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE")


@pytest.fixture(scope="module")
def bucket(s3rver):
    client = devstack.s3rver_client(s3rver)
    client.create_bucket(Bucket="clitest")
    client.put_object(Bucket="clitest", Key="samples/earth.jpg", Body=(ROOT / "samples" / "landscape.jpg").read_bytes(),
                      ContentType="image/jpeg")
    return "clitest"


def environment(s3rver: int, bucket: str, **extra: str) -> dict[str, str]:
    """The process environment: nothing AWS or RESIZE_* from outside, instance metadata off (it is not loopback)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESIZE_") and k not in NO_AWS}
    env.update(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_EC2_METADATA_DISABLED="true",
               MAGICK_CONFIGURE_PATH=str(ROOT / "deploy"), RESIZE_BUCKET=bucket,
               RESIZE_S3_ENDPOINT_URL=f"http://127.0.0.1:{s3rver}")
    env.update(extra)
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], env=env, capture_output=True, text=True, timeout=60)


GOOD = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER"}
WRONG_KEY = {"AWS_ACCESS_KEY_ID": "WRONGKEY", "AWS_SECRET_ACCESS_KEY": "S3RVER"}


def test_render_without_credentials_names_them(s3rver, bucket):
    """Was: "502 storage backend error" and nothing else, even at DEBUG."""
    result = cli(environment(s3rver, bucket), "render", "samples/earth_100x100.jpg")
    assert result.returncode == 1
    assert (f"samples/earth_100x100.jpg\t502 storage backend error: GetObject s3://{bucket}/samples/earth.jpg: "
            "no AWS credentials found") in result.stderr


def test_render_with_a_wrong_key_is_a_credentials_problem(s3rver, bucket):
    """Was: "InvalidAccessKeyId: the server's credentials need s3:GetObject on arn:..."."""
    result = cli(environment(s3rver, bucket, **WRONG_KEY), "render", "samples/earth_100x100.jpg")
    assert result.returncode == 1
    assert "InvalidAccessKeyId: the access key id WRONGKEY is not known to http://127.0.0.1:" in result.stderr
    assert "need s3:" not in result.stderr and "lack s3:" not in result.stderr


def test_render_with_good_credentials_works(s3rver, bucket):
    result = cli(environment(s3rver, bucket, **GOOD), "render", "samples/earth_100x100.jpg")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("samples/earth_100x100.jpg\t100x")


def test_setup_bucket_with_a_wrong_key_is_a_credentials_problem(s3rver, bucket):
    """Was: "...need s3:PutBucketWebsite/PutBucketPolicy"."""
    result = cli(environment(s3rver, bucket, **WRONG_KEY), "setup-bucket", "--host", "127.0.0.1:1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: storage backend error: PutBucketWebsite s3://{bucket}: InvalidAccessKeyId: the access key id "
        f"WRONGKEY is not known to http://127.0.0.1:{s3rver}: it is mistyped, deleted, or for another account or "
        "endpoint (check AWS_ACCESS_KEY_ID, AWS_PROFILE or the role)"]


@pytest.mark.parametrize("env, cause", [
    ({}, "no AWS credentials found"),
    (WRONG_KEY, "ListObjectsV2 s3://{bucket}: InvalidAccessKeyId: the access key id WRONGKEY is not known"),
    ({**GOOD, "RESIZE_BUCKET": "no-such-bucket"}, "bucket 'no-such-bucket' does not exist at http://127.0.0.1:"),
], ids=["no-credentials", "wrong-key", "no-bucket"])
def test_serve_refuses_to_start_and_says_why(s3rver, bucket, env, cause):
    """Was: serve started, /healthz said 200, and every request failed."""
    started = time.monotonic()
    result = cli(environment(s3rver, bucket, RESIZE_BIND=f"127.0.0.1:{devstack.free_port()}", **env), "serve")
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: start-up check failed: storage backend error: ")
    assert cause.format(bucket=bucket) in lines[0]


def test_serve_starts_when_the_bucket_is_reachable(s3rver, bucket, tmp_path):
    port = devstack.free_port()
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen([SCRIPT, "serve", "--bind", f"127.0.0.1:{port}"], env=environment(
            s3rver, bucket, RESIZE_WORKERS="1", **GOOD), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        devstack.wait_for_port(port, proc, timeout=30)
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).text == "ok\n"
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).text == "ready\n"
    finally:
        devstack.stop(proc)
    assert proc.poll() is not None
