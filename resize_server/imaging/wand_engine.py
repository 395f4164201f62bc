"""The ImageMagick engine, through Wand.  The only module that imports ``wand``.

Every Wand exception is translated here into a ``ResizeError``; nothing above
this module ever sees a ``wand`` type.
"""

from __future__ import annotations

import ctypes
import functools
import ctypes.util
import logging
import warnings
from dataclasses import dataclass, replace

from wand.exceptions import (
    BaseWarning,
    MissingDelegateError,
    PolicyError,
    ResourceLimitError,
    ResourceLimitFatalError,
    WandException,
)
from wand.api import library as magick_wand
from wand.image import FILTER_TYPES, Image
from wand.resource import limits as magick_limits

from ..errors import CorruptImage, SourceTooLarge, UnsupportedFormat
from ..sniff import ImageHeader
from .base import Job, Rendered
from .geometry import Plan, plan as make_plan, shared_hint

log = logging.getLogger(__name__)
_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h

# The only coders used, for decoding and encoding.  The decoder is always named
# from our own magic-byte sniffing, never left to ImageMagick's guess.
_CODERS = {"jpeg": "jpeg", "png": "png", "gif": "gif", "webp": "webp", "avif": "avif"}
_ALPHA_FORMATS = ("png", "webp", "gif", "avif")  # pad is transparent there unless bg is given
_ORIENTATION = {"top_left": 1, "top_right": 2, "bottom_right": 3, "bottom_left": 4,
                "left_top": 5, "right_top": 6, "right_bottom": 7, "left_bottom": 8}


def configure_process(memory_bytes: int, max_pixels: int, threads: int = 1) -> None:
    """Process-wide set-up for rendering: ImageMagick's limits, warnings, the allocator.

    ImageMagick's own limits keep one request from taking the machine.

    ``map`` and ``disk`` are 0: the pixel cache never spills to temporary files,
    an image that does not fit in ``memory`` fails with a resource-limit error
    (413) instead.  ``time`` is deliberately left unset: in ImageMagick 6 it
    counts from process start and is *fatal*, so it would kill a long-running
    worker (measured: limit 2 s, a render after 3 s aborted the process).
    Request time is bounded by the render gate and gunicorn's worker timeout.
    """
    wanted = {"memory": memory_bytes, "map": 0, "disk": 0, "area": max_pixels, "thread": threads}
    for name, value in wanted.items():
        magick_limits[name] = value
    # A policy.xml limit is a ceiling that silently wins over what we ask for
    # (Debian caps memory at 256 MiB): say so rather than fail renders later.
    capped = {name: magick_limits[name] for name, value in wanted.items() if magick_limits[name] < value}
    if capped:
        log.warning("ImageMagick policy caps resource limits below the configured values; "
                    "set MAGICK_CONFIGURE_PATH to the deploy/ folder", extra={"fields": {"capped": capped}})
    # A truncated file decodes with a warning; we keep what was decoded (a
    # partial thumbnail beats an error), so the warning is not worth printing.
    warnings.filterwarnings("ignore", category=BaseWarning)
    _return_freed_memory_to_the_os()


