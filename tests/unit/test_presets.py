"""Preset and operation parsing, and the one Catalog policy."""

from __future__ import annotations

import pytest

from resize_server.config import ConfigError, Settings
from resize_server.errors import InvalidOperation, InvalidSize, SizeNotAllowed
from resize_server.options import is_derived_key, parse_key
from resize_server.presets import Catalog, Operations, format_presets, parse_operations, parse_presets, parse_sizes


def test_the_issue_examples_parse():
    presets = parse_presets("thumb=50x50,small=200x200,cover=1200x630:fill,bw=200x200,grayscale,"
                            "card=400x400:pad:bg=ffffff")
    assert presets == {
        "thumb": Operations(50, 50), "small": Operations(200, 200), "cover": Operations(1200, 630, "fill"),
        "bw": Operations(200, 200, grayscale=True), "card": Operations(400, 400, "pad", bg="ffffff"),
    }


@pytest.mark.parametrize("text, expected", [
    ("a=200x", {"a": Operations(200, None)}),
    ("a=x200:sharpen=1", {"a": Operations(None, 200, sharpen=1.0)}),
    ("a=100x100:fill:gravity=north,b=10x10", {"a": Operations(100, 100, "fill", gravity="north"),
                                               "b": Operations(10, 10)}),
    ("a=100x:crop=1,2,300,400:rotate=90", {"a": Operations(100, None, crop=(1, 2, 300, 400), rotate=90)}),
    ("a=100x,format=webp,quality=60", {"a": Operations(100, None, quality=60, format="webp")}),
    ("big-one=64x64", {"big-one": Operations(64, 64)}),
])
def test_preset_grammar(text, expected):
    assert parse_presets(text) == expected


@pytest.mark.parametrize("text, message", [
    ("200x200=50x50", "looks like a size"),
    ("x2=50x50", "looks like a size"),
    ("fill=50x50", None),  # a mode word is an operation, so this is no preset name at all
    ("thumb_1=50x50", "must start with a letter"),
    ("-a=50x50", "must start with a letter"),
    ("a=50x50,a=10x10", "defined twice"),
    ("a=blur=1000", "blur"),
    ("a=", "empty preset"),
    ("a=100x:fill", "fill needs both"),
    ("grayscale", "does not start with a preset name"),
])
def test_bad_presets_are_refused_at_start_up(text, message):
    with pytest.raises(ValueError) as info:
        parse_presets(text)
    if message:
        assert message in str(info.value)


def test_presets_round_trip_through_their_text():
    text = "a=100x100:fill:gravity=south,b=x50:grayscale:blur=2,c=10x10:pad:bg=ff0000"
    assert parse_presets(format_presets(parse_presets(text))) == parse_presets(text)


def test_settings_validate_presets_and_name_the_variable():
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping({"bucket": "b", "presets": "10x10=5x5"})
    assert "RESIZE_PRESETS" in str(info.value)
    problems = Settings(bucket="b", presets=parse_presets("huge=4000x10"), event_presets="nope").problems()
    assert any("RESIZE_PRESETS" in p and "huge" in p for p in problems)
    assert any("RESIZE_EVENT_PRESETS" in p and "nope" in p for p in problems)


@pytest.mark.parametrize("dest_key, dest_bucket, presets, ok", [
    ("{stem}_{preset}.{ext}", "", "a=1x1,b=2x2", True),
    ("{key}", "{bucket}resized", "a=1x1", True),
    ("{key}", "{bucket}resized", "a=1x1,b=2x2", False),  # two presets would write the same key
    ("{key}", "", "a=1x1", False),  # would overwrite the original
    ("{stem}_{size}.{ext}", "", "a=1x1", False),  # unknown field
    ("thumbs/{preset}/{key}", "", "a=1x1,b=2x2", True),
    ("{preset}.jpg", "", "a=1x1", False),  # every original writes the same key
    # The stored key's extension names the stored format.
    ("{key}", "{bucket}resized", "a=1x1,format=webp", False),  # a.jpg would hold WebP
    ("{stem}.{ext}", "{bucket}resized", "a=1x1,format=webp", True),
    ("{stem}_{preset}.jpg", "", "a=1x1,b=2x2", False),  # a PNG original would be stored as PNG under .jpg
    ("{stem}_{preset}.jpg", "", "a=1x1,format=jpg,b=2x2,format=jpeg", True),
    ("{stem}_{preset}.webp", "", "a=1x1,format=webp,b=2x2,format=png", False),
    ("thumbs/{stem}_{preset}", "", "a=1x1,format=png", False),  # no extension at all
])
def test_dest_key_is_validated(dest_key, dest_bucket, presets, ok):
    settings = Settings(bucket="b", presets=parse_presets(presets), dest_key=dest_key, dest_bucket=dest_bucket)
    assert (not any("RESIZE_DEST" in p for p in settings.problems())) is ok


