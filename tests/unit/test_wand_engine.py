"""The Wand engine on real photographs: orientation, sizes, formats, by pixels."""

from __future__ import annotations

import pytest
from wand.image import Image

from resize_server.errors import CorruptImage
from resize_server.imaging.geometry import plan
from resize_server.imaging.wand_engine import WandEngine
from resize_server.sniff import read_header
from tests.conftest import QUADRANTS, dimensions, distance, mean_rgb, photo, png_with_alpha

ORIENTATIONS = range(0, 9)


def render(data: bytes, w, h, mode="fit", fmt="jpeg", upscale=False):
    header = read_header(data)
    return WandEngine(jpeg_quality=85).render(data, header, plan(header, w, h, mode, upscale), fmt)


@pytest.fixture(scope="module")
def references():
    """Thumbnails of the upright originals (orientation 1), to compare every orientation against."""
    out = {}
    for kind in ("Landscape", "Portrait"):
        out[kind] = render(photo(f"{kind}_1.jpg"), 200, 200).data
    return out


@pytest.mark.parametrize("kind", ["Landscape", "Portrait"])
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_every_exif_orientation_comes_out_upright(kind, orientation, references):
    result = render(photo(f"{kind}_{orientation}.jpg"), 200, 200)
    expected = (200, 133) if kind == "Landscape" else (133, 200)
    assert (result.width, result.height) == expected
    with Image(blob=result.data) as got, Image(blob=references[kind]) as ref:
        assert got.size == expected
        # Compare the four quadrants' mean colours with the upright reference:
        # a rotated or mirrored image differs by far more than JPEG noise.
        for quad in QUADRANTS:
            assert distance(mean_rgb(result.data, quad), mean_rgb(references[kind], quad)) < 12, quad
        assert got.orientation in ("undefined", "top_left")  # no EXIF left to rotate it twice


def test_metadata_is_stripped():
    result = render(photo("Landscape_6.jpg"), 200, 200)
    with Image(blob=result.data) as img:
        assert not any(key.startswith("exif:") for key in img.metadata.keys())
        assert len(result.data) < 20_000


@pytest.mark.parametrize("box, mode, expected", [
    ((200, 200), "fit", (200, 133)),
    ((200, None), "fit", (200, 133)),
    ((None, 150), "fit", (225, 150)),
    ((200, 200), "fill", (200, 200)),
    ((50, 50), "fill", (50, 50)),
    ((4000, 4000), "fit", (1800, 1200)),  # never upscaled by default
])
def test_output_dimensions(box, mode, expected):
    result = render(photo("Landscape_1.jpg"), *box, mode=mode)
    assert dimensions(result.data) == ("JPEG", *expected)


def test_upscale_when_configured():
    result = render(photo("Landscape_1.jpg"), 2400, 2400, upscale=True)
    assert (result.width, result.height) == (2400, 1600)


def test_fill_crops_the_centre():
    # Left half red, right half transparent: a centred square crop keeps both halves.
    result = render(png_with_alpha(800, 400), 200, 200, mode="fill", fmt="png")
    with Image(blob=result.data) as img:
        assert img.size == (200, 200)
        assert img[10, 100].alpha == pytest.approx(1.0, abs=0.01)
        assert img[10, 100].red == pytest.approx(1.0, abs=0.02)
        assert img[190, 100].alpha == pytest.approx(0.0, abs=0.01)


def test_png_keeps_alpha_and_format():
    result = render(png_with_alpha(640, 480), 200, 200, fmt="png")
    fmt, w, h = dimensions(result.data)
    assert (fmt, w, h) == ("PNG", 200, 150)
    with Image(blob=result.data) as img:
        assert img.alpha_channel
        assert img[20, 75].alpha == pytest.approx(1.0, abs=0.01)
        assert img[180, 75].alpha == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("mode", ["fit", "fill"])
def test_transparency_becomes_white_in_jpeg(mode):
    """JPEG has no alpha: transparent pixels are composited onto white, not left to show black."""
    result = render(png_with_alpha(640, 480), 200, 200, mode=mode, fmt="jpeg")
    assert dimensions(result.data)[0] == "JPEG"
    for channel in mean_rgb(result.data, (0.85, 0.2, 0.95, 0.8)):  # inside the transparent right half
        assert channel > 245
    red, green, blue = mean_rgb(result.data, (0.05, 0.2, 0.15, 0.8))  # the opaque red half stays red
    assert red > 230 and green < 30 and blue < 30


@pytest.mark.parametrize("quality", [30, 95])
def test_jpeg_quality_is_applied(quality):
    data = photo("Landscape_1.jpg")
    header = read_header(data)
    out = WandEngine(jpeg_quality=quality).render(data, header, plan(header, 400, 400, "fit", False), "jpeg")
    with Image(blob=out.data) as img:
        assert img.compression_quality == quality


def test_shrink_on_load_is_used_for_large_jpegs():
    """A 200px thumbnail of a big JPEG is decoded at a DCT scale, not at full size."""
    data = photo("Landscape_1.jpg")
    header = read_header(data)
    p = plan(header, 200, 200, "fit", False)
    assert p.load_hint == (1800 // 8, 1200 // 8)  # exactly 1/8: floor(1800 / 225) = 8
    with Image() as img:
        img.options["jpeg:size"] = "%dx%d" % p.load_hint
        img.read(blob=data, format="jpeg")
        assert (img.width, img.height) == (1800 // 8, 1200 // 8)  # decoded at 1/8, then one resize pass


def test_garbage_after_a_valid_header_is_a_corrupt_image():
    data = photo("Landscape_1.jpg")
    header = read_header(data)
    broken = data[:400] + bytes(range(256)) * 8
    with pytest.raises(CorruptImage):
        WandEngine().render(broken, header, plan(header, 200, 200, "fit", False), "jpeg")
