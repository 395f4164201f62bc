"""Checks that run before work is spent on a source: bytes, pixels, sides, format.

(What may be *rendered* -- sizes and presets -- is ``presets.Catalog``.)

Pure: no I/O, no image library.  Each check raises a typed error whose
public message names the limit that was hit.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import CorruptImage, SourceTooLarge, UnsupportedFormat
from .sniff import HeaderError, ImageHeader, read_header

MAX_SIDE = 32000  # the width/height limit in deploy/policy.xml; past it ImageMagick refuses to decode


@dataclass(frozen=True)
class SourceLimits:
    max_bytes: int
    max_pixels: int

    def check_length(self, length: int | None) -> None:
        if length is not None and length > self.max_bytes:
            raise SourceTooLarge(
                f"source is larger than RESIZE_MAX_SOURCE_BYTES={self.max_bytes}",
                detail=f"source declares {length} bytes",
            )

    def inspect(self, data: bytes) -> ImageHeader:
        """Identify the source from its bytes and check it against the limits."""
        self.check_length(len(data))
        if not data:
            raise UnsupportedFormat("source is empty")
        try:
            header = read_header(data)
        except HeaderError as exc:
            if exc.unsupported:
                raise UnsupportedFormat("source is not a JPEG, PNG, GIF or WebP image") from None
            raise CorruptImage(detail=str(exc)) from None
        if header.pixels > self.max_pixels:
            raise SourceTooLarge(
                f"source has more pixels than RESIZE_MAX_SOURCE_PIXELS={self.max_pixels}",
                detail=f"{header.width}x{header.height}x{header.frames} frames",
            )
        if header.width > MAX_SIDE or header.height > MAX_SIDE:
            raise SourceTooLarge(
                f"source is wider or taller than {MAX_SIDE} pixels",
                detail=f"{header.width}x{header.height}",
            )
        return header
