"""Pre-generation on the service: one read and one decode per upload, the same objects as on demand."""

from __future__ import annotations

import pytest

from resize_server.config import Settings
from resize_server.errors import CorruptImage, SourceNotFound, UnsupportedFormat
from resize_server.http import create_app
from resize_server.imaging.wand_engine import WandEngine
from resize_server.presets import parse_presets
from resize_server.service import build_service
from resize_server.storage.s3 import S3Storage
from tests.conftest import BUCKET, dimensions, photo, psnr

PRESETS = "thumb=50x50,small=200x200,large=1024x1024,cover=300x100:fill"


class DecodeCounter(WandEngine):
    """The real engine, counting how often it decodes."""

    decodes = 0

    def _render_many(self, data, header, jobs):
        type(self).decodes += 1
        return super()._render_many(data, header, jobs)


@pytest.fixture
def pregen(s3):
    DecodeCounter.decodes = 0
    settings = Settings(bucket=BUCKET, presets=parse_presets(PRESETS))
    return build_service(settings, storage=S3Storage(s3, BUCKET), engine=DecodeCounter())


def count_calls(s3, operation):
    calls = []
    s3.meta.events.register(f"before-send.s3.{operation}", lambda request, **kw: calls.append(request.url) and None)
    return calls


def test_one_read_one_decode_every_preset_stored_like_on_demand(s3, pregen, storage):
    s3.put_object(Bucket=BUCKET, Key="up/earth.jpg", Body=photo(), ContentType="image/jpeg")
    gets = count_calls(s3, "GetObject")
    result = pregen.pregenerate("up/earth.jpg")
    assert result.skipped is None
    assert sorted(k for _, k, outcome in result.outputs if outcome == "rendered") == [
        "up/earth_cover.jpg", "up/earth_large.jpg", "up/earth_small.jpg", "up/earth_thumb.jpg"]
    assert len(gets) == 1 and DecodeCounter.decodes == 1

    # The on-demand server, asked for the same keys, gives the same objects.
    on_demand = create_app(Settings(bucket="other", presets=parse_presets(PRESETS)), storage=storage.for_bucket(BUCKET))
    client = on_demand.test_client()
    for key, size in [("up/earth_thumb.jpg", (50, 33)), ("up/earth_small.jpg", (200, 133)),
                      ("up/earth_large.jpg", (1024, 683)), ("up/earth_cover.jpg", (300, 100))]:
        obj = s3.get_object(Bucket=BUCKET, Key=key)
        data = obj["Body"].read()
        assert dimensions(data) == ("JPEG", *size)
        assert obj["ContentType"] == "image/jpeg" and obj["StorageClass"] == "REDUCED_REDUNDANCY"
        assert obj["CacheControl"] == pregen.settings.cache_control
        s3.delete_object(Bucket=BUCKET, Key=key)
        response = client.get("/" + key)
        assert response.status_code == 200
        assert on_demand.extensions["resize"].drain(10)
        again = s3.get_object(Bucket=BUCKET, Key=key)
        assert again["Metadata"] == obj["Metadata"]
        assert again["ContentType"] == obj["ContentType"]
        value = psnr(data, response.data)
        print(f"pregenerate vs on-demand {key}: PSNR {value:.1f} dB")
        assert value >= 40, key


def test_redelivery_renders_nothing_and_reads_nothing_with_the_event_etag(s3, pregen):
    put = s3.put_object(Bucket=BUCKET, Key="r/a.jpg", Body=photo())
    pregen.pregenerate("r/a.jpg")
    gets, puts, heads = count_calls(s3, "GetObject"), count_calls(s3, "PutObject"), count_calls(s3, "HeadObject")
    again = pregen.pregenerate("r/a.jpg", source_etag=put["ETag"].strip('"'))
    assert {outcome for _, _, outcome in again.outputs} == {"skipped-same-etag"}
    assert (len(gets), len(puts), len(heads)) == (0, 0, 4)
    # Without the ETag (backfill of an object listed earlier), one GET, still no render.
    assert {o for _, _, o in pregen.pregenerate("r/a.jpg").outputs} == {"skipped-same-etag"}
    assert len(puts) == 0 and DecodeCounter.decodes == 1


def test_a_changed_original_is_rendered_again(s3, pregen):
    s3.put_object(Bucket=BUCKET, Key="c/a.jpg", Body=photo())
    pregen.pregenerate("c/a.jpg", presets=["thumb"])
    put = s3.put_object(Bucket=BUCKET, Key="c/a.jpg", Body=photo("Landscape_2.jpg"))
    result = pregen.pregenerate("c/a.jpg", presets=["thumb"], source_etag=put["ETag"])
    assert result.outputs == [(BUCKET, "c/a_thumb.jpg", "rendered")]


