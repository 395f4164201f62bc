"""The ``resize-server`` commands, run in-process with click's runner against moto and loopback endpoints.

``serve`` ends in ``os.execv`` (gunicorn replaces the process): here that call
is recorded instead, so a test sees whether serve got past its checks, and a
broken test can never replace the pytest process.
"""

from __future__ import annotations

import os
import shlex
import time

import pytest
from click.testing import CliRunner
from moto import mock_aws

from resize_server import __version__
from resize_server.cli import main
from resize_server.config import DEFAULT_SIZES, Settings
from resize_server.storage import s3 as s3_module
from tests.conftest import BUCKET, photo
from tests.http.test_s3_faults import Injector, error_response
from tests.netfaults import BlackHole, dead_port


def inject_all(client, operation: str, fault) -> Injector:
    """Fault every request of ``operation``, whatever its key."""
    return Injector(client, operation, fault, key=None)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Only the RESIZE_* variables a test sets (not the developer's)."""
    for name in list(os.environ):
        if name.startswith("RESIZE_"):
            monkeypatch.delenv(name)
    yield
    for name in list(os.environ):
        if name.startswith("RESIZE_"):
            del os.environ[name]  # serve --bind exports RESIZE_BIND for gunicorn_conf: not for the next test


@pytest.fixture(autouse=True)
def execs(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda path, args: calls.append(list(args)))
    return calls


def run(*args: str, **env: str | None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def one_error_line(result) -> str:
    """The single line a failed command prints (click's ``Error: ...``)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# ---- --version and check-config --------------------------------------------------------------------


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"resize-server, version {__version__}"


def test_check_config_prints_every_value_as_the_user_writes_it():
    result = run("check-config", RESIZE_BUCKET="images", RESIZE_CACHE_CONTROL="public, max-age=60")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert f"RESIZE_ALLOWED_SIZES={DEFAULT_SIZES}" in lines
    assert "RESIZE_CACHE_CONTROL='public, max-age=60'" in lines
    assert "RESIZE_UPSCALE=false" in lines and "RESIZE_STARTUP_CHECK=true" in lines
    assert "RESIZE_S3_CONNECT_TIMEOUT=2" in lines and "RESIZE_READY_TIMEOUT=3" in lines
    assert "RESIZE_BIND=127.0.0.1:8080" in lines
    settings = Settings(bucket="images")
    assert "RESIZE_WORKERS=1" in lines and "RESIZE_GRACEFUL_TIMEOUT=30" in lines
    assert f"RESIZE_THREADS={settings.render_concurrency + settings.queue_size + 8}" in lines
    for leak in ("None", "frozenset", "True", "False", "2.0"):
        assert leak not in result.stdout
    # What it prints, fed back as the environment, is the same configuration.
    env = dict(line.split("=", 1) for line in lines)
    reread = Settings.from_env({name: shlex.split(value)[0] for name, value in env.items()})
    assert reread.environment() == Settings(bucket="images", cache_control="public, max-age=60").environment()


@pytest.mark.parametrize("sizes, shown", [("*", "'*'"), ("200x200,x200", "200x200,x200"), ("x100, 300x,50x50", "50x50,300x,x100")])
def test_check_config_prints_sizes_as_written(sizes, shown):
    result = run("check-config", RESIZE_BUCKET="images", RESIZE_ALLOWED_SIZES=sizes)
    assert f"RESIZE_ALLOWED_SIZES={shown}" in result.stdout.splitlines()


def test_check_config_blames_the_variable_that_was_set():
    result = run("check-config", RESIZE_BUCKET="images", RESIZE_MAX_WIDTH="500")
    assert result.exit_code == 1
    assert ("RESIZE_MAX_WIDTH=500: is smaller than the allowed sizes 800x800,1024x1024 (from the default "
            "RESIZE_ALLOWED_SIZES)") in result.stderr
    assert "RESIZE_ALLOWED_SIZES=" not in result.stderr and "frozenset" not in result.stderr


# ---- serve: configuration and the start-up check, before gunicorn ---------------------------------


@pytest.mark.parametrize("env, message", [
    ({"RESIZE_WORKERS": "abc"}, "RESIZE_WORKERS='abc': must be a whole number"),
    ({"RESIZE_THREADS": "0"}, "RESIZE_THREADS=0: must be at least 1"),
    ({"RESIZE_BIND": "localhost"}, "RESIZE_BIND=localhost: needs a port: write localhost:8080"),
    ({"RESIZE_SOURCE_PREFIXES": "/samples"}, "RESIZE_SOURCE_PREFIXES=/samples: no S3 key starts with '/': write samples/"),
])
def test_serve_refuses_bad_configuration_in_the_users_terms(execs, env, message):
    result = run("serve", RESIZE_BUCKET="images", **env)
    assert result.exit_code == 1
    assert message in result.stderr
    assert "invalid literal" not in result.output and "Traceback" not in result.output
    assert execs == []


def test_serve_bind_option_is_validated(execs):
    result = run("serve", "--bind", "localhost", RESIZE_BUCKET="images")
    assert result.exit_code == 1 and "RESIZE_BIND=localhost: needs a port" in result.stderr
    assert execs == []


def test_serve_with_an_unreachable_endpoint_exits_with_one_line(execs):
    url = f"http://127.0.0.1:{dead_port()}"
    result = run("serve", RESIZE_BUCKET="images", RESIZE_S3_ENDPOINT_URL=url)
    assert result.exit_code == 1
    line = one_error_line(result)
    assert line.startswith("Error: start-up check failed: storage backend error: HeadBucket s3://images: "
                           f"cannot reach the S3 endpoint {url}/images")
    assert line.endswith("(RESIZE_STARTUP_CHECK=false skips this check)")
    assert execs == []


def test_serve_against_a_black_hole_gives_up_after_the_ready_timeout(execs):
    with BlackHole() as hole:
        started = time.monotonic()
        result = run("serve", RESIZE_BUCKET="images", RESIZE_S3_ENDPOINT_URL=hole.url, RESIZE_READY_TIMEOUT="1")
        elapsed = time.monotonic() - started
        assert hole.accepted == 1
    # bounded by RESIZE_READY_TIMEOUT (1 s), not by the request client's 3 x 10 s (the margin: building the client)
    assert result.exit_code == 1 and elapsed < 1 + 2
    assert "storage backend timed out: HeadBucket s3://images: Read timeout" in one_error_line(result)
    assert execs == []


def test_serve_without_credentials_says_so(no_credentials, execs):
    result = run("serve", RESIZE_BUCKET="images", RESIZE_S3_ENDPOINT_URL=f"http://127.0.0.1:{dead_port()}")
    assert result.exit_code == 1
    assert "no AWS credentials found" in one_error_line(result)
    assert execs == []


def test_serve_with_a_missing_bucket_names_it(execs):
    with mock_aws():
        result = run("serve", RESIZE_BUCKET="no-such-bucket")
    assert result.exit_code == 1
    assert "bucket 'no-such-bucket' does not exist" in one_error_line(result)
    assert execs == []


def test_serve_starts_gunicorn_when_the_bucket_is_reachable(execs):
    with mock_aws():
        make = s3_module.make_client(Settings(bucket=BUCKET))
        make.create_bucket(Bucket=BUCKET)
        result = run("serve", "--bind", "127.0.0.1:9999", RESIZE_BUCKET=BUCKET)
    assert result.exit_code == 0, result.output
    assert len(execs) == 1 and "gunicorn" in execs[0] and "resize_server.http:create_app()" in execs[0]


def test_startup_check_false_skips_the_check(execs):
    result = run("serve", RESIZE_BUCKET="images", RESIZE_S3_ENDPOINT_URL=f"http://127.0.0.1:{dead_port()}",
                 RESIZE_STARTUP_CHECK="false")
    assert result.exit_code == 0, result.output
    assert len(execs) == 1


# ---- render and setup-bucket print the cause -------------------------------------------------------


def test_render_without_credentials_prints_the_cause(no_credentials):
    result = run("render", "samples/earth_100x100.jpg", RESIZE_BUCKET="images",
                 RESIZE_S3_ENDPOINT_URL=f"http://127.0.0.1:{dead_port()}")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "samples/earth_100x100.jpg\t502 storage backend error: GetObject s3://images/samples/earth.jpg: no AWS "
        "credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an "
        "instance role)")


def test_render_with_an_unreachable_endpoint_names_it():
    url = f"http://127.0.0.1:{dead_port()}"
    result = run("render", "samples/earth_100x100.jpg", RESIZE_BUCKET="images", RESIZE_S3_ENDPOINT_URL=url,
                 RESIZE_S3_MAX_ATTEMPTS="1")
    assert result.exit_code == 1
    assert f"502 storage backend error: GetObject s3://images/samples/earth.jpg: cannot reach the S3 endpoint {url}/" \
        in result.stderr


def test_render_names_a_missing_bucket_and_a_missing_source():
    with mock_aws():
        missing_bucket = run("render", "samples/earth_100x100.jpg", RESIZE_BUCKET="no-such-bucket")
        client = s3_module.make_client(Settings(bucket=BUCKET))
        client.create_bucket(Bucket=BUCKET)
        missing_source = run("render", "samples/earth_100x100.jpg", RESIZE_BUCKET=BUCKET)
    assert missing_bucket.exit_code == 1
    assert "502 storage backend error: GetObject s3://no-such-bucket/samples/earth.jpg: bucket 'no-such-bucket' " \
           "does not exist" in missing_bucket.stderr
    # every extension the source may have was looked for (format conversion)
    assert "404 source image not found: none of samples/earth.jpeg, samples/earth.jpg" in missing_source.stderr


def test_render_stores_the_image():
    with mock_aws():
        client = s3_module.make_client(Settings(bucket=BUCKET))
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key="samples/earth.jpg", Body=photo("Landscape_1.jpg"))
        result = run("render", "samples/earth_100x100.jpg", RESIZE_BUCKET=BUCKET)
        stored = client.head_object(Bucket=BUCKET, Key="samples/earth_100x100.jpg")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("samples/earth_100x100.jpg\t100x67\t")
    assert stored["ContentType"] == "image/jpeg"


@pytest.fixture
def inject(monkeypatch):
    """Faults for the client the CLI builds itself: ``inject("PutBucketPolicy", fault)`` before invoking it."""
    faults: list[tuple[str, object]] = []
    real = s3_module.make_client

    def make_client(*args, **kwargs):
        client = real(*args, **kwargs)
        for operation, fault in faults:
            inject_all(client, operation, fault)
        return client

    monkeypatch.setattr(s3_module, "make_client", make_client)
    return lambda operation, fault: faults.append((operation, fault))


BLOCKED = ("User: arn:aws:iam::123456789012:user/admin is not authorized to perform: s3:PutBucketPolicy on resource: "
           "\"arn:aws:s3:::images\" because public policies are blocked by the BlockPublicPolicy block public access "
           "setting.")


@pytest.mark.parametrize("code, message, says", [
    ("AccessDenied", BLOCKED, "S3 Block Public Access refuses the public-read bucket policy"),
    ("AccessDenied", "Access Denied", "lack s3:PutBucketPolicy on arn:aws:s3:::images"),
    ("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.",
     "storage backend error: PutBucketPolicy s3://images: InvalidAccessKeyId: the access key id is not known"),
])
def test_setup_bucket_names_the_cause(inject, code, message, says):
    inject("PutBucketPolicy", lambda request, attempt: error_response(request.url, 403, code, message))
    with mock_aws():
        s3_module.make_client(Settings(bucket=BUCKET)).create_bucket(Bucket=BUCKET)
        result = run("setup-bucket", "--host", "resize.example.com", RESIZE_BUCKET=BUCKET)
    assert result.exit_code == 1
    assert says in one_error_line(result)


def test_setup_bucket_without_credentials(no_credentials):
    result = run("setup-bucket", "--host", "resize.example.com", RESIZE_BUCKET="images",
                 RESIZE_S3_ENDPOINT_URL=f"http://127.0.0.1:{dead_port()}")
    assert result.exit_code == 1
    assert "Error: storage backend error: PutBucketWebsite s3://images: no AWS credentials found" in one_error_line(result)


def test_setup_bucket_on_moto():
    with mock_aws():
        client = s3_module.make_client(Settings(bucket=BUCKET))
        client.create_bucket(Bucket=BUCKET)
        result = run("setup-bucket", "--host", "resize.example.com", RESIZE_BUCKET=BUCKET)
        rules = client.get_bucket_website(Bucket=BUCKET)["RoutingRules"]
    assert result.exit_code == 0, result.output
    assert rules[0]["Redirect"]["HostName"] == "resize.example.com"


def test_check_config_hides_secrets():
    result = run("check-config", RESIZE_BUCKET="images", RESIZE_API_KEYS="key-number-one,key-number-two",
                 RESIZE_REDIS_URL="redis://:s3cret@127.0.0.1:6379/0")
    assert result.exit_code == 0, result.output
    assert "key-one" not in result.stdout and "s3cret" not in result.stdout
    lines = result.stdout.splitlines()
    assert "RESIZE_API_KEYS='<2 key(s) hidden>'" in lines
    assert "RESIZE_REDIS_URL='redis://:***@127.0.0.1:6379/0'" in lines


def test_serve_names_a_busy_port_in_one_line(monkeypatch):
    import socket

    def no_exec(*args):  # should the check let it through, fail here instead of replacing pytest with gunicorn
        raise AssertionError("serve went on to exec gunicorn on a busy port")

    monkeypatch.setattr("os.execv", no_exec)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", RESIZE_BUCKET=BUCKET, RESIZE_STARTUP_CHECK="false", RESIZE_BIND=f"127.0.0.1:{port}")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: 127.0.0.1:{port} is in use: set RESIZE_BIND (or --bind) to another address"
