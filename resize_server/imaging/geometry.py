"""Pure geometry: from a source size and the operations to the exact crop, resize, pad and load hint."""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from ..errors import InvalidOperation
from ..presets import Operations
from ..sniff import ImageHeader

# libjpeg decodes at 1/8, 1/4 or 1/2 scale for the price of the entropy decoding alone.
_DCT_DENOMINATORS = (8, 4, 2)


@dataclass(frozen=True)
class Plan:
    """What the engine does, in upright (post auto-orient) pixels unless noted."""

    resize: tuple[int, int]  # size after the resize pass
    crop: tuple[int, int, int, int] | None  # left, top, width, height after the resize (fill), or None
    load_hint: tuple[int, int] | None  # jpeg:size hint in the *stored* orientation, or None
    output: tuple[int, int]  # final width, height
    # What the plan was made from, so an engine can re-plan if the decoder
    # reads the orientation differently from the header sniffer.
    box: tuple[int | None, int | None] = (None, None)
    mode: str = "fit"
    upscale: bool = False
    source_crop: tuple[int, int, int, int] | None = None  # in upright source pixels, before everything else
    source_size: tuple[int, int] = (0, 0)  # the upright source size the plan was made for
    pad: tuple[int, int, int, int] | None = None  # canvas width, height and where the image goes (x, y)
    ops: Operations = Operations()
    dct_denominator: int = 1  # the shrink-on-load scale (1/n) this output alone would be decoded at


def plan(header: ImageHeader, width: int | None, height: int | None, mode: str = "fit", upscale: bool = False, *,
         ops: Operations | None = None) -> Plan:
    """The plan for fitting the (cropped, rotated) source into ``width`` x ``height``.

    ``width``/``height`` are the box (a missing side is unbounded); ``ops`` carries
    the other operations (crop, rotate, gravity); the box and mode given here win.
    """
    ops = ops or Operations(width=width, height=height, mode=mode)
    src_w, src_h = header.upright_size
    source_crop = None
    base_w, base_h = src_w, src_h
    if ops.crop is not None:
        x, y, w, h = ops.crop
        if x >= src_w or y >= src_h:
            raise InvalidOperation(f"crop starts outside the {src_w}x{src_h} image", parameter="crop")
        w, h = min(w, src_w - x), min(h, src_h - y)
        source_crop = (x, y, w, h)
        base_w, base_h = w, h
    if ops.rotate in (90, 270):
        base_w, base_h = base_h, base_w

    box_w = width if width is not None else float("inf")
    box_h = height if height is not None else float("inf")
    if mode == "fill":
        scale = max(box_w / base_w, box_h / base_h)
    else:  # fit, and pad (which fits, then pads)
        scale = min(box_w / base_w, box_h / base_h)
    if not upscale:
        scale = min(scale, 1.0)
    resize = (max(1, round(base_w * scale)), max(1, round(base_h * scale)))
    crop = None
    pad = None
    output = resize
    if mode == "fill":
        out_w, out_h = min(width, resize[0]), min(height, resize[1])
        if (out_w, out_h) != resize:
            crop = _gravity_crop(resize, (out_w, out_h), ops.gravity)
            output = (out_w, out_h)
    elif mode == "pad" and width is not None and height is not None:
        canvas = (max(width, resize[0]), max(height, resize[1]))
        if canvas != resize:
            pad = (canvas[0], canvas[1], (canvas[0] - resize[0]) // 2, (canvas[1] - resize[1]) // 2)
            output = canvas
    # The scale at which the *whole* source is needed, for the shrink-on-load hint: per axis,
    # since rounding can make them differ (2x6 filled into 1x4 needs all 6 rows of 6).
    fx, fy = resize[0] / base_w, resize[1] / base_h
    if ops.rotate in (90, 270):
        fx, fy = fy, fx
    needed = (src_w * fx, src_h * fy)
    return Plan(resize=resize, crop=crop, load_hint=_load_hint(header, needed), output=output,
                box=(width, height), mode=mode, upscale=upscale, source_crop=source_crop,
                source_size=(src_w, src_h), pad=pad, ops=ops, dct_denominator=dct_denominator(header, needed))


def _gravity_crop(size: tuple[int, int], out: tuple[int, int], gravity: str) -> tuple[int, int, int, int]:
    spare_w, spare_h = size[0] - out[0], size[1] - out[1]
    left = {"west": 0, "east": spare_w}.get(gravity, spare_w // 2)
    top = {"north": 0, "south": spare_h}.get(gravity, spare_h // 2)
    return left, top, out[0], out[1]


def dct_denominator(header: ImageHeader, needed: tuple[float, float]) -> int:
    """The largest JPEG shrink-on-load denominator that still decodes at least ``needed`` (upright) pixels."""
    if header.format != "jpeg":
        return 1
    src_w, src_h = header.upright_size
    for n in _DCT_DENOMINATORS:
        if ceil(src_w / n) >= needed[0] and ceil(src_h / n) >= needed[1]:
            return n
    return 1


def _load_hint(header: ImageHeader, needed: tuple[float, float]) -> tuple[int, int] | None:
    """The ``jpeg:size`` hint for decoding at the chosen DCT scale, in stored orientation.

    ImageMagick derives the scale from ``floor(source / hint)`` on the tighter
    side and libjpeg rounds that *up* to a supported scale, so a hint of exactly
    the 1/8 size can tip the decode to 1/4 (4243x2828 with hint 500x354 decoded
    1061x707).  ``source // n`` on both sides gives ``floor(source / hint) >= n``,
    i.e. exactly 1/n.  No hint when no scale of 1/2 or smaller keeps enough
    pixels: a hint not smaller than the source makes ImageMagick 6 decode at twice
    the size.
    """
    n = dct_denominator(header, needed)
    if n == 1:
        return None
    return max(1, header.width // n), max(1, header.height // n)


def shared_hint(header: ImageHeader, plans: list[Plan]) -> tuple[int, int] | None:
    """One decode for several outputs: the hint of the plan that needs the most pixels (None if any needs all)."""
    hints = [p.load_hint for p in plans]
    if not hints or any(h is None for h in hints):
        return None
    return max(hints)
