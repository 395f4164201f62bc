"""The Flask app through its test client, against moto's S3."""

from __future__ import annotations

import hashlib

import pytest
from botocore.exceptions import ConnectionClosedError

from resize_server.config import ConfigError, Settings
from resize_server.http import create_app
from tests.conftest import BUCKET, dimensions, photo, png_with_alpha, solid_image


@pytest.fixture
def earth(s3):
    data = photo("Landscape_1.jpg")
    s3.put_object(Bucket=BUCKET, Key="samples/earth.jpg", Body=data, ContentType="image/jpeg")
    return data


def stored(s3, key):
    obj = s3.get_object(Bucket=BUCKET, Key=key)
    return obj, obj["Body"].read()


@pytest.mark.parametrize("url", ["/resize.php?src=samples/earth_200x200.jpg", "/samples/earth_200x200.jpg"])
def test_renders_responds_and_stores(client, service, s3, earth, url):
    response = client.get(url)
    assert response.status_code == 200
    assert response.mimetype == "image/jpeg"
    assert int(response.headers["Content-Length"]) == len(response.data)
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert dimensions(response.data) == ("JPEG", 200, 133)
    md5 = hashlib.md5(response.data).hexdigest()
    assert response.headers["ETag"] == f'"{md5}"'

    assert service.drain(10)
    obj, body = stored(s3, "samples/earth_200x200.jpg")
    assert body == response.data
    assert obj["ETag"] == response.headers["ETag"]  # the same ETag S3 will serve next time
    assert obj["ContentType"] == "image/jpeg"
    assert obj["CacheControl"] == "public, max-age=31536000, immutable"
    assert obj["StorageClass"] == "REDUCED_REDUNDANCY"
    source_etag = s3.head_object(Bucket=BUCKET, Key="samples/earth.jpg")["ETag"].strip('"')
    assert obj["Metadata"] == {"derived-from": "samples/earth.jpg", "source-etag": source_etag,
                               "resize": "200x200:fit"}


def test_storage_class_and_cache_control_are_configurable(s3, storage, earth):
    app = create_app(Settings(bucket=BUCKET, storage_class="STANDARD_IA", cache_control="public, max-age=60"),
                     storage=storage)
    response = app.test_client().get("/samples/earth_x200.jpg")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=60"
    app.extensions["resize"].drain(10)
    obj, _ = stored(s3, "samples/earth_x200.jpg")
    assert obj["StorageClass"] == "STANDARD_IA"
    assert obj["CacheControl"] == "public, max-age=60"


@pytest.mark.parametrize("url", ["/resize.php?src=samples/earth_200x200.jpg", "/samples/earth_200x200.jpg"])
def test_head(client, earth, url):
    get = client.get(url)
    head = client.head(url)
    assert head.status_code == 200
    assert head.data == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
    assert head.headers["ETag"] == get.headers["ETag"]


def test_if_none_match_gives_304(client, earth):
    first = client.get("/samples/earth_200x200.jpg")
    again = client.get("/samples/earth_200x200.jpg", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert again.data == b""


# How keys travel: S3's RoutingRule puts the key, percent-encoded, after `src=`;
# a proxying front passes the original (percent-encoded) path.
KEYS = [
    ("photos/2024/earth.jpg", "photos/2024/earth_200x200.jpg", "photos/2024/earth_200x200.jpg"),
    ("with space.jpg", "with%20space_200x200.jpg", "with%20space_200x200.jpg"),
    ("a+b.jpg", "a+b_200x200.jpg", "a+b_200x200.jpg"),
    ("a+b.jpg", "a%2Bb_200x200.jpg", "a%2Bb_200x200.jpg"),
    ("fotos/été 東京.jpg", "fotos/%C3%A9t%C3%A9%20%E6%9D%B1%E4%BA%AC_200x200.jpg",
     "fotos/%C3%A9t%C3%A9%20%E6%9D%B1%E4%BA%AC_200x200.jpg"),
    ("UPPER.JPG", "UPPER_200x200.JPG", "UPPER_200x200.JPG"),
    ("long.jpeg", "long_x200.jpeg", "long_x200.jpeg"),
    ("my_xmas_photo.jpg", "my_xmas_photo_200x.jpg", "my_xmas_photo_200x.jpg"),
]


@pytest.mark.parametrize("source, src_param, path", KEYS)
def test_key_encodings(client, service, s3, source, src_param, path):
    s3.put_object(Bucket=BUCKET, Key=source, Body=photo("Landscape_1.jpg"))
    via_query = client.get("/resize.php?src=" + src_param)
    via_path = client.get("/" + path)
    assert via_query.status_code == 200, via_query.data
    assert via_path.status_code == 200, via_path.data
    assert via_query.data == via_path.data
    service.drain(10)
    stem, ext = source.rsplit(".", 1)
    derived = [k["Key"] for k in s3.list_objects_v2(Bucket=BUCKET)["Contents"] if k["Key"] != source]
    assert len(derived) == 1 and derived[0].startswith(stem + "_") and derived[0].endswith("." + ext)


def test_png_stays_png_with_alpha(client, s3):
    s3.put_object(Bucket=BUCKET, Key="logo.png", Body=png_with_alpha(640, 480), ContentType="image/png")
    response = client.get("/logo_200x200.png")
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert dimensions(response.data) == ("PNG", 200, 150)


@pytest.mark.parametrize("url, status, message", [
    ("/samples/earth.jpg", 404, "not a derived image name"),
    ("/samples/notes_200x200.txt", 404, "unsupported extension .txt"),
    ("/samples/missing_200x200.jpg", 404, "source image not found"),
    ("/samples/earth_0x200.jpg", 400, "width must be a positive whole number"),
    ("/samples/earth_-5x200.jpg", 400, "width must be a positive whole number"),
    ("/samples/earth_abcx200.jpg", 400, "width must be a positive whole number"),
    ("/samples/earth_200x_fill.jpg", 400, "fill needs both"),
    ("/samples/earth_201x200.jpg", 403, "RESIZE_ALLOWED_SIZES"),
    ("/samples/earth_5000x5000.jpg", 400, "RESIZE_MAX_WIDTH"),
    ("/resize.php", 400, "missing src"),
    ("/resize.php?w=1&src=samples/earth_200x200.jpg&src=x_200x200.jpg", 400, "more than once"),
    ("/resize.php?src=../earth_200x200.jpg", 400, "'..'"),
    ("/resize.php?src=/etc/passwd_200x200.jpg", 400, "relative"),
    ("/resize.php?src=samples/earth\x00_200x200.jpg", 400, "control characters"),
    ("/resize.php?src=samples%252F..%252F..%252Fearth_200x200.jpg", 404, "source image not found"),
    ("/resize.php?src=" + "a" * 1100 + "_200x200.jpg", 400, "longer than 1024"),
])
def test_errors_have_deliberate_statuses(client, earth, url, status, message):
    response = client.get(url)
    assert response.status_code == status
    assert response.mimetype == "text/plain"
    assert message in response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"


def test_post_is_405(client):
    assert client.post("/samples/earth_200x200.jpg").status_code == 405


def test_failed_store_still_serves_the_image(client, service, s3, earth):
    calls = []

    def fail_put(request, **kwargs):
        # Raise rather than return a response: botocore calls every before-send
        # handler, so moto would otherwise still store the object.
        calls.append(request.url)
        raise ConnectionClosedError(endpoint_url=request.url)

    s3.meta.events.register_first("before-send.s3.PutObject", fail_put)
    response = client.get("/samples/earth_200x200.jpg")
    assert response.status_code == 200
    assert dimensions(response.data) == ("JPEG", 200, 133)
    assert service.drain(30)
    assert len(calls) == 3  # S3 retries, then gives up
    assert service.metrics.get("store_failures_total") == 1
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=BUCKET, Key="samples/earth_200x200.jpg")


