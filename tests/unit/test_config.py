"""Settings from RESIZE_* variables: conversion, defaults, and errors that name the variable."""

from __future__ import annotations

import re

import pytest

from resize_server.config import DEFAULT_SIZES, ConfigError, Settings
from resize_server.limits import SourceLimits
from resize_server.presets import Catalog, parse_sizes


def named(error: ConfigError) -> set[str]:
    """The variables an error reports as bad: one 'RESIZE_X=...: why' line each."""
    return set(re.findall(r"^\s+(RESIZE_[A-Z0-9_]+)=", str(error), re.MULTILINE))


def load(env: dict[str, str]) -> Settings:
    return Settings.from_env(env).validate()


def test_from_env_converts_types():
    s = load({
        "RESIZE_BUCKET": "photos",
        "RESIZE_REGION": "eu-west-1",
        "RESIZE_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "RESIZE_MAX_WIDTH": " 3000 ",
        "RESIZE_MAX_HEIGHT": "1500",
        "RESIZE_JPEG_QUALITY": "70",
        "RESIZE_UPSCALE": "yes",
        "RESIZE_STORE_RESULTS": "off",
        "RESIZE_S3_CONNECT_TIMEOUT": "0.5",
        "RESIZE_QUEUE_TIMEOUT": "3",
        "RESIZE_ALLOWED_SIZES": "100x100, 300x,x50",
        "RESIZE_QUEUE_SIZE": "0",
        "RESIZE_STORAGE_CLASS": "STANDARD_IA",
        "RESIZE_LOG_LEVEL": "debug",
        "PATH": "/usr/bin",
        "RESIZE_": "ignored",
    })
    assert s.bucket == "photos" and s.region == "eu-west-1"
    assert s.s3_endpoint_url == "http://127.0.0.1:9000"
    assert (s.max_width, s.max_height, s.jpeg_quality, s.queue_size) == (3000, 1500, 70, 0)
    assert all(type(v) is int for v in (s.max_width, s.max_height, s.jpeg_quality, s.queue_size))
    assert s.upscale is True and s.store_results is False
    assert s.s3_connect_timeout == 0.5 and type(s.queue_timeout) is float and s.queue_timeout == 3.0
    assert s.allowed_sizes == frozenset({(100, 100), (300, None), (None, 50)})
    assert s.storage_class == "STANDARD_IA"
    assert s.catalog == Catalog({}, s.allowed_sizes, 3000, 1500, False)
    assert s.source_limits == SourceLimits(s.max_source_bytes, s.max_source_pixels)


@pytest.mark.parametrize(
    "raw, expected",
    [("1", True), ("TRUE", True), ("on", True), ("Yes", True), ("0", False), ("false", False), ("No", False),
     (" off ", False)],
)
def test_bool_spellings(raw, expected):
    assert load({"RESIZE_BUCKET": "b", "RESIZE_UPSCALE": raw}).upscale is expected


def test_any_size():
    assert load({"RESIZE_BUCKET": "b", "RESIZE_ALLOWED_SIZES": "*"}).allowed_sizes is None


def test_defaults_validate_once_a_bucket_is_given():
    s = load({"RESIZE_BUCKET": "b"})
    assert s == Settings(bucket="b")
    assert s.allowed_sizes == parse_sizes(DEFAULT_SIZES)
    assert (s.jpeg_quality, s.max_width, s.max_height, s.upscale) == (85, 2048, 2048, False)
    assert s.render_concurrency >= 1


def test_from_env_reads_os_environ(monkeypatch):
    monkeypatch.setenv("RESIZE_BUCKET", "from-environ")
    monkeypatch.setenv("RESIZE_MAX_WIDTH", "321")
    s = Settings.from_env()
    assert (s.bucket, s.max_width) == ("from-environ", 321)


def test_unknown_setting_in_mapping():
    with pytest.raises(ConfigError, match="colour"):
        Settings.from_mapping({"colour": "red"})


