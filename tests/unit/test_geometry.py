"""plan(): fit/fill sizes, the centred crop and the JPEG shrink-on-load hint."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resize_server.imaging.geometry import plan
from resize_server.sniff import ImageHeader

CASES = [
    # (format, stored w, h, orientation), (box w, h), mode, upscale -> resize, crop, output, hint
    (("jpeg", 4000, 3000, 1), (200, 200), "fit", False, (200, 150), None, (200, 150), (500, 375)),
    (("jpeg", 800, 600, 1), (1024, 1024), "fit", False, (800, 600), None, (800, 600), None),
    (("jpeg", 800, 600, 1), (1024, 1024), "fit", True, (1024, 768), None, (1024, 768), None),
    (("jpeg", 800, 600, 1), (None, 1200), "fit", True, (1600, 1200), None, (1600, 1200), None),
    (("jpeg", 4000, 3000, 1), (200, 200), "fill", False, (267, 200), (33, 0, 200, 200), (200, 200), (500, 375)),
    (("jpeg", 3000, 4000, 1), (200, 200), "fill", False, (200, 267), (0, 33, 200, 200), (200, 200), (375, 500)),
    (("jpeg", 4000, 3000, 1), (300, 300), "fill", False, (400, 300), (50, 0, 300, 300), (300, 300), (500, 375)),
    (("jpeg", 4000, 3000, 1), (400, None), "fit", False, (400, 300), None, (400, 300), (500, 375)),
    (("jpeg", 4000, 3000, 1), (None, 300), "fit", False, (400, 300), None, (400, 300), (500, 375)),
    # one side just over the 1/8 size: decode at 1/4, with a hint that cannot tip further
    (("jpeg", 4000, 3000, 1), (501, None), "fit", False, (501, 376), None, (501, 376), (1000, 750)),
    (("jpeg", 4000, 3000, 1), (None, 6000), "fit", False, (4000, 3000), None, (4000, 3000), None),
    (("jpeg", 4000, 3000, 1), (1000, 100), "fit", False, (133, 100), None, (133, 100), (500, 375)),
    # orientation 6: stored 3000x4000, upright 4000x3000; the hint is in stored orientation
    (("jpeg", 3000, 4000, 6), (200, 200), "fit", False, (200, 150), None, (200, 150), (375, 500)),
    (("jpeg", 3000, 4000, 8), (400, None), "fit", False, (400, 300), None, (400, 300), (375, 500)),
    (("jpeg", 3000, 4000, 5), (200, 200), "fill", False, (267, 200), (33, 0, 200, 200), (200, 200), (375, 500)),
    (("jpeg", 4000, 3000, 3), (200, 200), "fit", False, (200, 150), None, (200, 150), (500, 375)),
    # no hint for other formats, nor when the target is more than half the source
    (("png", 4000, 3000, 1), (200, 200), "fit", False, (200, 150), None, (200, 150), None),
    (("gif", 4000, 3000, 1), (200, 200), "fill", False, (267, 200), (33, 0, 200, 200), (200, 200), None),
    (("webp", 4000, 3000, 1), (200, 200), "fit", False, (200, 150), None, (200, 150), None),
    (("jpeg", 1000, 1000, 1), (500, 500), "fit", False, (500, 500), None, (500, 500), (500, 500)),
    (("jpeg", 1000, 1000, 1), (501, 501), "fit", False, (501, 501), None, (501, 501), None),
    (("jpeg", 1000, 3, 1), (500, None), "fit", False, (500, 2), None, (500, 2), (500, 1)),  # 1/2 still gives 2 rows
    (("jpeg", 4000, 3000, 1), (2000, 1600), "fill", False, (2133, 1600), (66, 0, 2000, 1600), (2000, 1600), None),
    # fill without upscaling keeps the source size and crops only what exceeds the box
    (("jpeg", 300, 200, 1), (400, 400), "fill", False, (300, 200), None, (300, 200), None),
    (("jpeg", 1000, 200, 1), (400, 400), "fill", False, (1000, 200), (300, 0, 400, 200), (400, 200), None),
    (("jpeg", 1000, 200, 1), (400, 400), "fill", True, (2000, 400), (800, 0, 400, 400), (400, 400), None),
    # tiny results never collapse to zero
    (("png", 10000, 1, 1), (10, 10), "fit", False, (10, 1), None, (10, 1), None),
]


@pytest.mark.parametrize("src, box, mode, upscale, resize, crop, output, hint", CASES)
def test_plan(src, box, mode, upscale, resize, crop, output, hint):
    fmt, w, h, orientation = src
    result = plan(ImageHeader(fmt, w, h, orientation=orientation), box[0], box[1], mode, upscale)
    assert (result.resize, result.crop, result.load_hint, result.output) == (resize, crop, hint, output)


_HEADER = st.builds(
    ImageHeader,
    format=st.sampled_from(["jpeg", "png"]),
    width=st.integers(1, 6000),
    height=st.integers(1, 6000),
    orientation=st.integers(1, 8),
)


@settings(max_examples=300, deadline=None)
@given(_HEADER, st.integers(1, 3000), st.integers(1, 3000), st.sampled_from(["fit", "fill"]), st.booleans())
def test_plan_invariants(header, width, height, mode, upscale):
    p = plan(header, width, height, mode, upscale)
    src_w, src_h = header.upright_size
    out_w, out_h = p.output
    assert 1 <= out_w <= width and 1 <= out_h <= height
    if not upscale:
        assert p.resize[0] <= src_w and p.resize[1] <= src_h
    if mode == "fill" and (upscale or (src_w >= width and src_h >= height)):
        assert p.output == (width, height)
    if p.crop is not None:
        left, top, cw, ch = p.crop
        assert (cw, ch) == p.output
        assert 0 <= left and left + cw <= p.resize[0] and 0 <= top and top + ch <= p.resize[1]
    else:
        assert p.output == p.resize
    if p.load_hint is not None:
        assert header.format == "jpeg"
        # The hint asks for exactly 1/n (n = 2, 4 or 8) and that scale still holds the resize target.
        ns = [n for n in (2, 4, 8) if p.load_hint == (max(1, header.width // n), max(1, header.height // n))]
        assert any(-(-src_w // n) >= p.resize[0] and -(-src_h // n) >= p.resize[1] for n in ns)


def test_the_hint_never_drops_below_what_rounding_asks_for():
    """2x6 filled into 1x4 rounds to 1x4: a 1/2 decode (1x3) would not hold 4 rows (found by hypothesis)."""
    p = plan(ImageHeader("jpeg", 2, 6), 1, 4, "fill", False)
    assert p.resize == (1, 4) and p.load_hint is None
