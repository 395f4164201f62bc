"""A hostile-input corpus, generated here, stored in moto's S3 and requested through Flask.

Every case is uploaded under ``h/<case>.<ext>`` and requested as the derived
key ``/h/<case>_200x200.<ext>``, with the extension the file claims to be.
The table below is the contract: each input gets a deliberate status (never
500) and, for refusals, the short text message naming what was refused.
Cases that must render get further checks on the pixels.  No case may leave a
file in the temp dir (Python's and ImageMagick's, pointed at a private
directory so other processes on the machine cannot disturb the listing).
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Callable

import pytest
import wand.resource
from wand.image import Image

from resize_server.config import Settings
from resize_server.http import create_app
from resize_server.imaging.geometry import plan
from resize_server.imaging.wand_engine import WandEngine
from resize_server.sniff import read_header
from tests import corpus
from tests.conftest import BUCKET, QUADRANTS, dimensions, distance, mean_rgb

DECODE = "image could not be decoded"
NOT_IMAGE = "source is not a JPEG, PNG, GIF or WebP image"
PIXELS = "source has more pixels than RESIZE_MAX_SOURCE_PIXELS=50000000"
CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp"}


# ---- checks on rendered output ----------------------------------------------------


@pytest.fixture(scope="module")
def reference() -> bytes:
    """The landscape photo rendered to 200x200 from its pristine RGB JPEG, by the same engine."""
    data = corpus.landscape()
    header = read_header(data)
    return WandEngine().render(data, header, plan(header, 200, 200, "fit", False), "jpeg").data


def check_partial(data, reference):
    assert dimensions(data) == ("JPEG", 200, 133)
    # The top of the photo was in the 60% that arrived: it matches the full render.
    assert distance(mean_rgb(data, (0, 0, 1, .3)), mean_rgb(reference, (0, 0, 1, .3))) < 12
    # The bottom never arrived: it is filled, not the photo.
    assert distance(mean_rgb(data, (0, .8, 1, 1)), mean_rgb(reference, (0, .8, 1, 1))) > 30


def check_cmyk(data, reference):
    assert dimensions(data) == ("JPEG", 200, 133)
    with Image(blob=data) as img:
        assert img.colorspace == "srgb"
    assert corpus.jpeg_sof(data).components == 3  # not a 4-channel CMYK JPEG
    # Believable colours: the same photo as rendered from RGB, not inverted or tinted.
    assert distance(mean_rgb(data), mean_rgb(reference)) < 10
    for quad in QUADRANTS:
        assert distance(mean_rgb(data, quad), mean_rgb(reference, quad)) < 15, quad


def check_png16(data, reference):
    assert dimensions(data) == ("PNG", 200, 133)
    assert distance(mean_rgb(data), mean_rgb(reference)) < 10


def check_gray(data, reference):
    assert dimensions(data) == ("JPEG", 200, 133)
    r, g, b = mean_rgb(data)
    assert max(r, g, b) - min(r, g, b) < 2  # still grey


def check_progressive(data, reference):
    assert dimensions(data) == ("JPEG", 200, 133)
    assert distance(mean_rgb(data), mean_rgb(reference)) < 10


def check_palette_alpha(data, reference):
    assert dimensions(data) == ("PNG", 200, 150)
    with Image(blob=data) as img:
        transparent, opaque = img[190, 75], img[10, 75]
        assert transparent.alpha == 0  # the right half stays see-through
        assert opaque.alpha == 1 and opaque.red == 1 and opaque.green == 0


def check_animated(data, reference):
    assert dimensions(data) == ("GIF", 200, 150)
    with Image(blob=data) as img:
        assert len(img.sequence) == 1
        pixel = img[100, 75]
        assert (pixel.red, pixel.green, pixel.blue) == (1, 0, 0)  # the first frame's red


def check_webp(data, reference):
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    assert dimensions(data) == ("WEBP", 200, 133)
    assert distance(mean_rgb(data), mean_rgb(reference)) < 10


def check_upright_as_stored(data, reference):
    """The pixels as stored (the photo is stored upright), not rotated or distorted."""
    assert dimensions(data) == ("JPEG", 200, 133)
    for quad in QUADRANTS:
        assert distance(mean_rgb(data, quad), mean_rgb(reference, quad)) < 12, quad


def check_consistent_orientation(data, reference):
    """Either the file is shown as stored (200x133) or rotated as EXIF 6 says (133x200) -- never squashed.

    A squashed image arises when the header sniffer and ImageMagick read the
    orientation differently: the plan is made for one shape, the pixels have the other.
    """
    fmt, w, h = dimensions(data)
    assert fmt == "JPEG"
    if (w, h) == (200, 133):
        expected = reference
    else:
        assert (w, h) == (133, 200)
        with Image(blob=reference) as ref:
            ref.rotate(90)
            expected = ref.make_blob("jpeg")
    for quad in QUADRANTS:
        assert distance(mean_rgb(data, quad), mean_rgb(expected, quad)) < 12, (quad, (w, h))


# ---- the table --------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    ext: str
    status: int
    message: str | None = None  # exact public message for refusals (a regex when it starts with ^)
    check: Callable | None = None
    settings: dict = field(default_factory=dict)  # a small app with these settings instead of the default

    def __str__(self) -> str:
        return self.name


def exif_big_endian_long_orientation() -> bytes:
    # Orientation 6 written as a big-endian LONG (type 4) rather than a SHORT:
    # ImageMagick honours it, the header sniffer reads the upper half (0) as "absent".
    tiff = b"MM\x00*" + struct.pack(">IH", 8, 1) + struct.pack(">HHII", 0x0112, 4, 1, 6) + b"\x00" * 4
    return corpus.with_exif(tiff)


def exif_two_app1_segments() -> bytes:
    # Two APP1/Exif segments: orientation 6 first, then 1.  ImageMagick uses the
    # first, the header sniffer the last.
    data = corpus.with_exif(corpus._tiff_ifd([(0x0112, 3, 1, corpus._short(6))]))
    second = b"Exif\x00\x00" + corpus._tiff_ifd([(0x0112, 3, 1, corpus._short(1))])
    first_len = struct.unpack(">H", data[4:6])[0]
    return data[: 4 + first_len] + b"\xff\xe1" + struct.pack(">H", len(second) + 2) + second + data[4 + first_len:]


def wide_png(width: int = 33000, height: int = 10) -> bytes:
    """A valid, tiny-in-pixels PNG wider than ImageMagick's policy width (32000)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = (b"\x00" + b"\x80" * width) * height
    return (b"\x89PNG\r\n\x1a\n" + corpus.png_chunk(b"IHDR", ihdr)
            + corpus.png_chunk(b"IDAT", zlib.compress(rows)) + corpus.png_chunk(b"IEND", b""))


