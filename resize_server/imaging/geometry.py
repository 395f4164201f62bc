"""Pure geometry: from a source size and a request to the exact resize, crop and load hint."""

from __future__ import annotations

from dataclasses import dataclass

from ..sniff import ImageHeader


@dataclass(frozen=True)
class Plan:
    """What the engine does, in upright (post auto-orient) pixels unless noted."""

    resize: tuple[int, int]  # size after the resize pass
    crop: tuple[int, int, int, int] | None  # left, top, width, height after the resize, or None
    load_hint: tuple[int, int] | None  # jpeg:size hint in the *stored* orientation, or None
    output: tuple[int, int]  # final width, height
    # What the plan was made from, so an engine can re-plan if the decoder
    # reads the orientation differently from the header sniffer.
    box: tuple[int | None, int | None] = (None, None)
    mode: str = "fit"
    upscale: bool = False


def plan(header: ImageHeader, width: int | None, height: int | None, mode: str, upscale: bool) -> Plan:
    src_w, src_h = header.upright_size
    box_w = width if width is not None else float("inf")
    box_h = height if height is not None else float("inf")
    if mode == "fill":
        scale = max(box_w / src_w, box_h / src_h)
    else:
        scale = min(box_w / src_w, box_h / src_h)
    if not upscale:
        scale = min(scale, 1.0)
    resize = (max(1, round(src_w * scale)), max(1, round(src_h * scale)))
    crop = None
    output = resize
    if mode == "fill":
        out_w, out_h = min(width, resize[0]), min(height, resize[1])
        if (out_w, out_h) != resize:
            crop = ((resize[0] - out_w) // 2, (resize[1] - out_h) // 2, out_w, out_h)
            output = (out_w, out_h)
    return Plan(resize=resize, crop=crop, load_hint=_load_hint(header, resize), output=output,
                box=(width, height), mode=mode, upscale=upscale)


def _load_hint(header: ImageHeader, resize: tuple[int, int]) -> tuple[int, int] | None:
    """The JPEG shrink-on-load hint: the size the image will be resized to, in stored orientation.

    ImageMagick picks the DCT scale from the tighter dimension of the hint, so
    the hint is the fitted size rather than the box; and a hint that is not
    strictly smaller than the source makes ImageMagick 6 decode at twice the
    size, so none is given then.
    """
    if header.format != "jpeg":
        return None
    hint_w, hint_h = resize
    if header.orientation in (5, 6, 7, 8):
        hint_w, hint_h = hint_h, hint_w
    if hint_w * 2 > header.width or hint_h * 2 > header.height:
        # No DCT scale of 1/2 or smaller would keep the image at least this large.
        return None
    return hint_w, hint_h
