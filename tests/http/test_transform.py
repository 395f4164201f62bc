"""POST /transform: operations on an uploaded image, auth, body caps, JSON errors."""

from __future__ import annotations

import io
import json

import pytest
from wand.image import Image

from resize_server.http import create_app
from tests.conftest import BUCKET, dimensions, is_grayscale, mean_rgb, photo, png_with_alpha

KEY = "s3cret-key-1"


@pytest.fixture
def api(storage):
    app = create_app({"bucket": BUCKET, "api_keys": f"other-key-0001,{KEY}", "max_upload_bytes": 2_000_000},
                     storage=storage)
    return app.test_client()


def post(client, query="", data=None, key=KEY, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post("/transform" + (f"?{query}" if query else ""), data=photo() if data is None else data,
                       headers=headers, **kwargs)


def error_of(response) -> dict:
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    return json.loads(response.get_data(as_text=True))


def test_grayscale_resize_returns_a_grey_jpeg_of_the_asked_width(api):
    response = post(api, "grayscale=1&w=400")
    assert response.status_code == 200
    assert response.mimetype == "image/jpeg"
    assert int(response.headers["Content-Length"]) == len(response.data)
    assert response.headers["ETag"].strip('"')
    assert dimensions(response.data) == ("JPEG", 400, 267)
    assert is_grayscale(response.data)


@pytest.mark.parametrize("query, fmt, size", [
    ("format=webp&w=300", "WEBP", (300, 200)),
    ("format=png&w=90&h=90&pad=1", "PNG", (90, 90)),
    ("w=100&h=100&fill=1&gravity=north", "JPEG", (100, 100)),
    ("rotate=90&w=200", "JPEG", (200, 300)),  # rotated first, so the box applies to the portrait
    ("crop=0,0,900,600&w=300", "JPEG", (300, 200)),
    ("blur=2&w=120", "JPEG", (120, 80)),
    ("sharpen=1&quality=40&w=120", "JPEG", (120, 80)),
])
def test_operations(api, query, fmt, size):
    response = post(api, query)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert dimensions(response.data) == (fmt, *size)


def test_pad_is_transparent_in_png_and_coloured_in_jpeg(api):
    png = post(api, "format=png&w=200&h=200&pad=1").data
    with Image(blob=png) as img:
        assert img[100, 2].alpha == 0  # above the 200x133 photo: padding
        assert img[100, 100].alpha == 1
    jpeg = post(api, "w=200&h=200&pad=1&bg=ff0000").data
    assert mean_rgb(jpeg, (0, 0, 1, 0.1))[0] > 240 and mean_rgb(jpeg, (0, 0, 1, 0.1))[1] < 15


def test_crop_takes_source_pixels_before_the_resize(api):
    """The left half of the photo, alone, equals the left half of the whole photo at the same scale."""
    left = post(api, "crop=0,0,900,1200&w=90").data
    whole = post(api, "w=180").data
    assert dimensions(left) == ("JPEG", 90, 120)
    assert sum(abs(a - b) for a, b in zip(mean_rgb(left), mean_rgb(whole, (0, 0, 0.5, 1)))) < 6


def test_flip_and_flop_mirror_the_pixels(api):
    source = png_with_alpha(64, 48)  # left half red, right half transparent
    flopped = post(api, "flop=1", data=source).data
    with Image(blob=flopped) as img:
        assert img[5, 24].alpha == 0 and img[60, 24].alpha == 1


def test_sniffs_the_body_not_the_content_type(api):
    response = post(api, "w=50", data=png_with_alpha(), content_type="image/jpeg")
    assert response.status_code == 200
    assert response.mimetype == "image/png"


@pytest.mark.parametrize("query, status, parameter", [
    ("blur=1000", 400, "blur"),
    ("blur=0.1", 400, "blur"),
    ("blur=nan", 400, "blur"),
    ("sharpen=9", 400, "sharpen"),
    ("quality=0", 400, "quality"),
    ("quality=101", 400, "quality"),
    ("rotate=45", 400, "rotate"),
    ("format=tiff", 400, "format"),
    ("gravity=up&w=10&h=10&fill=1", 400, "gravity"),
    ("bg=red&pad=1&w=10&h=10", 400, "bg"),
    ("crop=1,2,3", 400, "crop"),
    ("crop=5000,0,10,10", 400, "crop"),
    ("w=abc", 400, None),
    ("w=5000", 400, None),
    ("frobnicate=1", 400, "frobnicate"),
    ("w=10&w=20", 400, "w"),
])
def test_bad_parameters_are_json_errors_naming_the_parameter(api, query, status, parameter):
    response = post(api, query)
    assert response.status_code == status
    body = error_of(response)
    assert body["error"]
    if parameter:
        assert body["parameter"] == parameter


def test_auth(api):
    missing = post(api, "w=10", key=None)
    assert missing.status_code == 401 and "Bearer" in missing.headers["WWW-Authenticate"]
    assert error_of(missing)["error"].startswith("missing API key")
    wrong = post(api, "w=10", key="nope")
    assert wrong.status_code == 403 and error_of(wrong)["error"] == "invalid API key"
    assert post(api, "w=10", key="other-key-0001").status_code == 200


def test_off_without_keys_unless_public(storage):
    closed = create_app({"bucket": BUCKET}, storage=storage).test_client()
    assert post(closed, "w=10", key=None).status_code == 404
    public = create_app({"bucket": BUCKET, "transform_public": "true"}, storage=storage).test_client()
    assert post(public, "w=10", key=None).status_code == 200


def test_on_demand_routes_never_need_a_key(s3, storage):
    s3.put_object(Bucket=BUCKET, Key="a.jpg", Body=photo())
    client = create_app({"bucket": BUCKET, "api_keys": KEY}, storage=storage).test_client()
    assert client.get("/a_50x50.jpg").status_code == 200


def test_get_and_empty_body(api):
    get = api.get("/transform")
    assert get.status_code == 405 and get.headers["Allow"] == "POST"
    assert "POST" in error_of(get)["error"]
    empty = post(api, "w=10", data=b"")
    assert empty.status_code == 400 and "empty" in error_of(empty)["error"]


def test_body_over_the_cap_is_413_whatever_content_length_says(api):
    big = b"\xff\xd8\xff" + b"\0" * 2_100_000
    declared = post(api, "w=10", data=big)
    assert declared.status_code == 413 and error_of(declared)["error"].startswith("request body is larger")
    # A client that lies: a small Content-Length... werkzeug limits the stream to it, so the body is cut
    # and then refused as a broken image, never read past the declaration.
    lying = api.post("/transform?w=10", input_stream=io.BytesIO(big), headers={
        "Authorization": f"Bearer {KEY}", "Content-Length": "100"})
    assert lying.status_code in (413, 415, 422)
    # Chunked (no Content-Length): capped while reading.
    chunked = api.post("/transform?w=10", input_stream=io.BytesIO(big), headers={
        "Authorization": f"Bearer {KEY}", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True})  # as gunicorn sets it for chunked bodies
    assert chunked.status_code == 413


@pytest.mark.parametrize("body, status", [(b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415),
                                          (b"\xff\xd8\xff\xe0garbage" * 10, 422)])
def test_same_format_allow_list_as_on_demand(api, body, status):
    response = post(api, "w=10", data=body)
    assert response.status_code == status
    assert error_of(response)["error"]


def test_options_is_a_plain_405_not_flasks_html(api):
    for url in ("/transform", "/samples/earth_200x200.jpg", "/healthz"):
        response = api.open(url, method="OPTIONS")
        assert response.status_code == 405
        assert set(response.headers["Allow"].split(", ")) & {"GET", "POST"}
        assert response.headers["Cache-Control"] == "no-store"
        assert response.mimetype in ("text/plain", "application/json")


def test_a_refused_request_is_answered_after_its_body_was_read(api):
    """Behind a buffering proxy, answering before the body is read makes the proxy say 502."""
    import io

    class Tracked(io.BytesIO):
        pass

    body = Tracked(photo())
    response = api.post("/transform?blur=1000", input_stream=body, headers={
        "Authorization": f"Bearer {KEY}", "Content-Length": str(len(photo()))})
    assert response.status_code == 400
    assert body.tell() == len(photo())  # drained
    body = Tracked(photo())
    response = api.post("/transform?w=10", input_stream=body, headers={"Content-Length": str(len(photo()))})
    assert response.status_code == 401 and body.tell() == len(photo())


def test_avif_exactly_when_this_imagemagick_encodes_it(api):
    service = api.application.extensions["resize"]
    response = post(api, "format=avif&w=64")
    if service.can_encode("avif"):  # detected by encoding, on first use
        assert response.status_code == 200 and response.mimetype == "image/avif"
        assert response.data[4:12] == b"ftypavif"
    else:
        assert response.status_code == 415 and error_of(response)["parameter"] == "format"


def test_blur_runs_on_the_image_never_on_the_padding(api):
    """A pad then a blur would smear the image into its padding (and blur the whole canvas: unbounded CPU)."""
    from tests.conftest import solid_image

    data = post(api, "w=100&h=100&pad=1&bg=0000ff&blur=3&format=png", data=solid_image(10, 10, "red", "png")).data
    with Image(blob=data) as img:
        assert (img.width, img.height) == (100, 100)
        just_outside = img[50, 44]  # the 10x10 source is upscale-free, centred at 45..54
        assert (round(just_outside.red, 2), round(just_outside.blue, 2)) == (0.0, 1.0)


@pytest.mark.parametrize("query, parameter", [("quality=%C2%B2", "quality"), ("crop=0,0,%C2%B2,1", "crop"),
                                              ("w=%D9%A3", "w"), ("w=10&width=20", "w"), ("h=1&H=2", "h")])
def test_non_ascii_digits_and_aliased_duplicates_are_400s(api, query, parameter):
    response = post(api, query)
    assert response.status_code == 400
    assert error_of(response)["parameter"] == parameter


def test_size_errors_name_their_parameter(api):
    assert error_of(post(api, "w=5000"))["parameter"] == "w"
    assert error_of(post(api, "w=100&fill=1"))["parameter"] == "h"
