"""The README's statement on ``_fill`` with a source smaller than the box, checked on real pixels through HTTP."""

from __future__ import annotations

import pytest

from resize_server.http import create_app
from tests.conftest import BUCKET, dimensions, mean_rgb, solid_image


@pytest.mark.parametrize("source, key, upscale, output", [
    # smaller on both sides: the source unchanged
    ((300, 200), "s_400x400_fill.png", False, (300, 200)),
    # smaller on one side: not scaled, the centre 400 of the width
    ((1000, 200), "s_400x400_fill.png", False, (400, 200)),
    ((200, 1000), "s_400x400_fill.png", False, (200, 400)),
    # at least the box on both sides: exactly the box
    ((1000, 800), "s_400x400_fill.png", False, (400, 400)),
    # with upscaling: always exactly the box
    ((300, 200), "s_400x400_fill.png", True, (400, 400)),
    ((1000, 200), "s_400x400_fill.png", True, (400, 400)),
])
def test_fill_with_a_small_source_is_as_the_readme_says(settings, s3, storage, source, key, upscale, output):
    s3.put_object(Bucket=BUCKET, Key="s.png", Body=solid_image(*source, "red", "png"), ContentType="image/png")
    app = create_app({"bucket": BUCKET, "upscale": upscale}, storage=storage)
    response = app.test_client().get("/" + key)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert dimensions(response.data) == ("PNG", *output)
    red = mean_rgb(response.data)
    assert red[0] > 250 and red[1] < 5 and red[2] < 5  # the source's pixels, no padding


def test_the_centre_is_kept(settings, s3, storage):
    """1000x200, left third blue, middle red, right third blue: the centre 400x200 is all red."""
    from wand.color import Color
    from wand.image import Image

    with Image(width=1000, height=200, background=Color("blue")) as img:
        with Image(width=400, height=200, background=Color("red")) as middle:
            img.composite(middle, 300, 0)
        img.format = "png"
        data = img.make_blob()
    s3.put_object(Bucket=BUCKET, Key="c.png", Body=data, ContentType="image/png")
    response = create_app({"bucket": BUCKET}, storage=storage).test_client().get("/c_400x400_fill.png")
    assert dimensions(response.data) == ("PNG", 400, 200)
    for box in [(0, 0, .1, 1), (.9, 0, 1, 1), (.45, 0, .55, 1)]:
        r, g, b = mean_rgb(response.data, box)
        assert r > 250 and b < 5, (box, r, g, b)