def test_health_and_readiness(client, s3):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    s3.delete_bucket(Bucket=BUCKET)
    response = client.get("/readyz")
    assert response.status_code == 502
    assert client.get("/healthz").status_code == 200


def test_metrics_count_renders(client, earth):
    client.get("/samples/earth_200x200.jpg")
    client.get("/samples/earth_0x200.jpg")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'resize_renders_total{format="jpeg"} 1' in text
    assert 'resize_errors_total{status="400"} 1' in text


def test_bad_configuration_fails_at_start_naming_the_variable(storage):
    with pytest.raises(ConfigError, match="RESIZE_JPEG_QUALITY"):
        create_app({"bucket": BUCKET, "jpeg_quality": 0}, storage=storage)
    with pytest.raises(ConfigError, match="RESIZE_BUCKET"):
        create_app({}, storage=storage)


def test_a_thumbnail_is_never_the_source_of_another(client, service, s3, earth):
    assert client.get("/samples/earth_50x50.jpg").status_code == 200
    service.drain(10)
    # earth_50x50.jpg now exists; earth_50x50_50x50.jpg would derive from it, and so on without end.
    response = client.get("/samples/earth_50x50_50x50.jpg")
    assert response.status_code == 404
    assert response.get_data(as_text=True) == "source is itself a derived image\n"


def test_source_prefixes_keep_other_objects_private(s3, storage):
    s3.put_object(Bucket=BUCKET, Key="public/a.jpg", Body=photo("Landscape_1.jpg"))
    s3.put_object(Bucket=BUCKET, Key="private/a.jpg", Body=photo("Landscape_1.jpg"))
    app = create_app(Settings(bucket=BUCKET, source_prefixes="public/"), storage=storage)
    client = app.test_client()
    assert client.get("/public/a_200x200.jpg").status_code == 200
    response = client.get("/private/a_200x200.jpg")
    assert response.status_code == 404
    assert response.get_data(as_text=True) == "source image not found\n"


def test_a_free_side_is_bounded_by_the_maximum(client, s3):
    # A 40:1 panorama asked for at height 200 would be 8000 wide; the width maximum bounds it.
    s3.put_object(Bucket=BUCKET, Key="pano.jpg", Body=solid_image(8000, 200, "navy", "jpeg"))
    response = client.get("/pano_x200.jpg")
    assert response.status_code == 200
    assert dimensions(response.data) == ("JPEG", 2048, 51)


def test_invalid_utf8_in_the_path_is_a_400(client):
    response = client.get("/caf%E9_200x200.jpg")
    assert response.status_code == 400
    assert response.get_data(as_text=True) == "key is not valid UTF-8\n"


def test_gif_whose_first_frame_is_smaller_than_its_screen_is_not_stretched(client, s3):
    # a 400x400 screen holding a 400x200 frame
    gif = solid_image(400, 200, "red", "gif", page=(400, 400, 0, 0))
    s3.put_object(Bucket=BUCKET, Key="anim.gif", Body=gif)
    response = client.get("/anim_200x200.gif")
    assert response.status_code == 200
    assert dimensions(response.data) == ("GIF", 200, 100)