@pytest.mark.parametrize("params, expected", [
    ({"w": "400", "grayscale": "1"}, Operations(400, None, grayscale=True)),
    ({"w": "10", "h": "10", "fill": ""}, Operations(10, 10, "fill")),
    ({"w": "10", "h": "10", "mode": "pad", "bg": "#FFF"}, Operations(10, 10, "pad", bg="fff")),
    ({"format": "jpg", "quality": "100"}, Operations(format="jpeg", quality=100)),
    ({"flip": "true", "flop": "0", "rotate": "270"}, Operations(flip=True, rotate=270)),
    ({"blur": "20", "sharpen": "0.3"}, Operations(blur=20.0, sharpen=0.3)),
    ({"w": "10", "h": "10", "fill": "1", "gravity": "centre"}, Operations(10, 10, "fill")),
])
def test_operations_from_parameters(params, expected):
    assert parse_operations(params) == expected


@pytest.mark.parametrize("params, parameter", [
    ({"blur": "1000"}, "blur"), ({"blur": "inf"}, "blur"), ({"sharpen": "5.01"}, "sharpen"),
    ({"quality": "1.5"}, "quality"), ({"rotate": "-90"}, "rotate"), ({"format": "bmp"}, "format"),
    ({"fill": "maybe"}, "fill"), ({"w": "1", "h": "1", "fill": "1", "pad": "1"}, "pad"),
    ({"crop": "0,0,0,5"}, "crop"), ({"bg": "fff"}, "bg"), ({"gravity": "north"}, "gravity"),
])
def test_operation_errors_name_the_parameter(params, parameter):
    with pytest.raises(InvalidOperation) as info:
        parse_operations(params)
    assert info.value.parameter == parameter and info.value.status == 400


def test_catalog_is_one_policy_for_sizes_and_presets():
    catalog = Catalog({"small": Operations(200, 200)}, parse_sizes("100x100"), 1000, 1000)
    assert catalog.allows(100, 100) and not catalog.allows(200, 200)
    catalog.check_size(Operations(100, 100))
    with pytest.raises(SizeNotAllowed):
        catalog.check_size(Operations(200, 200))
    with pytest.raises(InvalidSize):
        catalog.check_size(Operations(2000, None))
    only = Catalog({"small": Operations(200, 200)}, None, 1000, 1000, presets_only=True)
    with pytest.raises(SizeNotAllowed):
        only.check_size(Operations(100, 100))


@pytest.mark.parametrize("key, derived", [
    ("a_small.jpg", True), ("p/small/a.jpg", True), ("a.jpg!small", True), ("a_100x100.jpg", True),
    ("a_100x100_fill.png", True), ("a_123x123.jpg", False),  # a size nobody may ask for: an original's name
    ("a.jpg", False), ("a_big.jpg", False), ("p/big/a.jpg", False), ("a.jpg!big", False),
    ("my_xmas.jpg", False), ("Tom & Jerry.jpg", False),
])
def test_is_derived_key(key, derived):
    catalog = Catalog({"small": Operations(200, 200)}, parse_sizes("100x100"), 1000, 1000)
    assert is_derived_key(key, catalog) is derived


def test_a_preset_key_is_never_read_as_a_size_and_vice_versa():
    catalog = Catalog({"small": Operations(200, 200)}, None, 5000, 5000)
    assert parse_key("a_small.jpg", catalog).preset == "small"
    assert parse_key("a_200x200.jpg", catalog).preset is None
    assert parse_key("a_small_200x200.jpg", catalog).source_key == "a_small.jpg"


@pytest.mark.parametrize("keys, problem", [(",", "holds no key"), ("short", "shorter than 12"),
                                           ("a-long-enough-key,tiny", "1 key(s) shorter"), ("local-dev-key", None)])
def test_api_keys_are_validated(keys, problem):
    problems = [p for p in Settings(bucket="b", api_keys=keys).problems() if "API_KEYS" in p]
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0] and "tiny" not in problems[0]  # never echo a key