def _return_freed_memory_to_the_os() -> None:
    """Keep glibc from hoarding freed pixel buffers.

    glibc raises its mmap threshold each time a large block is freed, after
    which pixel buffers come from the heap and fragment it: measured, a worker
    grew from 120 MB to 505 MB over 1400 renders and kept climbing.  A fixed
    1 MiB threshold keeps big buffers in mmap (returned on free): +0.8 MB over
    600 renders, for about 6% more CPU.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):  # not glibc
        pass



@functools.cache  # once per process: the AVIF probe costs ~150 ms
def encodable_formats() -> frozenset[str]:
    """The output formats this ImageMagick build and policy can write (AVIF needs libheif with an encoder)."""
    from wand.color import Color

    found = set()
    for fmt in ("jpeg", "png", "gif", "webp", "avif"):
        try:
            with Image(width=2, height=2, background=Color("red")) as img:
                img.format = fmt
                if img.make_blob():
                    found.add(fmt)
        except WandException:
            continue
    return frozenset(found)


@dataclass
class WandEngine:
    """Decode once, then run the fixed list of steps for each output (see ``_STEPS``)."""

    jpeg_quality: int = 85
    filter: str = "lanczos"
    # Box-average (``scale``) down to twice the target first only when the image is more than
    # this many times the target: measured (bench/, one thread), one lanczos pass straight from
    # the DCT-1/8 decode is cheaper at 2.65x (12 MP -> 200: 531x354 -> 200x133) and 0.3 dB
    # closer to a full-decode lanczos; the pre-scale is cheaper at 3.75x (24 MP -> 200).
    prescale_above: float = 3.0

    def render(self, data: bytes, header: ImageHeader, plan: Plan, output_format: str) -> Rendered:
        return self.render_many(data, header, [Job(plan, output_format)])[0]

    def render_many(self, data: bytes, header: ImageHeader, jobs: list[Job]) -> list[Rendered]:
        """Every output from one decode, at the shrink-on-load scale the largest output needs."""
        try:
            return self._render_many(data, header, jobs)
        except (ResourceLimitError, ResourceLimitFatalError) as exc:
            raise SourceTooLarge("image exceeds the server's ImageMagick resource limits", detail=str(exc)) from None
        except (PolicyError, MissingDelegateError) as exc:
            raise UnsupportedFormat(detail=str(exc)) from None
        except WandException as exc:
            raise CorruptImage(detail=str(exc)) from None

    def _render_many(self, data: bytes, header: ImageHeader, jobs: list[Job]) -> list[Rendered]:
        hint = shared_hint(header, [job.plan for job in jobs])
        with Image() as img:
            if hint is not None:
                img.options["jpeg:size"] = "%dx%d" % hint
            # "[0]" reads the first frame only: animated images become a still.
            img.read(blob=data, format=_CODERS[header.format] + "[0]")
            if img.width == 0 or img.height == 0:
                raise CorruptImage(detail="decoder returned an empty image")
            orientation = _ORIENTATION.get(img.orientation, 1)
            if orientation != header.orientation:
                # Malformed EXIF read differently by ImageMagick: follow the decoder.
                header = replace(header, orientation=orientation)
                jobs = [_replan(header, job) for job in jobs]
            if orientation != 1:
                # (ImageMagick's auto-orient of an upright image is a full copy of its pixels.)
                img.auto_orient()
            if hint is None and (img.width, img.height) != header.upright_size:
                # The decoded image is not what the header promised (a GIF's first
                # frame smaller than its screen): plan from the pixels, never stretch.
                header = ImageHeader(header.format, img.width, img.height)
                jobs = [_replan(header, job) for job in jobs]
            if img.colorspace == "cmyk":
                img.transform_colorspace("srgb")
            if len(jobs) == 1:
                return [self._finish(img, jobs[0])]
            decoded_at = min(job.plan.dct_denominator for job in jobs) if hint is not None else 1
            results = []
            for job in jobs:
                with img.clone() as work:
                    n = job.plan.dct_denominator
                    if n > decoded_at:
                        # Decoded larger than this output alone would have been: box-average
                        # down to what its own 1/n decode gives (the DCT scaling is a box
                        # filter too), so it matches the on-demand render of the same key.
                        src_w, src_h = job.plan.source_size
                        work.scale(-(-src_w // n), -(-src_h // n))
                    results.append(self._finish(work, job))
            return results

    def _finish(self, img: Image, job: Job) -> Rendered:
        for step in _STEPS:
            step(self, img, job)
        img.reset_coords()
        img.strip()
        if job.format == "jpeg" and img.alpha_channel:
            # JPEG has no alpha: composite onto white (the documented JPEG default), never let
            # the encoder drop the channel and show the colour under transparent pixels (black).
            from wand.color import Color

            img.background_color = Color("#" + job.plan.ops.bg[:6]) if job.plan.ops.bg else Color("white")
            img.alpha_channel = "remove"
        img.format = _CODERS[job.format]
        if job.format in ("jpeg", "webp", "avif"):
            img.compression_quality = job.plan.ops.quality or self.jpeg_quality
        blob = img.make_blob()
        return Rendered(data=blob, format=job.format, width=img.width, height=img.height)


def _replan(header: ImageHeader, job: Job) -> Job:
    old = job.plan
    return Job(make_plan(header, *old.box, old.mode, old.upscale, ops=old.ops), job.format)


# ---- the steps, in order: each does nothing unless its operation is asked for --------------

def _crop_source(engine: WandEngine, img: Image, job: Job) -> None:
    plan = job.plan
    if plan.source_crop is None:
        return
    # The decode may be scaled (shrink-on-load): map source pixels to decoded ones.
    fx = img.width / plan.source_size[0]
    fy = img.height / plan.source_size[1]
    x, y, w, h = plan.source_crop
    left, top = int(x * fx), int(y * fy)
    img.crop(left, top, width=max(1, min(img.width - left, round(w * fx))),
             height=max(1, min(img.height - top, round(h * fy))))
    img.reset_coords()


def _rotate_and_mirror(engine: WandEngine, img: Image, job: Job) -> None:
    plan = job.plan
    if plan.ops.rotate:
        img.rotate(plan.ops.rotate)
    if plan.ops.flip:
        img.flip()
    if plan.ops.flop:
        img.flop()


def _resize(engine: WandEngine, img: Image, job: Job) -> None:
    plan = job.plan
    target_w, target_h = plan.resize
    above = engine.prescale_above
    if img.width > above * target_w and img.height > above * target_h:
        # Box-average down to twice the target first (what shrink-on-load does
        # for JPEG; measured 0.74x the time for a 2 MP PNG -> 200), so the
        # lanczos pass works on few pixels.
        img.scale(2 * target_w, 2 * target_h)
    if (img.width, img.height) != plan.resize:
        _resize_one_frame(img, target_w, target_h, engine.filter)


def _resize_one_frame(img: Image, width: int, height: int, filter: str) -> None:
    """``img.resize(width, height, filter=filter)`` for a single-frame image.

    Wand's ``resize`` first asks ImageMagick for the image's MIME type, to
    coalesce a GIF animation: 0.35-0.45 ms of ``MagickToMime`` per call
    (measured, 12 MP -> 200: about 10% of the work after the decode).  The
    engine reads one frame only ("[0]"), so it calls MagickResizeImage itself.
    """
    if not magick_wand.MagickResizeImage(img.wand, width, height, FILTER_TYPES.index(filter), ctypes.c_double(1.0)):
        img.raise_exception()
    magick_wand.MagickSetSize(img.wand, width, height)


def _fill_crop(engine: WandEngine, img: Image, job: Job) -> None:
    plan = job.plan
    if plan.crop is not None:
        left, top, width, height = plan.crop
        img.crop(left, top, width=width, height=height)
        img.reset_coords()


def _pad(engine: WandEngine, img: Image, job: Job) -> None:
    plan = job.plan
    if plan.pad is None:
        return
    from wand.color import Color

    width, height, x, y = plan.pad
    if plan.ops.bg:
        colour = Color("#" + plan.ops.bg)
    elif job.format in _ALPHA_FORMATS:
        colour = Color("transparent")
    else:
        colour = Color("white")
    if colour.alpha < 1.0:
        img.alpha_channel = "set"
    img.background_color = colour
    img.extent(width, height, -x, -y)


def _grayscale(engine: WandEngine, img: Image, job: Job) -> None:
    plan = job.plan
    if plan.ops.grayscale:
        img.transform_colorspace("gray")


def _blur(engine: WandEngine, img: Image, job: Job) -> None:
    plan = job.plan
    if plan.ops.blur is not None:
        # Separable (two 1-D passes): a 2-D gaussian of sigma 20 over a 2048x2048 output took
        # over a minute; this is ~30x less.
        img.blur(radius=0, sigma=plan.ops.blur)


def _sharpen(engine: WandEngine, img: Image, job: Job) -> None:
    plan = job.plan
    if plan.ops.sharpen is not None:
        img.sharpen(radius=0, sigma=plan.ops.sharpen)


# Blur and sharpen run before the pad, on the image's own pixels: never on a padded canvas
# (a 1x1 source padded to 2048x2048 must not buy a blur of 4 megapixels).
_STEPS = (_crop_source, _rotate_and_mirror, _resize, _fill_crop, _grayscale, _blur, _sharpen, _pad)


# ---- The ImageMagick policy in force (for `resize-server doctor`) ----------

# MagickCore's PolicyDomain and PolicyRights enums (policy.h, the same in 6 and 7).
_CODER_POLICY_DOMAIN = 1
_READ_RIGHTS, _WRITE_RIGHTS = 1, 2
_REPORTED_LIMITS = ("memory", "map", "disk", "area", "width", "height")


def policy_report(coders: tuple[str, ...]) -> dict:
    """What the policy ImageMagick loaded allows: per coder (read, write), and the resource limits.

    Asked of ImageMagick itself (``IsRightsAuthorized``, the check its coders
    run), so it reflects every policy.xml it read and the MAGICK_* variables;
    nothing is decoded.  Call it before ``configure_process``, which lowers
    the limits to the server's settings.
    """
    from wand.api import libmagick
    from wand.version import MAGICK_VERSION

    authorized = libmagick.IsRightsAuthorized
    authorized.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
    authorized.restype = ctypes.c_int
    rights = {}
    for coder in coders:
        name = coder.upper().encode()
        rights[coder] = (bool(authorized(_CODER_POLICY_DOMAIN, _READ_RIGHTS, name)),
                         bool(authorized(_CODER_POLICY_DOMAIN, _WRITE_RIGHTS, name)))
    return {"version": MAGICK_VERSION, "coders": rights,
            "limits": {name: int(magick_limits[name]) for name in _REPORTED_LIMITS}}
