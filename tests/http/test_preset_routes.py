"""Presets on demand (derived key, path form, style suffix), presets-only mode, format conversion,
src readings, and derived keys that are already stored."""

from __future__ import annotations

import pytest

from resize_server.http import create_app
from tests.conftest import BUCKET, dimensions, is_grayscale, photo, png_with_alpha

PRESETS = "thumb=50x50,small=200x200,cover=300x100:fill,bw=120x120,grayscale,card=100x100:pad:bg=00ff00,wp=80x80:format=webp"


@pytest.fixture
def presets_app(s3, storage):
    s3.put_object(Bucket=BUCKET, Key="photos/earth.jpg", Body=photo(), ContentType="image/jpeg")
    return create_app({"bucket": BUCKET, "presets": PRESETS}, storage=storage)


@pytest.fixture
def pclient(presets_app):
    return presets_app.test_client()


def stored(s3, key):
    obj = s3.get_object(Bucket=BUCKET, Key=key)
    return obj["Body"].read(), obj["ContentType"], obj["Metadata"]


@pytest.mark.parametrize("url, key, size", [
    ("/photos/earth_thumb.jpg", "photos/earth_thumb.jpg", (50, 33)),
    ("/resize.php?src=photos/earth_small.jpg", "photos/earth_small.jpg", (200, 133)),
    ("/p/small/photos/earth.jpg", "p/small/photos/earth.jpg", (200, 133)),
    ("/resize.php?src=photos/earth.jpg!cover", "photos/earth.jpg!cover", (300, 100)),
    ("/photos/earth_card.jpg", "photos/earth_card.jpg", (100, 100)),
])
def test_presets_are_reachable_and_stored_under_the_requested_key(pclient, presets_app, s3, url, key, size):
    response = pclient.get(url)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert dimensions(response.data) == ("JPEG", *size)
    assert presets_app.extensions["resize"].drain(10)
    data, content_type, metadata = stored(s3, key)
    assert data == response.data and content_type == "image/jpeg"
    assert metadata["derived-from"] == "photos/earth.jpg"


def test_preset_operations_apply_on_demand(pclient):
    assert is_grayscale(pclient.get("/photos/earth_bw.jpg").data)
    card = pclient.get("/photos/earth_card.jpg").data
    from tests.conftest import mean_rgb
    r, g, b = mean_rgb(card, (0, 0, 1, 0.1))  # the pad above the photo is the preset's green
    assert g > 240 and r < 15 and b < 15


def test_style_suffix_takes_the_preset_format(pclient, presets_app, s3):
    response = pclient.get("/resize.php?src=photos/earth.jpg!wp")
    assert response.status_code == 200 and response.mimetype == "image/webp"
    assert presets_app.extensions["resize"].drain(10)
    assert stored(s3, "photos/earth.jpg!wp")[1] == "image/webp"


@pytest.mark.parametrize("url, status, message", [
    ("/photos/earth_nope.jpg", 404, "not a derived image name"),
    ("/p/nope/photos/earth.jpg", 404, "not a derived image name"),
    ("/resize.php?src=photos/earth.jpg!nope", 404, "not a derived image name"),
    ("/photos/earth_thumb_thumb.jpg", 404, "source is itself a derived image"),
    ("/photos/earth.jpg!thumb!thumb", 404, "unsupported extension .jpg!thumb"),
])
def test_unknown_presets_and_presets_of_presets(pclient, url, status, message):
    response = pclient.get(url)
    assert response.status_code == status
    assert message in response.get_data(as_text=True)


def test_presets_only_refuses_plain_sizes(s3, storage):
    s3.put_object(Bucket=BUCKET, Key="a.jpg", Body=photo())
    client = create_app({"bucket": BUCKET, "presets": "small=200x200", "presets_only": "true"},
                        storage=storage).test_client()
    refused = client.get("/a_200x200.jpg")
    assert refused.status_code == 403 and "RESIZE_PRESETS_ONLY" in refused.get_data(as_text=True)
    assert client.get("/a_small.jpg").status_code == 200


def test_style_separator_can_be_turned_off(s3, storage):
    s3.put_object(Bucket=BUCKET, Key="a.jpg", Body=photo())
    client = create_app({"bucket": BUCKET, "presets": "small=200x200", "style_separator": ""},
                        storage=storage).test_client()
    assert client.get("/resize.php?src=a.jpg!small").status_code == 404
    assert client.get("/a_small.jpg").status_code == 200


# ---- format conversion --------------------------------------------------------------

def test_webp_from_a_jpeg_when_no_webp_original_exists(client, service, s3):
    s3.put_object(Bucket=BUCKET, Key="conv/earth.jpg", Body=photo())
    calls = []
    s3.meta.events.register("before-send.s3.GetObject", lambda request, **kw: calls.append(request.url) and None)
    response = client.get("/conv/earth_200x200.webp")
    assert response.status_code == 200 and response.mimetype == "image/webp"
    assert dimensions(response.data) == ("WEBP", 200, 133)
    assert service.drain(10)
    _, content_type, metadata = stored(s3, "conv/earth_200x200.webp")
    assert content_type == "image/webp" and metadata["derived-from"] == "conv/earth.jpg"
    source_reads = [u for u in calls if "conv/earth." in u]
    assert [u.rsplit("/", 1)[1] for u in source_reads] == ["earth.webp", "earth.jpg"]  # requested ext first