SMALL_PIXELS = 100_000
SMALL_BYTES = 1_000_000

CASES = [
    # broken files
    Case("truncated_jpeg", corpus.truncated_jpeg, "jpg", 200, check=check_partial),
    Case("jpeg_cut_in_headers", corpus.jpeg_cut_in_headers, "jpg", 422, DECODE),
    Case("jpeg_cut_after_sof", corpus.jpeg_cut_after_sof, "jpg", 422, DECODE),
    Case("jpeg_magic_then_garbage", corpus.jpeg_magic_then_garbage, "jpg", 422, DECODE),
    Case("png_header_then_garbage", corpus.png_header_then_garbage, "png", 422, DECODE),
    Case("gif_header_only", corpus.gif_header_only, "gif", 422, DECODE),
    # unusual but valid images
    Case("cmyk_jpeg", corpus.cmyk_jpeg, "jpg", 200, check=check_cmyk),
    Case("png_16bit", corpus.png16, "png", 200, check=check_png16),
    Case("grayscale_jpeg", corpus.grayscale_jpeg, "jpg", 200, check=check_gray),
    Case("progressive_jpeg", corpus.progressive_jpeg, "jpg", 200, check=check_progressive),
    Case("palette_png_alpha", corpus.palette_png, "png", 200, check=check_palette_alpha),
    Case("animated_gif", corpus.animated_gif, "gif", 200, check=check_animated),
    Case("webp", corpus.webp, "webp", 200, check=check_webp),
    # decompression bombs: refused from the header
    Case("png_bomb_100000x100000", corpus.png_bomb, "png", 413, PIXELS),
    Case("gif_bomb_65535x65535", corpus.gif_bomb, "gif", 413, PIXELS),
    Case("jpeg_sof_65000x65000", corpus.jpeg_bomb, "jpg", 413, PIXELS),
    Case("animated_gif_frames_x_area", lambda: corpus.animated_gif(200, 200), "gif", 413,
         f"source has more pixels than RESIZE_MAX_SOURCE_PIXELS={SMALL_PIXELS}",
         settings={"max_source_pixels": SMALL_PIXELS}),
    # a 16x16 screen whose frame declares 30000x30000: the sniffer counts the frame.
    Case("gif_frame_bomb", corpus.gif_frame_bomb, "gif", 413,
         "source has more pixels than RESIZE_MAX_SOURCE_PIXELS=50000000"),
    # valid, few pixels, but wider than the policy's 32000: a limit, not a corrupt file
    Case("png_33000x10", wide_png, "png", 413, r"^.*(too large|exceeds|more than|wider).*$"),
    # not images at all, whatever the name says
    Case("mvg_imagetragick", lambda: corpus.MVG, "jpg", 415, NOT_IMAGE),
    Case("svg", lambda: corpus.SVG, "jpg", 415, NOT_IMAGE),
    Case("msl", lambda: corpus.MSL, "jpg", 415, NOT_IMAGE),
    Case("text_etc_passwd", lambda: corpus.TEXT_FILE, "jpg", 415, NOT_IMAGE),
    Case("ephemeral", lambda: corpus.EPHEMERAL, "jpg", 415, NOT_IMAGE),
    Case("postscript", lambda: corpus.POSTSCRIPT, "jpg", 415, NOT_IMAGE),
    Case("pdf", lambda: corpus.PDF, "jpg", 415, NOT_IMAGE),
    Case("html", lambda: corpus.HTML, "jpg", 415, NOT_IMAGE),
    Case("plain_text_as_png", lambda: corpus.PLAIN_TEXT, "png", 415, NOT_IMAGE),
    Case("zero_bytes", lambda: b"", "jpg", 415, "source is empty"),
    # EXIF with absurd values: ignored, the image is served as stored
    Case("exif_orientation_999", corpus.exif_orientation_999, "jpg", 200, check=check_upright_as_stored),
    Case("exif_ifd_offset_past_end", corpus.exif_ifd_past_end, "jpg", 200, check=check_upright_as_stored),
    Case("exif_count_65535", corpus.exif_count_65535, "jpg", 200, check=check_upright_as_stored),
    Case("exif_random_bytes", corpus.exif_garbage, "jpg", 200, check=check_upright_as_stored),
    # EXIF the sniffer and ImageMagick read differently must not squash the image
    Case("exif_orientation_as_be_long", exif_big_endian_long_orientation, "jpg", 200,
         check=check_consistent_orientation),
    Case("exif_two_app1_segments", exif_two_app1_segments, "jpg", 200, check=check_consistent_orientation),
    # too many bytes
    Case("source_over_max_bytes", lambda: corpus.padded_jpeg(1_500_000), "jpg", 413,
         f"source is larger than RESIZE_MAX_SOURCE_BYTES={SMALL_BYTES}", settings={"max_source_bytes": SMALL_BYTES}),
]


