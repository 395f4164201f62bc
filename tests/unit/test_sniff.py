"""Magic-byte detection, header dimensions, frames and EXIF orientation."""

from __future__ import annotations

import random
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wand.color import Color
from wand.image import Image

from resize_server.sniff import HeaderError, ImageHeader, detect_format, read_header

from tests.conftest import photo


def encode(fmt: str, width: int = 37, height: int = 23, color: str = "red", **options: str) -> bytes:
    with Image(width=width, height=height, background=Color(color)) as img:
        for key, value in options.items():
            img.options[key] = value
        img.format = fmt
        return img.make_blob()


def tiny_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "fmt, options, expected",
    [
        ("jpeg", {}, "jpeg"),
        ("jpeg", {"jpeg:sampling-factor": "1x1", "interlace": "JPEG"}, "jpeg"),
        ("png", {}, "png"),
        ("gif", {}, "gif"),
        ("webp", {}, "webp"),  # lossy: VP8 chunk
        ("webp", {"webp:lossless": "true"}, "webp"),  # VP8L chunk
    ],
)
@pytest.mark.parametrize("size", [(37, 23), (1, 1), (300, 7)])
def test_detects_format_and_size(fmt, options, expected, size):
    data = encode(fmt, *size, **options)
    assert detect_format(data) == expected
    header = read_header(data)
    assert header == ImageHeader(expected, size[0], size[1], orientation=1, frames=1)
    assert header.pixels == size[0] * size[1]


def test_webp_extended_header():
    data = encode("webp", 41, 19, color="transparent")  # alpha makes ImageMagick write VP8X
    assert data[12:16] == b"VP8X"
    assert read_header(data) == ImageHeader("webp", 41, 19)


@pytest.mark.parametrize("n", range(1, 9))
@pytest.mark.parametrize("kind", ["Landscape", "Portrait"])
def test_exif_orientation_of_real_photos(kind, n):
    header = read_header(photo(f"{kind}_{n}.jpg"))
    assert header.format == "jpeg"
    assert header.orientation == n
    stored = (1200, 1800) if (kind == "Landscape") == (n >= 5) else (1800, 1200)
    assert (header.width, header.height) == stored
    w, h = header.upright_size
    assert (w > h) if kind == "Landscape" else (w < h)


def test_photo_without_exif_orientation_defaults_to_1():
    header = read_header(photo("Landscape_0.jpg"))
    assert header.orientation == 1
    assert header.upright_size == (header.width, header.height) == (1800, 1200)


@pytest.mark.parametrize(
    "data",
    [
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        b"<svg width='1' height='1'></svg>",
        b"push graphic-context\nviewbox 0 0 640 480\nimage over 0,0 0,0 'https://example.com/x.jpg'\npop graphic-context\n",
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        b"<!DOCTYPE html><html><body>hello</body></html>",
        b"",
        b"\x00" * 64,
        random.Random(1234).randbytes(512),
        b"\xff\xd8",  # SOI without a marker after it
        b"\x89PNG",
        b"GIF88a" + b"\x00" * 20,
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"BM" + b"\x00" * 60,  # BMP is not served
    ],
    ids=["svg-xml", "svg", "mvg", "pdf", "html", "empty", "zeros", "random", "soi-only", "png-prefix",
         "gif88", "riff-wave", "bmp"],
)
def test_unsupported_inputs(data):
    assert detect_format(data) is None
    with pytest.raises(HeaderError) as info:
        read_header(data)
    assert info.value.unsupported is True


@pytest.mark.parametrize(
    "data",
    [
        encode("png")[:20],
        encode("png")[:8],
        encode("jpeg")[:6],  # SOI, then only 4 bytes of the first segment
        photo("Landscape_6.jpg")[:6],
        photo("Landscape_6.jpg")[:60],  # cut inside the EXIF segment
        photo("Landscape_6.jpg")[:262],  # cut inside the frame header (SOF0 at offset 258)
        encode("gif")[:8],
        encode("webp")[:24],
        encode("webp", **{"webp:lossless": "true"})[:22],
        b"RIFF\x00\x00\x00\x00WEBPXXXX" + b"\x00" * 20,
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIDAT" + b"\x00" * 20,  # IHDR not first
        tiny_png(0, 10),
        b"GIF89a\x00\x00\x05\x00\x00\x00\x00\x3b",  # zero width
    ],
    ids=["png-20", "png-8", "jpeg-6", "photo-6", "photo-60", "photo-262", "gif-8", "webp-24", "webpl-22", "webp-chunk",
         "png-no-ihdr", "png-zero", "gif-zero"],
)
def test_truncated_or_broken_headers(data):
    assert detect_format(data) is not None
    with pytest.raises(HeaderError) as info:
        read_header(data)
    assert info.value.unsupported is False


def test_pixel_bomb_dimensions_come_from_the_header():
    data = tiny_png(100_000, 100_000)
    assert len(data) < 100
    header = read_header(data)
    assert (header.format, header.width, header.height, header.frames) == ("png", 100_000, 100_000, 1)
    assert header.pixels == 10_000_000_000


def test_animated_gif_frames():
    with Image() as img:
        for color in ("red", "green", "blue"):
            with Image(width=12, height=9, background=Color(color)) as frame:
                img.sequence.append(frame)
        img.format = "gif"
        data = img.make_blob()
    header = read_header(data)
    assert (header.format, header.width, header.height, header.frames) == ("gif", 12, 9, 3)
    assert header.pixels == 12 * 9 * 3


_MAGIC = st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
                          b"RIFF\x00\x00\x00\x00WEBPVP8L", b"RIFF\x00\x00\x00\x00WEBPVP8X", b""])


@settings(max_examples=400, deadline=None)
@given(_MAGIC, st.binary(max_size=120))
def test_read_header_on_arbitrary_bytes(magic, tail):
    try:
        header = read_header(magic + tail)
    except HeaderError:
        return
    assert header.width >= 1 and header.height >= 1 and header.frames >= 1
    assert 1 <= header.orientation <= 8
