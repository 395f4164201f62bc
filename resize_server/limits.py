"""Checks that run before work is spent: the size policy and the source limits.

Pure: no I/O, no image library.  Each check raises a typed error whose
public message names the limit that was hit.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import CorruptImage, InvalidSize, SizeNotAllowed, SourceTooLarge, UnsupportedFormat
from .options import RenderRequest
from .sniff import HeaderError, ImageHeader, read_header

Size = tuple[int | None, int | None]
MAX_SIDE = 32000  # the width/height limit in deploy/policy.xml; past it ImageMagick refuses to decode


def parse_sizes(text: str) -> frozenset[Size] | None:
    """Parse ``"50x50,200x200,400x,x150"``; ``"*"`` means any size within the maxima."""
    text = text.strip()
    if text == "*":
        return None
    sizes = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        w, sep, h = item.partition("x")
        if not sep or not (w or h) or not all(p == "" or (p.isdigit() and int(p) > 0) for p in (w, h)):
            raise ValueError(f"{item!r} is not WxH, Wx or xH with positive whole numbers")
        sizes.add((int(w) if w else None, int(h) if h else None))
    if not sizes:
        raise ValueError("no sizes listed (use '*' to allow any size within the maxima)")
    return frozenset(sizes)


def format_sizes(sizes: frozenset[Size] | None) -> str:
    if sizes is None:
        return "*"
    return ",".join(f"{w or ''}x{h or ''}" for w, h in sorted(sizes, key=lambda s: (s[0] or 0, s[1] or 0)))


@dataclass(frozen=True)
class SizePolicy:
    allowed: frozenset[Size] | None
    max_width: int
    max_height: int

    def allows(self, width: int | None, height: int | None) -> bool:
        """Whether the policy would render this size (used to spot derived names)."""
        if (width or 0) > self.max_width or (height or 0) > self.max_height:
            return False
        return self.allowed is None or (width, height) in self.allowed

    def check(self, request: RenderRequest) -> None:
        if request.width is not None and request.width > self.max_width:
            raise InvalidSize(f"width {request.width} exceeds RESIZE_MAX_WIDTH={self.max_width}")
        if request.height is not None and request.height > self.max_height:
            raise InvalidSize(f"height {request.height} exceeds RESIZE_MAX_HEIGHT={self.max_height}")
        if self.allowed is not None and (request.width, request.height) not in self.allowed:
            raise SizeNotAllowed(f"size {request.size_label} is not in RESIZE_ALLOWED_SIZES")


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