@pytest.fixture
def tmpdir_watch(monkeypatch, tmp_path):
    with corpus.private_tempdir(monkeypatch, tmp_path / "tmp") as path:
        yield path


@pytest.fixture
def restore_magick_limits():
    """create_app sets ImageMagick's limits process-wide; a small app must not leave its limits behind."""
    names = ("area", "memory", "map", "disk", "thread")
    before = {name: wand.resource.limits[name] for name in names}
    yield
    for name, value in before.items():
        wand.resource.limits[name] = value


def upload(s3, case: Case) -> str:
    s3.put_object(Bucket=BUCKET, Key=f"h/{case.name}.{case.ext}", Body=case.make())
    return f"/h/{case.name}_200x200.{case.ext}"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_hostile_corpus(case, s3, storage, app, tmpdir_watch, restore_magick_limits, reference):
    if case.settings:
        app = create_app(Settings(bucket=BUCKET, **case.settings), storage=storage)
    service = app.extensions["resize"]
    url = upload(s3, case)
    before = corpus.listing(tmpdir_watch)

    response = app.test_client().get(url)
    assert service.drain(10)

    assert response.status_code != 500
    assert response.status_code == case.status, response.get_data(as_text=True)
    if case.status == 200:
        assert response.mimetype == CONTENT_TYPES[case.ext]
        case.check(response.data, reference)
        if case.check is check_partial:
            # A truncated original: the partial thumbnail is served, briefly cached, and never stored.
            assert response.headers["Cache-Control"] == service.settings.partial_cache_control == "public, max-age=60"
            assert s3.list_objects_v2(Bucket=BUCKET, Prefix=url[1:])["KeyCount"] == 0
            assert service.metrics.get("partial_renders_total") == 1
        else:
            assert response.headers["Cache-Control"] == service.settings.cache_control
            assert response.data == s3.get_object(Bucket=BUCKET, Key=url[1:])["Body"].read()  # and it was stored
    else:
        assert response.mimetype == "text/plain"
        assert response.headers["Cache-Control"] == "no-store"
        body = response.get_data(as_text=True)
        assert body.endswith("\n") and body.count("\n") == 1 and len(body) < 100, body
        if case.message.startswith("^"):
            assert re.match(case.message, body.strip()), body
        else:
            assert body == case.message + "\n"
        # nothing was stored for a refused source
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"h/{case.name}_")
        assert listed["KeyCount"] == 0
    assert corpus.listing(tmpdir_watch) == before