def test_the_requested_extension_wins_when_both_exist(client, s3):
    s3.put_object(Bucket=BUCKET, Key="both/a.png", Body=png_with_alpha())
    s3.put_object(Bucket=BUCKET, Key="both/a.jpg", Body=photo())
    response = client.get("/both/a_100x100.png")
    assert dimensions(response.data) == ("PNG", 100, 75)  # from a.png (640x480), not a.jpg (1800x1200)


def test_no_source_under_any_extension_is_404_after_bounded_reads(client, s3):
    calls = []
    s3.meta.events.register("before-send.s3.GetObject", lambda request, **kw: calls.append(request.url) and None)
    response = client.get("/none/a_100x100.gif")
    assert response.status_code == 404
    # the derived key itself, then a.gif, a.jpg, a.jpeg, a.png, a.webp
    assert len([u for u in calls if "/none/a." in u]) == 5


# ---- src readings through the app ------------------------------------------------------

@pytest.mark.parametrize("original, query", [
    ("k/Tom & Jerry.jpg", "src=k/Tom & Jerry_50x50.jpg"),  # raw, as s3rver writes it
    ("k/my photo.jpg", "src=k/my+photo_50x50.jpg"),  # curl turned the space into +
    ("k/a+b.jpg", "src=k/a+b_50x50.jpg"),  # a real plus
    ("k/my photo.jpg", "src=k/my%2520photo_50x50.jpg"),  # encoded twice
    ("k/100%41.jpg", "src=k/100%41_50x50.jpg"),  # a literal %41 sent raw
    ("k/100%41.jpg", "src=k/100%2541_50x50.jpg"),  # ... and sent encoded
    ("k/a=b.jpg", "src=k/a=b_50x50.jpg"),
    ("k/été.jpg", "src=k/%C3%A9t%C3%A9_50x50.jpg"),
])
def test_every_reading_of_src_serves_the_key_and_stores_the_reading_that_matched(client, service, s3, original,
                                                                                 query):
    s3.put_object(Bucket=BUCKET, Key=original, Body=photo())
    response = client.get("/resize.php?" + query)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert service.drain(10)
    derived = original.rsplit(".", 1)[0] + "_50x50.jpg"
    assert stored(s3, derived)[2]["derived-from"]


# ---- already stored ------------------------------------------------------------------

def test_a_stored_derived_key_is_served_from_the_store_not_rendered_again(client, service, s3):
    s3.put_object(Bucket=BUCKET, Key="st/a.jpg", Body=photo())
    first = client.get("/st/a_100x100.jpg")
    assert first.headers["X-Resize-Source"] == "render"
    assert service.drain(10)
    service.recent = type(service.recent)()  # as after a restart, or on another instance
    puts = []
    s3.meta.events.register("before-send.s3.PutObject", lambda request, **kw: puts.append(1) and None)
    second = client.get("/st/a_100x100.jpg")
    assert second.status_code == 200 and second.data == first.data
    assert second.headers["X-Resize-Source"] == "stored"
    assert service.metrics.get("renders_total", format="jpeg") == 1
    assert puts == []


def test_a_failing_read_of_the_derived_key_does_not_fail_the_miss(client, s3):
    """A role may read originals only: the best-effort read of the derived key must not break renders."""
    from tests.http.test_s3_faults import Injector, error_response

    s3.put_object(Bucket=BUCKET, Key="deny/a.jpg", Body=photo())
    Injector(s3, "GetObject", lambda request, attempt: error_response(request.url, 403, "AccessDenied", "Access Denied"),
             key="deny/a_100x100.jpg")
    response = client.get("/deny/a_100x100.jpg")
    assert response.status_code == 200
    assert dimensions(response.data) == ("JPEG", 100, 67)


def test_the_reading_that_matched_is_found_stored_next_time(client, service, s3):
    """curl's '+' for a space: rendered once under 'my photo_...', then served from the store."""
    s3.put_object(Bucket=BUCKET, Key="alt/my photo.jpg", Body=photo())
    first = client.get("/resize.php?src=alt/my+photo_100x100.jpg")
    assert first.headers["X-Resize-Source"] == "render"
    assert service.drain(10)
    service.recent = type(service.recent)()  # as on another instance
    second = client.get("/resize.php?src=alt/my+photo_100x100.jpg")
    assert second.status_code == 200 and second.headers["X-Resize-Source"] == "stored"
    assert service.metrics.get("renders_total", format="jpeg") == 1


def test_a_preset_key_whose_extension_contradicts_the_preset_format_is_refused(pclient):
    response = pclient.get("/photos/earth_wp.jpg")  # wp renders webp
    assert response.status_code == 404 and "renders webp" in response.get_data(as_text=True)
    assert pclient.get("/photos/earth_wp.webp").mimetype == "image/webp"
