"""``resize-server doctor`` as a user runs it, against the local stack: s3rver prepared like `make run`, redis-server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from resize_server import devstack
from resize_server.storage.s3 import S3Storage
from resize_server.website import read_deploy_file, website_configuration
from tests.conftest import photo
from tests.e2e.conftest import start_redis

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
RESIZE_HOST = "127.0.0.1:8080"
CLI = str(Path(sys.executable).parent / "resize-server")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    port = devstack.free_port()
    with open(tmp_path_factory.mktemp("redis") / "redis.log", "wb") as log:
        proc = start_redis(port, log)
    yield f"redis://127.0.0.1:{port}/0"
    devstack.stop(proc)
    assert proc.poll() is not None


@pytest.fixture
def bucket(s3rver, request):
    name = "doctor-" + request.node.name.split("[")[0].replace("_", "-")[-40:].strip("-")
    client = devstack.s3rver_client(s3rver)
    devstack.prepare_bucket(client, name, RESIZE_HOST)  # what `make run` does
    client.put_object(Bucket=name, Key="samples/earth.jpg", Body=photo(), ContentType="image/jpeg")
    return client, name


def run_doctor(s3_port: int, bucket: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **devstack.server_env(s3_port, bucket), "MAGICK_CONFIGURE_PATH": str(ROOT / "deploy"),
                **env}
    return subprocess.run([CLI, "doctor", "--host", RESIZE_HOST, *args], env=full_env, capture_output=True,
                          text=True, timeout=60)


def statuses(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        if line[:4] in ("PASS", "FAIL", "SKIP") and line[4:6] == "  ":
            found[line[6:].split("  ")[0].strip()] = line[:4]
    return found


def test_the_local_stack_passes_every_check(s3rver, bucket, redis_url):
    client, name = bucket
    result = run_doctor(s3rver, name, RESIZE_REDIS_URL=redis_url)
    assert result.returncode == 0, result.stdout + result.stderr
    found = statuses(result.stdout)
    assert found == {
        "configuration": "PASS", "credentials": "PASS", "bucket": "PASS", "website": "PASS",
        "redirect host": "PASS", "bucket policy": "SKIP", "read a source": "PASS", "write a derived key": "PASS",
        "imagemagick coders": "PASS", "imagemagick limits": "PASS", "redis": "PASS", "queue": "SKIP",
    }, result.stdout
    assert "not checked: this S3 server does not implement bucket policies" in result.stdout
    assert "read samples/earth.jpg" in result.stdout
    assert "answered PING" in result.stdout
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=name).get("Contents", [])]
    assert keys == ["samples/earth.jpg"]  # the write probe was deleted


def test_a_missing_website_configuration_fails_with_its_fix(s3rver, bucket):
    client, name = bucket
    client.delete_bucket_website(Bucket=name)
    result = run_doctor(s3rver, name)
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    [failure] = [i for i, line in enumerate(lines) if line.startswith("FAIL")]
    assert lines[failure].startswith("FAIL  website")
    assert f"bucket {name} has no website configuration" in lines[failure]
    assert lines[failure + 1].strip() == f"fix: resize-server setup-bucket --host {RESIZE_HOST}"


def test_a_redirect_to_another_host_fails(s3rver, bucket):
    client, name = bucket
    # stale: the rules still point at an old balancer
    S3Storage(client, name).configure_website(
        website_configuration(read_deploy_file("routing_rules.xml"), "10.1.2.3:8080"), None)
    result = run_doctor(s3rver, name)
    assert result.returncode == 1
    assert statuses(result.stdout)["redirect host"] == "FAIL"
    assert f"the rules point at 10.1.2.3:8080, not at {RESIZE_HOST}" in result.stdout


def test_the_system_imagemagick_policy_fails_the_coder_and_limit_checks(s3rver, bucket, tmp_path):
    """Without deploy/policy.xml, Debian's own policy allows MVG, SVG, TEXT... and temporary files."""
    client, name = bucket
    (tmp_path / "policy.xml").write_text('<policymap><policy domain="resource" name="disk" value="1GiB"/></policymap>')
    result = run_doctor(s3rver, name, MAGICK_CONFIGURE_PATH=str(tmp_path))
    assert result.returncode == 1
    found = statuses(result.stdout)
    assert found["imagemagick coders"] == "FAIL" and found["imagemagick limits"] == "FAIL", result.stdout
    assert "the policy lets ImageMagick read or write MVG" in result.stdout
    assert "the pixel cache may spill to temporary files" in result.stdout
    assert "fix: use the policy shipped in deploy/policy.xml" in result.stdout
    assert [k for k, v in found.items() if v == "FAIL"] == ["imagemagick coders", "imagemagick limits"]
