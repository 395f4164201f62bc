"""Settings from RESIZE_* variables: conversion, defaults, and errors that name the variable."""

from __future__ import annotations

import re
import shlex

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


# ---- messages in the user's own terms (issue 8) ----------------------------------------------------


def problems_of(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load({"RESIZE_BUCKET": "b", **env})
    return [line.strip() for line in str(info.value).splitlines()[1:]]


@pytest.mark.parametrize("env, expected", [
    # The user lowered the maximum: the maximum is what conflicts with the (default) sizes.
    ({"RESIZE_MAX_WIDTH": "500"},
     ["RESIZE_MAX_WIDTH=500: is smaller than the allowed sizes 800x800,1024x1024 (from the default "
      "RESIZE_ALLOWED_SIZES): raise it, or list the sizes you want in RESIZE_ALLOWED_SIZES"]),
    ({"RESIZE_MAX_HEIGHT": "900"},
     ["RESIZE_MAX_HEIGHT=900: is smaller than the allowed size 1024x1024 (from the default RESIZE_ALLOWED_SIZES): "
      "raise it, or list the sizes you want in RESIZE_ALLOWED_SIZES"]),
    # The user listed sizes: the sizes are what is wrong, printed as written.
    ({"RESIZE_ALLOWED_SIZES": "200x200,x200,3000x"}, ["RESIZE_ALLOWED_SIZES=200x200,3000x,x200: 3000x is wider than RESIZE_MAX_WIDTH=2048"]),
    ({"RESIZE_ALLOWED_SIZES": "200x200,900x900", "RESIZE_MAX_WIDTH": "500", "RESIZE_MAX_HEIGHT": "600"},
     ["RESIZE_ALLOWED_SIZES=200x200,900x900: 900x900 is wider than RESIZE_MAX_WIDTH=500",
      "RESIZE_ALLOWED_SIZES=200x200,900x900: 900x900 is taller than RESIZE_MAX_HEIGHT=600"]),
    ({"RESIZE_WORKERS": "abc"}, ["RESIZE_WORKERS='abc': must be a whole number"]),
    ({"RESIZE_THREADS": "-2"}, ["RESIZE_THREADS=-2: must be at least 1"]),
    ({"RESIZE_READY_TIMEOUT": "0"}, ["RESIZE_READY_TIMEOUT=0: must be a positive number of seconds"]),
    ({"RESIZE_STARTUP_CHECK": "sometimes"}, ["RESIZE_STARTUP_CHECK='sometimes': must be true or false"]),
    ({"RESIZE_SOURCE_PREFIXES": "/samples"}, ["RESIZE_SOURCE_PREFIXES=/samples: no S3 key starts with '/': write samples/"]),
    ({"RESIZE_SOURCE_PREFIXES": "public/,/samples/"},
     ["RESIZE_SOURCE_PREFIXES=public/,/samples/: no S3 key starts with '/': write public/,samples/"]),
])
def test_problem_lines_in_the_users_terms(env, expected):
    assert problems_of(env) == expected


@pytest.mark.parametrize("bind, message", [
    ("localhost", "needs a port: write localhost:8080"),
    ("0.0.0.0", "needs a port: write 0.0.0.0:8080"),
    ("[::1]", "needs a port: write [::1]:8080"),
    (":8080", "needs a host: write 0.0.0.0:8080"),
    ("localhost:http", "the port must be a number from 1 to 65535"),
    ("127.0.0.1:70000", "the port must be a number from 1 to 65535"),
    ("::1:8080", "an IPv6 address needs brackets: [::1]:8080"),
    ("unix:", "needs a socket path"),
])
def test_bad_bind_addresses(bind, message):
    (line,) = problems_of({"RESIZE_BIND": bind})
    assert line.startswith(f"RESIZE_BIND={shlex.quote(bind)}: {message}")


@pytest.mark.parametrize("bind", ["127.0.0.1:8080", "0.0.0.0:80", "localhost:8000", "[::]:8080", "[::1]:1",
                                  "unix:/run/resize-server.sock", "fd://3", "resize.internal:65535"])
def test_good_bind_addresses(bind):
    assert load({"RESIZE_BUCKET": "b", "RESIZE_BIND": bind}).bind == bind


def test_gunicorn_and_readiness_settings():
    s = load({"RESIZE_BUCKET": "b", "RESIZE_RENDER_CONCURRENCY": "3", "RESIZE_QUEUE_SIZE": "5"})
    assert (s.bind, s.workers, s.threads) == ("127.0.0.1:8080", None, None)
    # One process owning every render slot; threads follow the render settings by default.
    assert (s.gunicorn_workers, s.gunicorn_threads, s.graceful_timeout) == (1, 3 + 5 + 8, 30)
    assert (s.startup_check, s.ready_timeout) == (True, 3.0)
    s = load({"RESIZE_BUCKET": "b", "RESIZE_WORKERS": "4", "RESIZE_THREADS": "32", "RESIZE_BIND": "0.0.0.0:80",
              "RESIZE_STARTUP_CHECK": "false", "RESIZE_READY_TIMEOUT": "0.5"})
    assert (s.gunicorn_workers, s.gunicorn_threads, s.bind, s.startup_check, s.ready_timeout) == (4, 32, "0.0.0.0:80", False, 0.5)
    assert load({"RESIZE_BUCKET": "b", "RESIZE_WORKERS": ""}).workers is None  # empty: the default


@pytest.mark.parametrize("name, value, shown", [
    ("allowed_sizes", "*", "*"),
    ("allowed_sizes", "x200, 200x200,200x", "200x200,200x,x200"),
    ("upscale", "yes", "true"),
    ("s3_read_timeout", "10", "10"),
    ("s3_read_timeout", "2.5", "2.5"),
    ("workers", "3", "3"),
])
def test_values_display_as_written(name, value, shown):
    s = Settings.from_env({"RESIZE_BUCKET": "b", f"RESIZE_{name.upper()}": value})
    assert s.display(name) == shown


def test_no_python_internals_in_any_message():
    text = "\n".join(problems_of({"RESIZE_ALLOWED_SIZES": "50x50,x3000", "RESIZE_MAX_HEIGHT": "100",
                                  "RESIZE_UPSCALE": "maybe", "RESIZE_REDIS_URL": "http://x"}))
    for leak in ("frozenset", "None", "(50, 50)", "True", "False"):
        assert leak not in text