@pytest.mark.parametrize(
    "env, variable",
    [
        ({}, "RESIZE_BUCKET"),
        ({"RESIZE_BUCKET": ""}, "RESIZE_BUCKET"),
        ({"RESIZE_JPEG_QUALITY": "0"}, "RESIZE_JPEG_QUALITY"),
        ({"RESIZE_JPEG_QUALITY": "101"}, "RESIZE_JPEG_QUALITY"),
        ({"RESIZE_JPEG_QUALITY": "abc"}, "RESIZE_JPEG_QUALITY"),
        ({"RESIZE_STORAGE_CLASS": "CHEAP"}, "RESIZE_STORAGE_CLASS"),
        ({"RESIZE_MAX_WIDTH": "-1"}, "RESIZE_MAX_WIDTH"),
        ({"RESIZE_MAX_HEIGHT": "0"}, "RESIZE_MAX_HEIGHT"),
        ({"RESIZE_MAX_WIDTH": "wide"}, "RESIZE_MAX_WIDTH"),
        ({"RESIZE_S3_ENDPOINT_URL": "ftp://x"}, "RESIZE_S3_ENDPOINT_URL"),
        ({"RESIZE_ALLOWED_SIZES": "foo"}, "RESIZE_ALLOWED_SIZES"),
        ({"RESIZE_ALLOWED_SIZES": "100x100,4000x4000"}, "RESIZE_ALLOWED_SIZES"),
        ({"RESIZE_ALLOWED_SIZES": "x3000", "RESIZE_MAX_HEIGHT": "2999"}, "RESIZE_ALLOWED_SIZES"),
        ({"RESIZE_UPSCALE": "maybe"}, "RESIZE_UPSCALE"),
        ({"RESIZE_S3_READ_TIMEOUT": "0"}, "RESIZE_S3_READ_TIMEOUT"),
        ({"RESIZE_S3_CONNECT_TIMEOUT": "soon"}, "RESIZE_S3_CONNECT_TIMEOUT"),
        ({"RESIZE_QUEUE_SIZE": "-1"}, "RESIZE_QUEUE_SIZE"),
        ({"RESIZE_REDIS_URL": "http://redis"}, "RESIZE_REDIS_URL"),
        ({"RESIZE_LOG_LEVEL": "LOUD"}, "RESIZE_LOG_LEVEL"),
    ],
)
def test_each_bad_variable_is_named(env, variable):
    base = {} if variable == "RESIZE_BUCKET" else {"RESIZE_BUCKET": "b"}
    env = {**base, **env}
    with pytest.raises(ConfigError) as info:
        load(env)
    assert variable in named(info.value), str(info.value)


def test_allowed_size_larger_than_max_names_only_allowed_sizes():
    with pytest.raises(ConfigError) as info:
        load({"RESIZE_BUCKET": "b", "RESIZE_ALLOWED_SIZES": "200x200,2049x", "RESIZE_MAX_WIDTH": "2048"})
    assert named(info.value) == {"RESIZE_ALLOWED_SIZES"}
    assert "2049x" in str(info.value)


def test_several_bad_variables_are_named_in_one_error():
    with pytest.raises(ConfigError) as info:
        load({"RESIZE_JPEG_QUALITY": "0", "RESIZE_STORAGE_CLASS": "CHEAP",
              "RESIZE_S3_ENDPOINT_URL": "ftp://x", "RESIZE_ALLOWED_SIZES": "*"})
    assert named(info.value) == {"RESIZE_BUCKET", "RESIZE_JPEG_QUALITY", "RESIZE_STORAGE_CLASS",
                                 "RESIZE_S3_ENDPOINT_URL"}


def test_several_unparseable_variables_are_named_in_one_error():
    with pytest.raises(ConfigError) as info:
        load({"RESIZE_BUCKET": "b", "RESIZE_JPEG_QUALITY": "abc", "RESIZE_UPSCALE": "maybe",
              "RESIZE_ALLOWED_SIZES": "foo"})
    assert named(info.value) == {"RESIZE_JPEG_QUALITY", "RESIZE_UPSCALE", "RESIZE_ALLOWED_SIZES"}


def test_unparseable_and_invalid_variables_are_named_in_one_error():
    # config.py: "from_env() never raises on a bad value by itself; validate() collects every
    # problem and raises ConfigError naming each bad variable, so an operator fixes them all in one go."
    with pytest.raises(ConfigError) as info:
        load({"RESIZE_JPEG_QUALITY": "abc", "RESIZE_STORAGE_CLASS": "CHEAP", "RESIZE_MAX_WIDTH": "-1"})
    assert {"RESIZE_BUCKET", "RESIZE_JPEG_QUALITY", "RESIZE_STORAGE_CLASS", "RESIZE_MAX_WIDTH"} <= named(info.value)