# ---- the inputs are what the table says they are ---------------------------------------


def test_inputs_are_what_they_claim():
    data = corpus.landscape()
    assert (read_header(data).width, read_header(data).height) == (1800, 1200)

    truncated = corpus.truncated_jpeg()
    assert len(truncated) == int(len(data) * 0.6) and not truncated.endswith(b"\xff\xd9")
    assert read_header(truncated).width == 1800  # the headers survived the cut, the scan did not
    assert b"\xff\xc0" not in corpus.jpeg_cut_in_headers()

    cmyk = corpus.cmyk_jpeg()
    with Image(blob=cmyk) as img:
        assert img.colorspace == "cmyk"
    assert corpus.jpeg_sof(cmyk).components == 4

    assert corpus.png_ihdr(corpus.png16())["bit_depth"] == 16
    with Image(blob=corpus.grayscale_jpeg()) as img:
        assert img.colorspace == "gray"
    assert corpus.jpeg_sof(corpus.grayscale_jpeg()).components == 1

    progressive = corpus.progressive_jpeg()
    assert corpus.jpeg_sof(progressive).progressive
    assert not corpus.jpeg_sof(data).progressive
    with Image(blob=progressive) as img:
        assert img.interlace_scheme == "jpeg"

    palette = corpus.palette_png()
    assert corpus.png_ihdr(palette)["color_type"] == 3  # indexed
    assert b"tRNS" in [kind for kind, _ in corpus.png_chunks(palette)]

    animated = corpus.animated_gif()
    assert corpus.gif_frame_count(animated) == 3
    assert read_header(animated).frames == 3
    colours = []
    for index in range(3):
        with Image() as frame:
            frame.read(blob=animated, format=f"gif[{index}]")
            pixel = frame[5, 5]
            colours.append((pixel.red, pixel.green, pixel.blue))
    assert colours == [(1, 0, 0), (0, 1, 0), (0, 0, 1)]

    small = read_header(corpus.animated_gif(200, 200))
    assert small.width * small.height <= SMALL_PIXELS < small.pixels  # only the frame count trips the limit

    assert read_header(corpus.webp()).format == "webp"
    for make, size in [(corpus.png_bomb, (100_000, 100_000)), (corpus.gif_bomb, (65535, 65535)),
                       (corpus.jpeg_bomb, (65000, 65000))]:
        bomb = make()
        assert (read_header(bomb).width, read_header(bomb).height) == size
        assert len(bomb) < 400_000
    assert len(corpus.png_bomb()) < 100
    png = corpus.png_bomb()
    for kind, body in corpus.png_chunks(png):  # CRCs are valid: only the size is hostile
        offset = png.index(kind + body)
        assert struct.unpack(">I", png[offset + len(kind) + len(body):][:4])[0] == zlib.crc32(kind + body)

    # The screen is 16x16; the frame inside it is 30000x30000, and the sniffer counts the frame.
    assert read_header(corpus.gif_frame_bomb()).pixels == 900_000_000
    assert read_header(wide_png()).pixels == 330_000

    for make in (corpus.exif_orientation_999, corpus.exif_ifd_past_end, corpus.exif_count_65535):
        spliced = make()
        assert spliced.count(b"Exif\x00\x00") == 1 and spliced.endswith(b"\xff\xd9")
    assert len(corpus.padded_jpeg(1_500_000)) == 1_500_000


