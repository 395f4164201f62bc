"""Shared fixtures: fake AWS credentials, moto S3, the Flask app and its client, test images."""

from __future__ import annotations

import os
from pathlib import Path

# Before ImageMagick loads: the tests run under the restrictive policy the server ships.
os.environ.setdefault("MAGICK_CONFIGURE_PATH", str(Path(__file__).resolve().parent.parent / "deploy"))

import pytest
from moto import mock_aws

from resize_server.config import Settings
from resize_server.http import create_app
from resize_server.storage.s3 import S3Storage, make_client

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BUCKET = "images"


PHOTOS = FIXTURES / "exif-orientation"  # 18 real photos, every EXIF orientation (MIT, LICENSE beside them)


def photo(name: str = "Landscape_1.jpg") -> bytes:
    """A real photograph from tests/fixtures/exif-orientation (in the repository, so a plain clone has it)."""
    return (PHOTOS / name).read_bytes()


@pytest.fixture(autouse=True)
def close_services(monkeypatch):
    """Every service a test builds is closed when the test ends, before its moto mock does: no read of a
    derived key may outlive the test and reach for the real AWS endpoint."""
    from resize_server import service as service_module

    real = service_module.build_service

    def tracked(*args, **kwargs):
        _BUILT.append(real(*args, **kwargs))
        return _BUILT[-1]

    monkeypatch.setattr(service_module, "build_service", tracked)
    yield
    close_built_services()


_BUILT: list = []


def close_built_services() -> None:
    while _BUILT:
        _BUILT.pop().close(timeout=10)


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch):
    """Fake credentials so nothing can reach real AWS, whatever the developer's environment holds."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


@pytest.fixture
def no_credentials(monkeypatch):
    """No credentials anywhere in boto3's chain, and no instance-metadata lookup (that address is not loopback).

    Not usable under moto's ``mock_aws``, which supplies credentials of its own.
    """
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def settings() -> Settings:
    return Settings(bucket=BUCKET)


@pytest.fixture
def s3(settings):
    """A boto3 client on moto's in-process S3, with the bucket created."""
    with mock_aws():
        client = make_client(settings)
        client.create_bucket(Bucket=BUCKET)
        yield client
        close_built_services()  # while moto still answers


@pytest.fixture
def storage(s3):
    return S3Storage(s3, BUCKET)


@pytest.fixture
def app(settings, storage):
    return create_app(settings, storage=storage)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def service(app):
    return app.extensions["resize"]


def png_with_alpha(width: int = 640, height: int = 480) -> bytes:
    """A PNG whose left half is opaque red and right half fully transparent."""
    from wand.color import Color
    from wand.image import Image

    with Image(width=width, height=height, background=Color("transparent")) as img:
        with Image(width=width // 2, height=height, background=Color("red")) as left:
            img.composite(left, 0, 0)
        img.format = "png"
        return img.make_blob()


def solid_image(width: int, height: int, color: str, fmt: str, page: tuple | None = None) -> bytes:
    """An encoded image of one colour; ``page`` sets a GIF's screen (width, height, x, y)."""
    from wand.color import Color
    from wand.image import Image

    with Image(width=width, height=height, background=Color(color)) as img:
        img.format = fmt
        if page is not None:
            img.page = page
        return img.make_blob()


def dimensions(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) of encoded image bytes, as ImageMagick decodes them."""
    from wand.image import Image

    with Image(blob=data) as img:
        return img.format, img.width, img.height


QUADRANTS = [(0, 0, .5, .5), (.5, 0, 1, .5), (0, .5, .5, 1), (.5, .5, 1, 1)]


def mean_rgb(data: bytes, box=(0.0, 0.0, 1.0, 1.0)) -> tuple[float, float, float]:
    """Average colour (0-255) of a region of encoded image bytes, given in fractions of the image size."""
    from wand.image import Image

    with Image(blob=data) as img:
        x0, y0, x1, y1 = box
        with img.clone() as region:
            region.crop(int(x0 * img.width), int(y0 * img.height), int(x1 * img.width), int(y1 * img.height))
            region.resize(1, 1)
            pixel = region[0, 0]
            return pixel.red * 255, pixel.green * 255, pixel.blue * 255


def distance(a, b) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5


def psnr(a: bytes, b: bytes) -> float:
    """Peak signal-to-noise ratio in dB between two encoded images of the same size (inf when identical)."""
    from wand.image import Image

    with Image(blob=a) as left, Image(blob=b) as right:
        assert (left.width, left.height) == (right.width, right.height)
        pa = left.export_pixels(channel_map="RGB", storage="char")
        pb = right.export_pixels(channel_map="RGB", storage="char")
    mse = sum((x - y) ** 2 for x, y in zip(pa, pb)) / len(pa)
    return float("inf") if mse == 0 else 10 * __import__("math").log10(255 ** 2 / mse)


def is_grayscale(data: bytes) -> bool:
    """Every pixel has equal red, green and blue (read back as 8-bit RGB)."""
    from wand.image import Image

    with Image(blob=data) as img:
        raw = img.export_pixels(channel_map="RGB", storage="char")
    return all(raw[i] == raw[i + 1] == raw[i + 2] for i in range(0, len(raw), 3))
