"""Size policy, source limits and the size-list syntax."""

from __future__ import annotations

import struct
import zlib

import pytest
from wand.color import Color
from wand.image import Image

from resize_server.errors import CorruptImage, InvalidSize, SizeNotAllowed, SourceTooLarge, UnsupportedFormat
from resize_server.limits import SourceLimits
from resize_server.presets import Catalog, format_sizes, parse_sizes
from resize_server.options import parse_key
from resize_server.sniff import ImageHeader


def png_header(width: int, height: int) -> bytes:
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("200x200", {(200, 200)}),
        ("50x50,200x200,400x,x150", {(50, 50), (200, 200), (400, None), (None, 150)}),
        (" 50x50 , 200x ,, ", {(50, 50), (200, None)}),
        ("10x10,10x10", {(10, 10)}),
        ("1x99999", {(1, 99999)}),
        ("*", None),
        ("  *  ", None),
    ],
)
def test_parse_sizes(text, expected):
    result = parse_sizes(text)
    assert result == (None if expected is None else frozenset(expected))


@pytest.mark.parametrize(
    "text",
    ["", " ", ",", "foo", "200", "x", "0x10", "10x0", "-1x10", "10x-1", "10.5x10", "10x10x10", "10X10",
     "200x200,foo", "*,200x200", "abcx", "1e3x1"],
)
def test_parse_sizes_rejects(text):
    with pytest.raises(ValueError):
        parse_sizes(text)


@pytest.mark.parametrize("text", ["*", "x150,50x50,400x,200x200", "1x1"])
def test_format_sizes_round_trips(text):
    assert parse_sizes(format_sizes(parse_sizes(text))) == parse_sizes(text)


def test_format_sizes_is_sorted():
    assert format_sizes(parse_sizes("400x,200x200,x150,50x50")) == "x150,50x50,200x200,400x"


POLICY = Catalog(sizes=parse_sizes("200x200,400x,x150,3000x100"), max_width=2048, max_height=1024)


@pytest.mark.parametrize("key", ["a_200x200.jpg", "a_400x.jpg", "a_x150.jpg",
                                 "dir/a_200x200_fill.png"])
def test_size_policy_allows_listed_sizes(key):
    assert POLICY.check_size(parse_key(key).ops) is None


@pytest.mark.parametrize(
    "key, variable",
    [("a_3000x100.jpg", "RESIZE_MAX_WIDTH"), ("a_2049x.jpg", "RESIZE_MAX_WIDTH"),
     ("a_x1025.jpg", "RESIZE_MAX_HEIGHT"), ("a_100x5000.jpg", "RESIZE_MAX_HEIGHT")],
)
def test_size_policy_maxima(key, variable):
    with pytest.raises(InvalidSize) as info:
        POLICY.check_size(parse_key(key).ops)
    assert info.value.status == 400
    assert variable in info.value.public


@pytest.mark.parametrize("key", ["a_201x200.jpg", "a_200x.jpg", "a_x200.jpg", "a_400x400.jpg", "a_150x.jpg"])
def test_size_policy_refuses_unlisted_sizes(key):
    with pytest.raises(SizeNotAllowed) as info:
        POLICY.check_size(parse_key(key).ops)
    assert info.value.status == 403
    assert "RESIZE_ALLOWED_SIZES" in info.value.public


def test_any_size_policy_only_applies_maxima():
    policy = Catalog(sizes=None, max_width=500, max_height=500)
    assert policy.check_size(parse_key("a_499x1.jpg").ops) is None
    assert policy.check_size(parse_key("a_x500.jpg").ops) is None
    with pytest.raises(InvalidSize):
        policy.check_size(parse_key("a_501x1.jpg").ops)


LIMITS = SourceLimits(max_bytes=10_000, max_pixels=1_000_000)


def test_inspect_returns_header_within_limits():
    with Image(width=30, height=20, background=Color("blue")) as img:
        img.format = "png"
        data = img.make_blob()
    assert LIMITS.inspect(data) == ImageHeader("png", 30, 20)
    assert LIMITS.inspect(png_header(1000, 1000)).pixels == 1_000_000  # exactly at the limit


def test_inspect_refuses_too_many_bytes():
    with pytest.raises(SourceTooLarge) as info:
        LIMITS.inspect(png_header(10, 10) + b"\x00" * 10_000)
    assert info.value.status == 413
    assert "RESIZE_MAX_SOURCE_BYTES" in info.value.public


def test_check_length():
    assert LIMITS.check_length(None) is None
    assert LIMITS.check_length(10_000) is None
    with pytest.raises(SourceTooLarge):
        LIMITS.check_length(10_001)


@pytest.mark.parametrize("size", [(100_000, 100_000), (1001, 1000), (1_000_001, 1)])
def test_inspect_refuses_pixel_bombs(size):
    with pytest.raises(SourceTooLarge) as info:
        LIMITS.inspect(png_header(*size))
    assert info.value.status == 413
    assert "RESIZE_MAX_SOURCE_PIXELS" in info.value.public


def test_inspect_counts_every_gif_frame():
    with Image() as img:
        for _ in range(3):
            with Image(width=600, height=600, background=Color("red")) as frame:
                img.sequence.append(frame)
        img.format = "gif"
        data = img.make_blob()
    limits = SourceLimits(max_bytes=len(data), max_pixels=1_000_000)  # one frame fits, three do not
    with pytest.raises(SourceTooLarge):
        limits.inspect(data)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world", b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"push graphic-context\n",
     b"%PDF-1.4\n"],
)
def test_inspect_refuses_unsupported(data):
    with pytest.raises(UnsupportedFormat) as info:
        LIMITS.inspect(data)
    assert info.value.status == 415


def test_inspect_reports_corrupt_header():
    with pytest.raises(CorruptImage) as info:
        LIMITS.inspect(png_header(10, 10)[:20])
    assert info.value.status == 422
