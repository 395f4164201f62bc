"""The nginx front for the image domain (deploy/nginx.conf): real nginx -> s3rver, misses -> gunicorn.

nginx proxies the bucket (path-style, unsigned); on S3's 403/404 it hands the original request
URI to the resize server, and a key that cannot be derived gets deploy/placeholder.png with 404.
"""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from resize_server import devstack
from tests.conftest import dimensions, photo
from tests.e2e.conftest import ROOT, wait_until

pytestmark = pytest.mark.e2e
PLACEHOLDER = (ROOT / "deploy" / "placeholder.png").read_bytes()


@pytest.fixture(scope="module")
def front(make_front):
    front = make_front("front", RESIZE_PRESETS="small=200x200")
    for key in ("photos/earth.jpg", "photos/my photo+1.jpg", "photos/100%41.jpg"):
        front.client.put_object(Bucket=front.bucket, Key=key, Body=photo("Landscape_1.jpg"), ContentType="image/jpeg")
    return front


def get(front, path: str, **kwargs) -> requests.Response:
    return requests.get(front.image_url + path, timeout=30, **kwargs)


def assert_no_s3_headers(response: requests.Response) -> None:
    leaked = [name for name in response.headers if name.lower().startswith("x-amz-")]
    assert not leaked, leaked


def stored(front, key: str) -> bool:
    return bool(front.events(key, "stored"))


def test_the_template_fills_in_like_envsubst(tmp_path):
    values = devstack.nginx_values(tmp_path, listen="127.0.0.1:1", image_listen="127.0.0.1:2",
                                   upstream="unix:/run/x.sock", s3_origin="http://127.0.0.1:3", bucket="b")
    template = (ROOT / "deploy" / "nginx.conf").read_text()
    names = " ".join("${%s}" % name for name in devstack.NGINX_VARIABLES)
    by_envsubst = subprocess.run(["envsubst", names], input=template, env=values, capture_output=True, text=True,
                                 check=True, timeout=10).stdout
    ours = devstack.render_template(template, values)
    assert ours == by_envsubst
    directives = "\n".join(line for line in ours.splitlines() if not line.lstrip().startswith("#"))
    assert "$RESIZE_" not in directives and "${RESIZE_" not in directives
    assert "$request_uri" in directives and "$uri" in directives  # nginx's own variables stay


