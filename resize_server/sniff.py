"""Pure image header reading: the format from magic bytes, dimensions and EXIF orientation.

This runs before any decoder sees the bytes, so that a file claiming to be a
JPEG but holding SVG or MVG never reaches ImageMagick, and a pixel bomb is
refused from its header.  It reads only what the headers declare; the decoder
remains the judge of whether the rest of the file is valid.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "jpeg", "png", "gif", "webp"
    width: int
    height: int
    orientation: int = 1  # EXIF orientation, 1..8
    frames: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height * self.frames

    @property
    def upright_size(self) -> tuple[int, int]:
        """Width and height after EXIF auto-orientation."""
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height


class HeaderError(ValueError):
    """The bytes are not a supported image, or its header is unreadable."""

    def __init__(self, message: str, *, unsupported: bool = False):
        super().__init__(message)
        self.unsupported = unsupported


def detect_format(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def read_header(data: bytes) -> ImageHeader:
    fmt = detect_format(data)
    if fmt is None:
        raise HeaderError("not a JPEG, PNG, GIF or WebP file", unsupported=True)
    try:
        return _READERS[fmt](data)
    except (struct.error, IndexError) as exc:
        raise HeaderError(f"truncated {fmt} header") from exc


def _png(data: bytes) -> ImageHeader:
    if data[12:16] != b"IHDR":
        raise HeaderError("PNG without IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return _checked(ImageHeader("png", width, height))


def _gif(data: bytes) -> ImageHeader:
    width, height = struct.unpack("<HH", data[6:10])
    frames, frame_width, frame_height = _gif_frames(data)
    # A frame may be larger than the logical screen (a 1x1 screen holding a
    # 30000x30000 frame): the checks use whichever is larger.
    return _checked(ImageHeader("gif", max(width, frame_width), max(height, frame_height), frames=frames))


def _gif_frames(data: bytes) -> tuple[int, int, int]:
    """Count image descriptors by walking the GIF block structure; also the largest frame size."""
    pos = 13
    flags = data[10]
    if flags & 0x80:
        pos += 3 << ((flags & 7) + 1)
    frames = max_w = max_h = 0
    while pos < len(data):
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image descriptor
            frames += 1
            frame_w, frame_h = struct.unpack("<HH", data[pos + 5 : pos + 9])
            max_w, max_h = max(max_w, frame_w), max(max_h, frame_h)
            local = data[pos + 9]
            pos += 10
            if local & 0x80:
                pos += 3 << ((local & 7) + 1)
            pos = _skip_sub_blocks(data, pos + 1)  # skip LZW minimum code size
        else:
            break
    return max(frames, 1), max_w, max_h


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while pos < len(data):
        size = data[pos]
        pos += 1 + size
        if size == 0:
            break
    return pos


def _webp(data: bytes) -> ImageHeader:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        width, height = width & 0x3FFF, height & 0x3FFF
    elif chunk == b"VP8L":
        bits = struct.unpack("<I", data[21:25])[0]
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
    else:
        raise HeaderError("unknown WebP chunk")
    return _checked(ImageHeader("webp", width, height))


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes) -> ImageHeader:
    pos = 2
    orientation = 1
    seen_exif = False
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise HeaderError("JPEG marker expected")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00" and not seen_exif:
            # The first Exif segment counts, as in ImageMagick.
            seen_exif = True
            orientation = _exif_orientation(segment[6:])
        elif marker in _SOF_MARKERS:
            height, width = struct.unpack(">HH", segment[1:5])
            return _checked(ImageHeader("jpeg", width, height, orientation=orientation))
        elif marker == 0xDA:
            break
        pos += 2 + length
    raise HeaderError("JPEG without a frame header")


def _exif_orientation(tiff: bytes) -> int:
    """Orientation (tag 0x0112) from IFD0; 1 when absent or absurd."""
    try:
        endian = {b"II": "<", b"MM": ">"}[tiff[:2]]
        ifd = struct.unpack(endian + "I", tiff[4:8])[0]
        count = struct.unpack(endian + "H", tiff[ifd : ifd + 2])[0]
        for i in range(min(count, 512)):
            entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
            tag, kind = struct.unpack(endian + "HH", entry[:4])
            if tag == 0x0112:
                # SHORT as the standard says, but LONG is seen in the wild and decoders honour it.
                value = struct.unpack(endian + ("I" if kind == 4 else "H"), entry[8:12] if kind == 4 else entry[8:10])[0]
                return value if 1 <= value <= 8 else 1
    except (KeyError, struct.error, IndexError):
        pass
    return 1


def _checked(header: ImageHeader) -> ImageHeader:
    if header.width <= 0 or header.height <= 0:
        raise HeaderError(f"{header.format} header declares an empty image")
    return header


_READERS = {"jpeg": _jpeg, "png": _png, "gif": _gif, "webp": _webp}


def is_complete(data: bytes, fmt: str) -> bool:
    """Whether the file reaches its end marker: False for an upload cut short.

    Decoders render what a truncated file holds (the top of the photo, grey
    below) with only a warning, so this is how the service tells a partial
    thumbnail, which it serves briefly but never stores, from a real one.
    """
    try:
        if fmt == "jpeg":
            # After the first scan starts, the entropy-coded data has every 0xFF
            # stuffed, so an 0xFFD9 there is the real end of image (an EXIF
            # thumbnail's own EOI lies before the scan).  Searched from the end, where
            # it is: a forward find over a 3.6 MB file cost 3.2 ms of CPU per miss.
            return data.rfind(b"\xff\xd9", _jpeg_scan_start(data)) != -1
        if fmt == "png":
            return data.find(b"IEND", max(0, len(data) - 4096)) != -1
        if fmt == "gif":
            return data.rstrip(b"\x00").endswith(b";")
        if fmt == "webp":
            return struct.unpack("<I", data[4:8])[0] + 8 <= len(data)
    except (struct.error, IndexError):
        return False
    return True


def _jpeg_scan_start(data: bytes) -> int:
    pos = 2
    while pos + 4 <= len(data):
        marker = data[pos + 1]
        if data[pos] != 0xFF:
            break
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker == 0xDA:
            return pos
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return len(data)
