"""End to end: S3 website endpoint -> 302 -> resize server -> stored -> served by S3 alone."""

from __future__ import annotations

import subprocess
import time

import pytest
import requests

from resize_server import devstack
from tests.conftest import dimensions

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def earth(stack):
    data, content_type = devstack.sample_images()["samples/earth.jpg"]
    stack.client.put_object(Bucket=stack.bucket, Key="samples/earth.jpg", Body=data, ContentType=content_type)
    return data


def curl(stack, path: str, *, follow: bool, output) -> tuple[int, int, str]:
    """The README's curl command: (final status, number of redirects followed, final URL)."""
    args = ["curl", "-sS", "--max-time", "30", "--resolve", f"{stack.website_host}:127.0.0.1",
            "-o", str(output), "-w", "%{http_code} %{num_redirects} %{url_effective}"]
    if follow:
        args.append("-L")
    out = subprocess.run([*args, f"http://{stack.website_host}/{path}"], capture_output=True, text=True,
                         timeout=40, check=True).stdout
    status, redirects, url = out.split(" ", 2)
    return int(status), int(redirects), url


def website_get(stack, path: str) -> requests.Response:
    """A request to the website endpoint, without following redirects."""
    return requests.get(f"http://127.0.0.1:{stack.s3_port}/{path}", headers={"Host": stack.website_host},
                        allow_redirects=False, timeout=10)


def test_samples_include_a_large_photo(earth):
    fmt, width, height = dimensions(earth)
    assert fmt == "JPEG" and width * height >= 12_000_000


def test_miss_redirects_renders_stores_then_s3_serves_it(stack, earth, tmp_path):
    key = "samples/earth_200x200.jpg"

    first = website_get(stack, key)
    assert first.status_code == 302
    assert first.headers["Location"] == f"http://127.0.0.1:{stack.resize_port}/resize.php?src={key}"

    status, redirects, url = curl(stack, key, follow=True, output=tmp_path / "first.jpg")
    assert (status, redirects) == (200, 1)
    assert url == first.headers["Location"]
    body = (tmp_path / "first.jpg").read_bytes()
    assert dimensions(body) == ("JPEG", 200, 133)

    # The store happens after the response: wait (bounded) until the server logs it
    # as done (polling the bucket could catch s3rver between writing an object and
    # writing its metadata).
    deadline = time.monotonic() + 10
    while not any(e.get("msg") == "stored" and e.get("key") == key for e in stack.log_events()):
        assert time.monotonic() < deadline, "the server never stored the derived image"
        time.sleep(0.1)
    second = website_get(stack, key)
    assert second.status_code == 200
    assert "Location" not in second.headers
    assert second.headers["x-amz-storage-class"] == "REDUCED_REDUNDANCY"
    assert second.headers["Content-Type"] == "image/jpeg"
    assert second.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert second.content == body

    status, redirects, _ = curl(stack, key, follow=True, output=tmp_path / "second.jpg")
    assert (status, redirects) == (200, 0)

    head = stack.client.head_object(Bucket=stack.bucket, Key=key)
    assert head["Metadata"]["derived-from"] == "samples/earth.jpg"


def test_exif_rotated_photo_comes_out_upright_through_the_stack(stack, tmp_path):
    stack.client.put_object(Bucket=stack.bucket, Key="samples/portrait.jpg",
                            Body=(devstack.SAMPLES / "portrait-exif6.jpg").read_bytes())
    status, redirects, _ = curl(stack, "samples/portrait_x200.jpg", follow=True, output=tmp_path / "p.jpg")
    assert (status, redirects) == (200, 1)
    assert dimensions((tmp_path / "p.jpg").read_bytes()) == ("JPEG", 133, 200)


@pytest.mark.parametrize("path, status", [
    ("samples/nothing_200x200.jpg", 404),   # source missing: 404, never a redirect back to S3
    ("samples/earth.png", 404),             # not a derived name
    ("samples/earth_201x200.jpg", 403),     # size not allowed
    ("samples/earth_0x200.jpg", 400),
])
def test_errors_end_at_the_resize_server_without_a_loop(stack, earth, tmp_path, path, status):
    got_status, redirects, url = curl(stack, path, follow=True, output=tmp_path / "out")
    assert (got_status, redirects) == (status, 1)
    assert url.startswith(stack.resize_url + "/resize.php?src=")


def test_health_endpoints(stack):
    assert requests.get(stack.resize_url + "/healthz", timeout=5).status_code == 200
    assert requests.get(stack.resize_url + "/readyz", timeout=5).status_code == 200