def test_miss_is_rendered_then_served_from_the_bucket(front):
    key = "photos/earth_200x200.jpg"
    first = get(front, "/" + key)
    assert first.status_code == 200
    assert (first.headers["X-Image-Origin"], first.headers["X-Resize-Source"]) == ("resize-server", "render")
    assert dimensions(first.content) == ("JPEG", 200, 133)
    wait_until(lambda: stored(front, key), 15, "the resize server did not store the image")
    served_before = len(front.events(key))

    second = get(front, "/" + key)
    assert second.status_code == 200
    assert second.headers["X-Image-Origin"] == "bucket"
    assert "X-Resize-Source" not in second.headers
    assert second.content == first.content
    assert second.headers["ETag"] == first.headers["ETag"]
    assert second.headers["Last-Modified"]
    assert second.headers["Cache-Control"] == first.headers["Cache-Control"]
    assert_no_s3_headers(first)
    assert_no_s3_headers(second)
    time.sleep(0.3)
    assert len(front.events(key)) == served_before  # the resize server never saw the second request

    # Conditional requests reach S3 and come back as S3 answers them.
    again = get(front, "/" + key, headers={"If-None-Match": second.headers["ETag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("path, key", [
    ("/photos/my%20photo+1_200x200.jpg", "photos/my photo+1_200x200.jpg"),        # as a browser sends it
    ("/photos/my%20photo%2B1_100x100.jpg", "photos/my photo+1_100x100.jpg"),      # `+` encoded
    ("/photos/100%2541_200x200.jpg", "photos/100%41_200x200.jpg"),                # a literal %41, encoded once
])
def test_keys_are_decoded_once_on_both_ways(front, path, key):
    first = get(front, path)
    assert first.status_code == 200, first.text
    assert first.headers["X-Image-Origin"] == "resize-server"
    assert dimensions(first.content)[0] == "JPEG"
    wait_until(lambda: stored(front, key), 15, f"{key} not stored under that key")
    assert front.client.head_object(Bucket=front.bucket, Key=key)["ContentLength"] == len(first.content)

    second = get(front, path)
    assert (second.status_code, second.headers["X-Image-Origin"]) == (200, "bucket")
    assert second.content == first.content


def test_preset_path_form(front):
    key = "p/small/photos/earth.jpg"
    first = get(front, "/" + key)
    assert first.status_code == 200, first.text
    assert first.headers["X-Image-Origin"] == "resize-server"
    assert dimensions(first.content) == ("JPEG", 200, 133)
    wait_until(lambda: stored(front, key), 15)
    second = get(front, "/" + key)
    assert (second.status_code, second.headers["X-Image-Origin"]) == (200, "bucket")
    assert second.content == first.content


@pytest.mark.parametrize("path", [
    "/photos/earth.txt",                 # not a derived image name
    "/photos/nothing_200x200.jpg",       # derived name, no source
    "/p/nosuchpreset/photos/earth.jpg",  # an unknown preset
])
def test_a_key_that_cannot_be_derived_gets_the_placeholder_with_404(front, path):
    response = get(front, path)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["X-Image-Origin"] == "placeholder"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.content == PLACEHOLDER and len(PLACEHOLDER) < 1024
    assert dimensions(response.content)[0] == "PNG"
    assert b"<Error>" not in response.content
    assert_no_s3_headers(response)


def test_other_errors_pass_through_as_the_resize_server_words_them(front):
    response = get(front, "/photos/earth_0x0.jpg")
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/plain")


def test_the_bucket_is_only_read(front):
    assert requests.get(f"{front.image_url}/", timeout=10).status_code == 404  # no bucket listing
    original = get(front, "/photos/earth.jpg?acl")  # the query never reaches S3
    assert (original.status_code, original.headers["Content-Type"]) == (200, "image/jpeg")
    assert original.content == photo("Landscape_1.jpg")
    for method in ("PUT", "DELETE", "POST"):
        assert requests.request(method, f"{front.image_url}/photos/earth.jpg", data=b"x", timeout=10).status_code == 405
    assert front.client.head_object(Bucket=front.bucket, Key="photos/earth.jpg")["ContentLength"] > 1
    assert not [e for e in front.log_events() if e.get("key") == "photos/earth.jpg"]


def test_20_concurrent_misses_for_one_key_render_once(front):
    # A 13.5 MP source, so the render outlasts the burst's arrival: every request misses the bucket.
    # (A request landing while the store is being written could read s3rver's half-written object:
    # s3rver writes the bytes and the metadata separately; S3's PUT is atomic.)
    earth, _ = devstack.sample_images()["samples/earth.jpg"]
    front.client.put_object(Bucket=front.bucket, Key="photos/burst.jpg", Body=earth, ContentType="image/jpeg")
    key = "photos/burst_400x400.jpg"
    start = threading.Barrier(20)

    def one(_):
        with requests.Session() as session:
            start.wait(10)
            return session.get(front.image_url + "/" + key, timeout=30)

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(one, range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.content for r in responses}) == 1
    assert dimensions(responses[0].content) == ("JPEG", 400, 267)
    assert {r.headers["X-Image-Origin"] for r in responses} == {"resize-server"}
    wait_until(lambda: stored(front, key), 15)
    time.sleep(0.3)
    outcomes = [e["outcome"] for e in front.events(key)]
    assert len(outcomes) == 20
    assert outcomes.count("rendered") == 1, outcomes
    assert len(front.events(key, "stored")) == 1


@pytest.mark.parametrize("path", ["/metrics", "/readyz"])
def test_operators_endpoints_are_not_public(front, path):
    """Through a balancer or CDN (X-Forwarded-For) or on the image domain: 404; from inside: answered."""
    inside = requests.get(front.resize_url + path, timeout=30)
    assert inside.status_code == 200
    forwarded = requests.get(front.resize_url + path, headers={"X-Forwarded-For": "203.0.113.9"}, timeout=30)
    assert forwarded.status_code == 404
    image_domain = get(front, path)
    assert image_domain.status_code == 404 and image_domain.headers["Content-Type"].startswith("text/plain")
    assert requests.get(front.resize_url + "/healthz", headers={"X-Forwarded-For": "203.0.113.9"},
                        timeout=30).status_code == 200  # the balancer's health check still works


def test_s3_errors_other_than_a_miss_are_short_text_not_xml(front):
    response = get(front, "/photos/" + "a" * 1100 + "_200x200.jpg")  # s3rver: 500 InternalError for a long key
    assert response.status_code in (400, 502)
    assert "xml" not in response.headers["Content-Type"] and b"<Error>" not in response.content
    post = requests.post(front.image_url + "/photos/earth.jpg", data=b"x", timeout=30)
    assert post.status_code == 405 and post.headers["Content-Type"].startswith("text/plain")
    assert post.headers["Allow"] == "GET, HEAD"
