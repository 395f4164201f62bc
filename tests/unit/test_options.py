"""The derived-key grammar: parse_key, check_key, decode_src."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resize_server.errors import InvalidKey, InvalidSize, NotADerivedKey, ResizeError
from resize_server.options import RenderRequest, check_key, decode_src, parse_key, path_readings, src_readings


@pytest.mark.parametrize(
    "key, source, width, height, mode, fmt",
    [
        ("samples/earth_200x200.jpg", "samples/earth.jpg", 200, 200, "fit", "jpeg"),
        ("earth_200x.jpg", "earth.jpg", 200, None, "fit", "jpeg"),
        ("earth_x150.jpg", "earth.jpg", None, 150, "fit", "jpeg"),
        ("earth_200x200_fill.jpg", "earth.jpg", 200, 200, "fill", "jpeg"),
        ("earth_200x100.JPG", "earth.JPG", 200, 100, "fit", "jpeg"),
        ("earth_200x100.jpeg", "earth.jpeg", 200, 100, "fit", "jpeg"),
        ("earth_1x1.png", "earth.png", 1, 1, "fit", "png"),
        ("earth_64x48.gif", "earth.gif", 64, 48, "fit", "gif"),
        ("earth_300x.webp", "earth.webp", 300, None, "fit", "webp"),
        ("earth_999999x5.WebP", "earth.WebP", 999999, 5, "fit", "webp"),
        ("a/b/c/earth_10x20.png", "a/b/c/earth.png", 10, 20, "fit", "png"),
        ("my photos/summer day_200x200.jpg", "my photos/summer day.jpg", 200, 200, "fit", "jpeg"),
        ("a+b/c+d_200x200.jpg", "a+b/c+d.jpg", 200, 200, "fit", "jpeg"),
        ("fotos/été_200x200.jpg", "fotos/été.jpg", 200, 200, "fit", "jpeg"),
        ("写真/猫_50x50.png", "写真/猫.png", 50, 50, "fit", "png"),
        ("my_xmas_200x200.jpg", "my_xmas.jpg", 200, 200, "fit", "jpeg"),
        ("x_x_x_x10.jpg", "x_x_x.jpg", None, 10, "fit", "jpeg"),
        ("thumb_100x100_400x300_fill.jpg", "thumb_100x100.jpg", 400, 300, "fill", "jpeg"),
        ("2024_fill_200x.jpg", "2024_fill.jpg", 200, None, "fit", "jpeg"),
        ("dir.d/file.tar_200x200.png", "dir.d/file.tar.png", 200, 200, "fit", "png"),
    ],
)
def test_valid_keys(key, source, width, height, mode, fmt):
    req = parse_key(key)
    assert isinstance(req, RenderRequest)
    assert (req.key, req.source_key, req.width, req.height, req.mode, req.format) == (key, source, width, height,
                                                                                     mode, fmt)
    assert req.preset is None and req.sources[0] == source
    assert req.size_label == f"{width or ''}x{height or ''}"
    assert req.content_type == f"image/{fmt}"


@pytest.mark.parametrize(
    "key",
    ["earth.jpg", "my_xmas.jpg", "doc_200x200.pdf", "earth_200x200", "samples/earth", "earth_200x200.tiff",
     "a_200x200.jpg/b.jpg", "earth_200x200.j-g",
     # "_x" with no number on either side is a word, not a size: "my_x.jpg" is an original's name.
     "earth_x.jpg", "earth_x_fill.jpg", "dir/earth_x.png"],
)
def test_not_a_derived_key(key):
    with pytest.raises(NotADerivedKey) as info:
        parse_key(key)
    assert info.value.status == 404


@pytest.mark.parametrize(
    "key",
    [
        "earth_0x200.jpg",
        "earth_200x0.jpg",
        "earth_-5x10.jpg",
        "earth_+5x10.jpg",
        "earth_abcx200.jpg",
        "earth_200xabc.jpg",
        "earth_200.5x100.jpg",
        "earth_0200x200.jpg",
        "earth_200x0200.jpg",
        "earth_1234567x1.jpg",
        "earth_200x_fill.jpg",
        "earth_x200_fill.jpg",
    ],
)
def test_invalid_sizes(key):
    with pytest.raises(InvalidSize) as info:
        parse_key(key)
    assert info.value.status == 400


@pytest.mark.parametrize(
    "key",
    [
        "",
        "../secret_200x200.jpg",
        "a/../../etc/passwd_200x200.jpg",
        "a/./b_200x200.jpg",
        "a/..",
        "a\\..\\b_200x200.jpg",
        "/etc/earth_200x200.jpg",
        "\\earth_200x200.jpg",
        "earth\x00_200x200.jpg",
        "earth\n_200x200.jpg",
        "earth\r_200x200.jpg",
        "earth\x1b_200x200.jpg",
        "earth\x7f_200x200.jpg",
        "earth\x85_200x200.jpg",
        "a" * 1013 + "_200x200.jpg",  # 1025 bytes
        "é" * 507 + "_200x200.jpg",  # 1026 bytes, but only 519 characters
    ],
)
def test_hostile_keys(key):
    with pytest.raises(InvalidKey) as info:
        parse_key(key)
    assert info.value.status == 400
    with pytest.raises(InvalidKey):
        check_key(key)


def test_key_of_exactly_1024_bytes_is_allowed():
    key = "a" * 1012 + "_200x200.jpg"
    assert len(key.encode()) == 1024
    assert check_key(key) == key
    assert parse_key(key).source_key == "a" * 1012 + ".jpg"


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"src=a%20b_200x200.jpg", "a b_200x200.jpg"),
        (b"src=a+b_200x200.jpg", "a+b_200x200.jpg"),
        (b"src=a%2Bb_200x200.jpg", "a+b_200x200.jpg"),
        (b"src=fotos/%C3%A9t%C3%A9_200x200.jpg", "fotos/été_200x200.jpg"),
        (b"src=%E7%8C%AB_1x1.png", "猫_1x1.png"),
        (b"w=1&src=earth_200x200.jpg&h=2", "earth_200x200.jpg"),
        (b"source=x&src=a.jpg&srcset=y", "a.jpg"),
        (b"src=a%252Fb.jpg", "a%2Fb.jpg"),  # decoded exactly once (other readings come after)
        (b"src=a.jpg&src=b.jpg", "a.jpg&src=b.jpg"),  # src opens the query: the rest is the key
        ("src=a%20b.jpg", "a b.jpg"),
    ],
)
def test_decode_src(raw, expected):
    assert decode_src(raw) == expected


@pytest.mark.parametrize("key", ["a%2Fb_200x200.jpg", "a%2e%2e/b_200x200.jpg", "100%41_200x200.jpg", "50%_1x1.jpg"])
def test_a_literal_percent_is_part_of_a_key(key):
    """The hostile-key checks run on the final key: a '%' that survived decoding is just a character."""
    assert check_key(key) == key
    assert parse_key(key).key == key


def test_no_reading_of_a_double_encoded_traversal_escapes():
    readings = src_readings(b"src=a%252F..%252Fb_200x200.jpg")
    assert readings == ["a%2F..%2Fb_200x200.jpg", "a%252F..%252Fb_200x200.jpg"]  # "a/../b..." was dropped
    for reading in readings:
        assert ".." not in reading.split("/")


@pytest.mark.parametrize(
    "raw, readings",
    [
        # s3rver and others put the key raw into the Location; & and = survive because src opens the query
        (b"src=samples/Tom & Jerry_200x200.jpg", ["samples/Tom & Jerry_200x200.jpg"]),
        (b"src=a=b&c=d_200x200.jpg", ["a=b&c=d_200x200.jpg"]),
        # curl turns a raw space into "+": the literal plus first, then the space
        (b"src=samples/my+photo_200x200.jpg", ["samples/my+photo_200x200.jpg", "samples/my photo_200x200.jpg"]),
        # an endpoint that encoded once, and one that encoded twice
        (b"src=samples/my%20photo_200x200.jpg", ["samples/my photo_200x200.jpg", "samples/my%20photo_200x200.jpg"]),
        (b"src=samples/my%2520photo_200x200.jpg",
         ["samples/my%20photo_200x200.jpg", "samples/my photo_200x200.jpg", "samples/my%2520photo_200x200.jpg"]),
        # a key holding a literal %41, sent raw, and sent encoded
        (b"src=samples/100%41_200x200.jpg", ["samples/100A_200x200.jpg", "samples/100%41_200x200.jpg"]),
        (b"src=samples/100%2541_200x200.jpg",
         ["samples/100%41_200x200.jpg", "samples/100A_200x200.jpg", "samples/100%2541_200x200.jpg"]),
        # unicode as curl sends it (encoded) and raw
        (b"src=f%C3%A9_200x200.jpg", ["f\u00e9_200x200.jpg", "f%C3%A9_200x200.jpg"]),
        ("src=fé_200x200.jpg".encode(), ["fé_200x200.jpg"]),
        # never more than three readings
        (b"src=a+b%2520c_1x1.jpg", ["a+b%20c_1x1.jpg", "a b%20c_1x1.jpg", "a+b c_1x1.jpg"]),
    ],
)
def test_src_readings(raw, readings):
    assert src_readings(raw) == readings


@pytest.mark.parametrize("raw, kept", [(b"src=%00_1x1.jpg", "%00_1x1.jpg"), (b"src=%2e%2e/x_1x1.jpg", "%2e%2e/x_1x1.jpg")])
def test_hostile_readings_are_dropped_but_literal_ones_kept(raw, kept):
    assert src_readings(raw) == [kept]  # the decoded reading ("\x00...", "../x...") never reaches S3


def test_path_readings_decode_once_and_keep_plus():
    assert path_readings("/samples/my%20photo+1_200x200.jpg?x=1") == ["samples/my photo+1_200x200.jpg"]


@pytest.mark.parametrize(
    "raw",
    [b"", b"w=200", b"source=a.jpg", b"w=1&src=a.jpg&src=b.jpg", b"w=1&src=a.jpg&src=a.jpg",
     b"src=\xff_1x1.jpg", b"src=\xc3_1x1.jpg", b"src=\x00_1x1.jpg", b"src=../x_1x1.jpg"],
)
def test_decode_src_rejects(raw):
    with pytest.raises(InvalidKey) as info:
        decode_src(raw)
    assert info.value.status == 400


# ---- properties -----------------------------------------------------------

_SAFE_CHARS = st.characters(
    categories=("L", "N", "P", "S", "Zs"), exclude_characters="/\\%", max_codepoint=0x2FFFF
)
_SEGMENT = st.text(_SAFE_CHARS, min_size=1, max_size=20).filter(lambda s: s not in (".", ".."))
_STEM = st.lists(_SEGMENT, min_size=1, max_size=4).map("/".join)
_SIDE = st.none() | st.integers(1, 5000)


@settings(max_examples=300, deadline=None)
@given(stem=_STEM, width=_SIDE, height=_SIDE)
def test_built_keys_round_trip(stem, width, height):
    if width is None and height is None:
        width = 1
    key = f"{stem}_{width or ''}x{height or ''}.jpg"
    req = parse_key(key)
    assert (req.source_key, req.width, req.height, req.mode, req.format, req.key) == (
        stem + ".jpg", width, height, "fit", "jpeg", key)


def _assert_only_typed_errors(key):
    try:
        req = parse_key(key)
    except ResizeError as exc:
        assert exc.status in (400, 404), (key, exc)
        return None
    assert isinstance(req, RenderRequest)
    return req


def _assert_safe_source(req):
    segments = re.split(r"[/\\]", req.source_key)
    assert ".." not in segments and "." not in segments, req
    assert not req.source_key.startswith(("/", "\\")), req


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_parse_key_on_arbitrary_text(key):
    req = _assert_only_typed_errors(key)
    if req is not None:
        _assert_safe_source(req)


_TRICKY = st.lists(
    st.sampled_from(["..", ".", "/", "\\", "_", "x", "1", "0", "a", "é", ".jpg", "_fill", "%2F", "\x00", " "]),
    max_size=14,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(_TRICKY, st.sampled_from(["_200x200.jpg", "_x5.png", "_5x_fill.gif", "_5x5_fill.webp", ""]))
def test_source_key_is_never_traversal(prefix, suffix):
    req = _assert_only_typed_errors(prefix + suffix)
    if req is not None:
        _assert_safe_source(req)
        assert req.width is None or req.width >= 1
        assert req.height is None or req.height >= 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.binary(max_size=60).map(lambda b: b"src=" + b))
def test_decode_src_on_arbitrary_bytes(raw):
    try:
        value = decode_src(raw)
    except InvalidKey:
        return
    assert isinstance(value, str)