class CountingEngine(WandEngine):
    """The real engine, counting how often it is asked to decode."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def render(self, *args, **kwargs):
        self.calls += 1
        return super().render(*args, **kwargs)


@pytest.mark.parametrize("make, ext, decoded", [
    (corpus.png_bomb, "png", False),
    (corpus.gif_bomb, "gif", False),
    (corpus.jpeg_bomb, "jpg", False),
    (corpus.landscape, "jpg", True),  # the control: a normal photo does reach the decoder
])
def test_bombs_never_reach_the_decoder(s3, storage, make, ext, decoded):
    engine = CountingEngine()
    app = create_app(Settings(bucket=BUCKET), storage=storage, engine=engine)
    s3.put_object(Bucket=BUCKET, Key=f"b/x.{ext}", Body=make())
    response = app.test_client().get(f"/b/x_200x200.{ext}")
    assert response.status_code == (200 if decoded else 413)
    assert engine.calls == (1 if decoded else 0)


def test_large_png_within_limits_renders(s3, client, tmpdir_watch):
    """16 MP is a third of RESIZE_MAX_SOURCE_PIXELS: it must render, not fail on a lower hidden limit."""
    side = 4000
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = (b"\x00" + b"\x80" * side) * side
    data = (b"\x89PNG\r\n\x1a\n" + corpus.png_chunk(b"IHDR", ihdr)
            + corpus.png_chunk(b"IDAT", zlib.compress(rows, 1)) + corpus.png_chunk(b"IEND", b""))
    s3.put_object(Bucket=BUCKET, Key="big/gray.png", Body=data)
    response = client.get("/big/gray_200x200.png")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert dimensions(response.data) == ("PNG", 200, 200)
    assert corpus.listing(tmpdir_watch) == set()


def test_temp_dir_watch_sees_magick_files(tmpdir_watch):
    """The listing check can fail: a temporary file made the way ImageMagick's coders make one shows up."""
    before = corpus.listing(tmpdir_watch)
    path = corpus.magick_temp_file()
    try:
        assert path.startswith(tmpdir_watch + "/magick-")
        assert corpus.listing(tmpdir_watch) - before == {path.rsplit("/", 1)[1]}
    finally:
        corpus.release_magick_temp_file(path)
    assert corpus.listing(tmpdir_watch) == before
