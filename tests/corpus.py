"""Generators for the hostile-input corpus, built by the tests themselves.

Everything here is produced from the real photographs in tests/fixtures/exif-orientation
(through ``tests.conftest.photo``), with Wand limited to the coders the
server's ImageMagick policy allows (JPEG, PNG, GIF, WebP), or from raw bytes
and ``struct``.  No pseudo-coders (``xc:``, ``gradient:``) and no files on disk.

Each generator returns the bytes of one file; ``CASES`` maps a case name to
its generator, the extension the file claims, and the status the server must
answer with.  Helpers at the bottom read JPEG/PNG structure back so tests can
check that a generated input really is what it claims (CMYK, progressive,
16-bit, palette with tRNS...).
"""

from __future__ import annotations

import ctypes
import os
import random
import struct
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator

from wand.api import library
from wand.color import Color
from wand.image import INTERLACE_TYPES, Image

from tests.conftest import photo, png_with_alpha

SOI = b"\xff\xd8"
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


# ---- reading structure back ------------------------------------------------


def jpeg_segments(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(marker, offset, payload) for each segment up to and including SOS."""
    pos = 2
    while pos + 4 <= len(data):
        assert data[pos] == 0xFF, f"marker expected at {pos}"
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            pos += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        yield marker, pos, data[pos + 4 : pos + 2 + length]
        if marker == 0xDA:
            return
        pos += 2 + length


@dataclass(frozen=True)
class Sof:
    marker: int  # 0xC0 baseline, 0xC2 progressive, ...
    width: int
    height: int
    components: int  # 1 gray, 3 YCbCr/RGB, 4 CMYK/YCCK

    @property
    def progressive(self) -> bool:
        return self.marker in (0xC2, 0xC6, 0xCA, 0xCE)


def jpeg_sof(data: bytes) -> Sof:
    for marker, _pos, payload in jpeg_segments(data):
        if marker in _SOF_MARKERS:
            height, width = struct.unpack(">HH", payload[1:5])
            return Sof(marker, width, height, payload[5])
    raise ValueError("no SOF")


def _sof_offset(data: bytes) -> int:
    for marker, pos, _payload in jpeg_segments(data):
        if marker in _SOF_MARKERS:
            return pos
    raise ValueError("no SOF")


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        kind = data[pos + 4 : pos + 8]
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def png_ihdr(data: bytes) -> dict:
    kind, body = png_chunks(data)[0]
    assert kind == b"IHDR"
    width, height, depth, color_type = struct.unpack(">IIBB", body[:10])
    return {"width": width, "height": height, "bit_depth": depth, "color_type": color_type}


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with a valid CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def gif_frame_count(data: bytes) -> int:
    with Image(blob=data, format="gif") as img:
        return len(img.sequence)


# ---- real images in every shape the server accepts -----------------------


def landscape() -> bytes:
    """The 1800x1200 photograph, stored upright (EXIF orientation 1)."""
    return photo("Landscape_1.jpg")


def _encode(data: bytes, fmt: str, edit: Callable[[Image], None] | None = None) -> bytes:
    with Image(blob=data) as img:
        if edit is not None:
            edit(img)
        img.format = fmt
        return img.make_blob()


@lru_cache(maxsize=None)
def cmyk_jpeg() -> bytes:
    return _encode(landscape(), "jpeg", lambda img: img.transform_colorspace("cmyk"))


@lru_cache(maxsize=None)
def png16() -> bytes:
    def edit(img: Image) -> None:
        img.resize(600, 400)
        img.depth = 16

    return _encode(landscape(), "png", edit)


@lru_cache(maxsize=None)
def grayscale_jpeg() -> bytes:
    return _encode(landscape(), "jpeg", lambda img: setattr(img, "type", "grayscale"))


@lru_cache(maxsize=None)
def progressive_jpeg() -> bytes:
    def edit(img: Image) -> None:
        # Wand's interlace_scheme sets the image's scheme; the JPEG writer reads the wand's.
        library.MagickSetInterlaceScheme(img.wand, INTERLACE_TYPES.index("plane"))

    return _encode(landscape(), "jpeg", edit)


@lru_cache(maxsize=None)
def palette_png() -> bytes:
    """640x480 palette PNG (colour type 3 with tRNS): left half opaque red, right half transparent."""
    def edit(img: Image) -> None:
        img.type = "palettematte"

    return _encode(png_with_alpha(640, 480), "png8", edit)


GIF_COLOURS = ("red", "lime", "blue")


def animated_gif(width: int = 400, height: int = 300, colours: tuple[str, ...] = GIF_COLOURS) -> bytes:
    """One frame per colour, each a solid colour filling the whole screen."""
    with Image() as gif:
        for colour in colours:
            with Image(width=width, height=height, background=Color(colour)) as frame:
                gif.sequence.append(frame)
        for frame in gif.sequence:
            frame.delay = 10
        gif.format = "gif"
        return gif.make_blob()


@lru_cache(maxsize=None)
def webp() -> bytes:
    return _encode(landscape(), "webp")


# ---- broken files ------------------------------------------------------------


def truncated_jpeg(fraction: float = 0.6) -> bytes:
    data = landscape()
    return data[: int(len(data) * fraction)]


def jpeg_cut_in_headers() -> bytes:
    """Cut inside the quantisation tables, before the frame header (SOF)."""
    data = landscape()
    cut = _sof_offset(data) - 40
    assert cut > 100
    return data[:cut]


def jpeg_cut_after_sof() -> bytes:
    """The frame header is whole (so the sniffer passes it) but there is no scan at all."""
    data = landscape()
    sof = _sof_offset(data)
    length = struct.unpack(">H", data[sof + 2 : sof + 4])[0]
    return data[: sof + 2 + length]


def jpeg_magic_then_garbage() -> bytes:
    rng = random.Random(1234)
    return b"\xff\xd8\xff" + bytes(rng.randrange(256) for _ in range(4096))


def png_header_then_garbage() -> bytes:
    """A valid IHDR for a modest image followed by random bytes instead of IDAT."""
    rng = random.Random(99)
    ihdr = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + bytes(rng.randrange(256) for _ in range(2048))


def gif_header_only() -> bytes:
    """Header and logical screen descriptor for 64x64, then the trailer: no image at all."""
    return b"GIF89a" + struct.pack("<HHBBB", 64, 64, 0, 0, 0) + b";"


# ---- decompression bombs ---------------------------------------------------


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A few dozen bytes declaring ``width`` x ``height`` (valid CRCs, one tiny IDAT)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def _gif_frame(left: int, top: int, width: int, height: int) -> bytes:
    # Image descriptor, no local colour table; LZW min code size 2, one data
    # block holding <clear><end> (3-bit codes 4 and 5 packed LSB first).
    return b"\x2c" + struct.pack("<HHHHB", left, top, width, height, 0) + b"\x02\x01\x2c\x00"


def gif_bomb(width: int = 65535, height: int = 65535) -> bytes:
    """Logical screen and its one frame declaring ``width`` x ``height``."""
    palette = b"\x00\x00\x00\xff\xff\xff"
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # global table of 2 colours
    return b"GIF89a" + screen + palette + _gif_frame(0, 0, width, height) + b";"


def gif_frame_bomb(frame: int = 30000) -> bytes:
    """A 16x16 logical screen whose one image descriptor declares a ``frame`` x ``frame`` image.

    The server's header check reads the logical screen; ImageMagick sizes each
    frame from its image descriptor.
    """
    palette = b"\x00\x00\x00\xff\xff\xff"
    screen = struct.pack("<HHBBB", 16, 16, 0x80, 0, 0)
    return b"GIF89a" + screen + palette + _gif_frame(0, 0, frame, frame) + b";"


def jpeg_bomb(width: int = 65000, height: int = 65000) -> bytes:
    """The real photograph with its frame header rewritten to declare ``width`` x ``height``."""
    data = bytearray(landscape())
    sof = _sof_offset(bytes(data))
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


# ---- not images at all (ImageTragick and friends) ------------------------------


MVG = (b"push graphic-context\nviewbox 0 0 640 480\n"
       b"fill 'url(https://127.0.0.1/x.jpg\"|ls \"-la)'\npop graphic-context\n")
SVG = (b'<?xml version="1.0" standalone="no"?>\n'
       b'<svg width="640px" height="480px" xmlns="http://www.w3.org/2000/svg" '
       b'xmlns:xlink="http://www.w3.org/1999/xlink">\n'
       b'<image xlink:href="https://127.0.0.1/x.jpg&quot;|ls &quot;-la" x="0" y="0" height="640px" width="480px"/>\n'
       b"</svg>\n")
MSL = (b'<?xml version="1.0" encoding="UTF-8"?>\n<image>\n<read filename="/etc/passwd" />\n'
       b'<write filename="/tmp/pwned.jpg" />\n</image>\n')
TEXT_FILE = b"text:/etc/passwd\n"
EPHEMERAL = b"push graphic-context\nviewbox 0 0 640 480\nimage over 0,0 0,0 'ephemeral:/tmp/x.jpg'\npop graphic-context\n"
POSTSCRIPT = b"%!PS-Adobe-3.0\n%%BoundingBox: 0 0 100 100\n/Times findfont 12 scalefont setfont\n(x) show showpage\n"
PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
       b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
HTML = b"<!DOCTYPE html>\n<html><body><img src=x onerror=alert(1)></body></html>\n"
PLAIN_TEXT = b"This is not a PNG, just some words.\n"


# ---- EXIF with absurd values -------------------------------------------------


def _tiff_ifd(entries: list[tuple[int, int, int, bytes]], *, ifd_offset: int = 8, count: int | None = None) -> bytes:
    """A little-endian TIFF header + IFD0 with (tag, type, count, 4-byte value) entries."""
    body = b"II*\x00" + struct.pack("<I", ifd_offset)
    n = len(entries) if count is None else count
    body += struct.pack("<H", n)
    for tag, typ, cnt, value in entries:
        body += struct.pack("<HHI", tag, typ, cnt) + value
    return body + struct.pack("<I", 0)


def _short(value: int) -> bytes:
    return struct.pack("<HH", value, 0)


def with_exif(tiff: bytes, data: bytes | None = None) -> bytes:
    """``data`` (default: the landscape photo) with every APP1/Exif replaced by one holding ``tiff``."""
    data = landscape() if data is None else data
    out = bytearray(SOI)
    body_start = None
    for marker, pos, payload in jpeg_segments(data):
        if marker == 0xE1 and payload[:6] == b"Exif\x00\x00":
            continue
        if marker == 0xDA:
            body_start = pos
            break
        out += data[pos : pos + 4 + len(payload)]
    assert body_start is not None
    segment = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment
    return bytes(out[:2] + app1 + out[2:]) + data[body_start:]


def exif_orientation_999() -> bytes:
    return with_exif(_tiff_ifd([(0x0112, 3, 1, _short(999))]))


def exif_ifd_past_end() -> bytes:
    return with_exif(_tiff_ifd([(0x0112, 3, 1, _short(6))], ifd_offset=0x7FFFFFF0))


def exif_count_65535() -> bytes:
    """IFD0 claims 65535 entries but holds two: a Make whose 65535 bytes lie far past the end, and orientation 999."""
    return with_exif(_tiff_ifd([(0x010F, 2, 0xFFFF, struct.pack("<I", 0xFFFFFF00)),
                                (0x0112, 3, 0xFFFF, _short(999))], count=65535))


def exif_garbage() -> bytes:
    rng = random.Random(7)
    return with_exif(b"II*\x00" + bytes(rng.randrange(256) for _ in range(300)))


# ---- oversize bodies -----------------------------------------------------------


def padded_jpeg(size: int) -> bytes:
    """The real photo followed by zero bytes after its EOI, ``size`` bytes in all."""
    data = landscape()
    assert size > len(data)
    return data + b"\x00" * (size - len(data))


# ---- the temp dir ----------------------------------------------------------------


def magick_temp_file() -> str:
    """Create a temporary file the way ImageMagick's coders do (``magick-XXXXXXXX``); returns its path."""
    acquire = library.AcquireUniqueFileResource
    acquire.argtypes = [ctypes.c_char_p]
    acquire.restype = ctypes.c_int
    buf = ctypes.create_string_buffer(4096)
    fd = acquire(buf)
    assert fd >= 0
    os.close(fd)
    return buf.value.decode()


def release_magick_temp_file(path: str) -> None:
    release = library.RelinquishUniqueFileResource
    release.argtypes = [ctypes.c_char_p]
    release.restype = ctypes.c_int
    release(path.encode())


@contextmanager
def private_tempdir(monkeypatch, path) -> Iterator[str]:
    """Point Python's tempfile and ImageMagick (MAGICK_TEMPORARY_PATH, TMPDIR) at ``path``.

    ImageMagick reads these variables each time it makes a temporary file, so
    anything it (or the app) leaves behind lands here, where no other process
    on the machine writes; the shared /tmp would make a before/after listing flaky.
    """
    import tempfile

    path = str(path)
    os.makedirs(path, exist_ok=True)
    monkeypatch.setenv("TMPDIR", path)
    monkeypatch.setenv("MAGICK_TEMPORARY_PATH", path)
    monkeypatch.setattr(tempfile, "tempdir", path)
    assert tempfile.gettempdir() == path
    yield path


def listing(path: str) -> set[str]:
    return set(os.listdir(path))