@pytest.mark.parametrize("key, reason", [
    ("d/a_thumb.jpg", "derived key"), ("d/a_200x200.jpg", "derived key"), ("p/small/d/a.jpg", "derived key"),
    ("d/a.jpg!small", "derived key"), ("d/notes.txt", "not an image extension"), ("d/README", "not an image extension"),
])
def test_its_own_output_and_non_images_are_skipped_without_reading(s3, pregen, key, reason):
    gets = count_calls(s3, "GetObject")
    assert pregen.pregenerate(key).skipped == reason
    assert gets == []


def test_an_object_marked_derived_by_metadata_is_skipped(s3, pregen):
    s3.put_object(Bucket=BUCKET, Key="m/odd-name.jpg", Body=photo(), Metadata={"derived-from": "m/x.jpg"})
    assert pregen.pregenerate("m/odd-name.jpg").skipped == "object is derived (metadata)"


def test_other_bucket_and_key_layout(s3):
    s3.create_bucket(Bucket=f"{BUCKET}resized")
    s3.put_object(Bucket=BUCKET, Key="two/a.jpg", Body=photo())
    settings = Settings(bucket=BUCKET, presets=parse_presets("small=200x200"), dest_bucket="{bucket}resized",
                        dest_key="{key}")
    service = build_service(settings, storage=S3Storage(s3, BUCKET))
    result = service.pregenerate("two/a.jpg")
    assert result.outputs == [(f"{BUCKET}resized", "two/a.jpg", "rendered")]
    data = s3.get_object(Bucket=f"{BUCKET}resized", Key="two/a.jpg")["Body"].read()
    assert dimensions(data) == ("JPEG", 200, 133)
    assert s3.get_object(Bucket=BUCKET, Key="two/a.jpg")["Body"].read() == photo()  # original untouched


def test_permanent_and_transient_failures_are_told_apart(s3, pregen):
    s3.put_object(Bucket=BUCKET, Key="bad/cut.jpg", Body=photo()[:100_000])
    with pytest.raises(CorruptImage) as cut:
        pregen.pregenerate("bad/cut.jpg")
    s3.put_object(Bucket=BUCKET, Key="bad/svg.png", Body=b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    with pytest.raises(UnsupportedFormat) as svg:
        pregen.pregenerate("bad/svg.png")
    with pytest.raises(SourceNotFound) as gone:
        pregen.pregenerate("bad/deleted.jpg")
    assert not (cut.value.transient or svg.value.transient or gone.value.transient)
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="bad/cut_")["KeyCount"] == 0  # nothing half-written

    def fail(request, **kwargs):
        from botocore.exceptions import EndpointConnectionError
        raise EndpointConnectionError(endpoint_url=request.url)
    s3.put_object(Bucket=BUCKET, Key="bad/ok.jpg", Body=photo())
    s3.meta.events.register_first("before-send.s3.GetObject", fail)
    with pytest.raises(Exception) as transient:
        pregen.pregenerate("bad/ok.jpg")
    assert getattr(transient.value, "transient", False) is True


def test_every_derived_object_carries_the_lifecycle_tag(s3, pregen, client, service):
    """deploy/ expires derived objects by this tag and allows PutObject only with it."""
    s3.put_object(Bucket=BUCKET, Key="tag/a.jpg", Body=photo())
    pregen.pregenerate("tag/a.jpg", presets=["thumb"])
    assert client.get("/tag/a_50x50.jpg").status_code == 200
    assert service.drain(10)
    for key in ("tag/a_thumb.jpg", "tag/a_50x50.jpg"):
        tags = s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]
        assert tags == [{"Key": "resize-derived", "Value": "true"}], key
    assert s3.get_object_tagging(Bucket=BUCKET, Key="tag/a.jpg")["TagSet"] == []


def test_a_format_this_server_cannot_write_is_transient_not_poison(s3):
    """The upload is fine; the server is not: the message must stay (and reach the DLQ), not be dropped."""
    from resize_server.errors import EncoderMissing

    s3.put_object(Bucket=BUCKET, Key="enc/a.jpg", Body=photo())
    settings = Settings(bucket=BUCKET, presets=parse_presets("av=100x100:format=avif"))
    service = build_service(settings, storage=S3Storage(s3, BUCKET))
    service._formats = frozenset({"jpeg", "png", "gif", "webp"})  # as on an ImageMagick without an AVIF encoder
    with pytest.raises(EncoderMissing) as info:
        service.pregenerate("enc/a.jpg")
    assert info.value.transient and info.value.status == 501
