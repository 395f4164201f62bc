"""Pure: what may be rendered, and how.  Operations, presets and the catalog that polices them.

``Operations`` is the one description of a rendering that every way in shares:
the derived-key parser (``earth_200x200_fill.jpg``), named presets
(``RESIZE_PRESETS=thumb=50x50,cover=1200x630:fill``) and the query parameters of
``POST /transform`` all produce it, and the engine runs it as a fixed, ordered
list of steps.

``Catalog`` is the one policy: the named presets plus the allowed ``WxH`` sizes
(``RESIZE_ALLOWED_SIZES``), which are simply anonymous presets reachable by a
size label.  ``RESIZE_PRESETS_ONLY=true`` turns the anonymous ones off.

No I/O, and no imports of boto3, Wand or Flask.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Mapping

from .errors import InvalidOperation, InvalidSize, SizeNotAllowed

Size = tuple[int | None, int | None]

MODES = ("fit", "fill", "pad")
GRAVITIES = ("center", "north", "south", "east", "west")
ROTATIONS = (0, 90, 180, 270)
# Output formats by name; "jpg" is accepted as a spelling of "jpeg".
FORMATS = ("jpeg", "png", "webp", "gif", "avif")
FORMAT_ALIASES = {"jpg": "jpeg"}
EXTENSION_FOR_FORMAT = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif", "avif": "avif"}
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp",
                 "avif": "image/avif"}
# Bounded so that a request cannot buy unbounded CPU: blur cost grows with sigma squared.
BLUR_RANGE = (0.3, 20.0)
SHARPEN_RANGE = (0.3, 5.0)

_HEX_COLOUR = re.compile(r"^(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")
_NUMBER = re.compile(r"^[1-9][0-9]{0,5}$")
_PRESET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,31}$")
# A name is "shaped like a size" if it has an x next to a digit, or is a mode word:
# "200x", "x2", "1x1" -- so "earth_<name>.jpg" can never be read two ways.
_SIZE_SHAPED = re.compile(r"[0-9]x|x[0-9]|^[0-9]", re.IGNORECASE)


@dataclass(frozen=True)
class Operations:
    """A rendering: the steps run in the order of the fields below (crop first, encode last)."""

    width: int | None = None
    height: int | None = None
    mode: str = "fit"  # fit inside the box | fill (cover, then crop) | pad (fit, then pad to the box)
    gravity: str = "center"  # where fill crops from
    bg: str | None = None  # pad colour as hex RRGGBB[AA]; None: transparent where the format has alpha, else white
    crop: tuple[int, int, int, int] | None = None  # x, y, w, h in upright source pixels, before resizing
    rotate: int = 0
    flip: bool = False  # top to bottom
    flop: bool = False  # left to right
    grayscale: bool = False
    blur: float | None = None
    sharpen: float | None = None
    quality: int | None = None
    format: str | None = None  # None: the format the key's extension (or the source) names

    @property
    def size_label(self) -> str:
        return f"{self.width or ''}x{self.height or ''}"

    def describe(self) -> str:
        """A compact, stable text of the operations (stored as metadata, shown in logs)."""
        parts = [self.size_label, self.mode]
        if self.mode == "fill" and self.gravity != "center":
            parts.append(f"gravity={self.gravity}")
        if self.bg:
            parts.append(f"bg={self.bg}")
        if self.crop:
            parts.append("crop=" + ",".join(map(str, self.crop)))
        if self.rotate:
            parts.append(f"rotate={self.rotate}")
        parts += [name for name in ("flip", "flop", "grayscale") if getattr(self, name)]
        for name in ("blur", "sharpen", "quality"):
            if getattr(self, name) is not None:
                parts.append(f"{name}={getattr(self, name):g}")
        if self.format:
            parts.append(f"format={self.format}")
        return ":".join(parts)


# ---- parsing operations --------------------------------------------------------

_FLAGS = ("flip", "flop", "grayscale")
_VALUED = ("w", "h", "width", "height", "mode", "gravity", "bg", "crop", "rotate", "blur", "sharpen", "quality",
           "format")
PARAMETERS = _VALUED + _FLAGS + MODES  # every name an operation may be spelled with


def parse_operations(params: Mapping[str, str]) -> Operations:
    """Operations from named parameters (``{"w": "400", "grayscale": "1"}``), or ``InvalidOperation``.

    Every error names the parameter.  A mode may be given as ``mode=fill`` or as
    a bare flag ``fill``; flags take ``1/true/yes/on`` (or nothing) and ``0/false/no/off``.
    """
    values: dict = {}
    seen: set[str] = set()
    for raw_name, raw_value in params.items():
        name = raw_name.strip().lower()
        canonical = {"width": "w", "height": "h"}.get(name, name)
        if canonical in seen:
            raise InvalidOperation(f"{canonical} given more than once", parameter=canonical)
        seen.add(canonical)
        value = raw_value.strip() if isinstance(raw_value, str) else raw_value
        if name in ("w", "width"):
            values["width"] = _side(value, name)
        elif name in ("h", "height"):
            values["height"] = _side(value, name)
        elif name == "mode":
            values["mode"] = _choice(value, MODES, name)
        elif name in MODES:
            if _flag(value, name):
                if values.get("mode", name) != name:
                    raise InvalidOperation(f"{values['mode']} and {name} cannot both be set", parameter=name)
                values["mode"] = name
        elif name == "gravity":
            values["gravity"] = _choice(value.lower().replace("centre", "center"), GRAVITIES, name)
        elif name == "bg":
            if not _HEX_COLOUR.match(value.removeprefix("#")):
                raise InvalidOperation("bg must be a hex colour (RGB, RRGGBB or RRGGBBAA)", parameter="bg")
            values["bg"] = value.removeprefix("#").lower()
        elif name == "crop":
            values["crop"] = _crop(value)
        elif name == "rotate":
            try:
                rotate = int(value)
            except ValueError:
                rotate = -1
            if rotate not in ROTATIONS:
                raise InvalidOperation("rotate must be 0, 90, 180 or 270", parameter="rotate")
            values["rotate"] = rotate
        elif name in _FLAGS:
            values[name] = _flag(value, name)
        elif name == "blur":
            values["blur"] = _bounded(value, BLUR_RANGE, name)
        elif name == "sharpen":
            values["sharpen"] = _bounded(value, SHARPEN_RANGE, name)
        elif name == "quality":
            if not (re.fullmatch(r"[0-9]{1,3}", value) and 1 <= int(value) <= 100):
                raise InvalidOperation("quality must be a whole number from 1 to 100", parameter="quality")
            values["quality"] = int(value)
        elif name == "format":
            fmt = FORMAT_ALIASES.get(value.lower(), value.lower())
            if fmt not in FORMATS:
                raise InvalidOperation(f"format must be one of {', '.join(FORMATS)}", parameter="format")
            values["format"] = fmt
        else:
            raise InvalidOperation(f"unknown parameter {raw_name[:32]!r}", parameter=raw_name[:32])
    return validated(Operations(**values))


def validated(ops: Operations) -> Operations:
    """Cross-field rules, shared by every way operations are written."""
    if ops.mode in ("fill", "pad") and (ops.width is None or ops.height is None):
        raise InvalidSize(f"{ops.mode} needs both a width and a height", parameter="h" if ops.width else "w")
    if ops.bg is not None and ops.mode != "pad":
        raise InvalidOperation("bg only applies to pad", parameter="bg")
    if ops.gravity != "center" and ops.mode != "fill":
        raise InvalidOperation("gravity only applies to fill", parameter="gravity")
    return ops


def _side(value: str, name: str) -> int:
    if not _NUMBER.match(value):  # at most six digits: bounded before any policy looks
        raise InvalidSize(f"{name} must be a positive whole number without leading zeros, got {value[:16]!r}",
                          parameter={"width": "w", "height": "h"}.get(name, name))
    return int(value)


def _choice(value: str, choices: tuple, name: str) -> str:
    if value not in choices:
        raise InvalidOperation(f"{name} must be one of {', '.join(choices)}", parameter=name)
    return value


def _flag(value: str, name: str) -> bool:
    lowered = (value or "").lower()
    if lowered in ("", "1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise InvalidOperation(f"{name} must be 1 or 0", parameter=name)


def _bounded(value: str, bounds: tuple[float, float], name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not bounds[0] <= number <= bounds[1]:  # also false for nan
        raise InvalidOperation(f"{name} must be a number from {bounds[0]:g} to {bounds[1]:g}", parameter=name)
    return number


def _crop(value: str) -> tuple[int, int, int, int]:
    parts = re.split(r"[,x:]", value)
    if len(parts) != 4 or not all(re.fullmatch(r"[0-9]{1,6}", p) for p in parts):
        raise InvalidOperation("crop must be x,y,w,h in source pixels", parameter="crop")
    x, y, w, h = map(int, parts)
    if w == 0 or h == 0:
        raise InvalidOperation("crop width and height must be positive", parameter="crop")
    return x, y, w, h


# ---- presets -------------------------------------------------------------------

def parse_preset_spec(spec: str) -> Operations:
    """``200x200``, ``1200x630:fill``, ``200x200,grayscale``, ``400x400:pad:bg=ffffff``."""
    params: dict[str, str] = {}
    tokens = [t.strip() for t in re.split(r"[:,]", _protect_crop(spec)) if t.strip()]
    if not tokens:
        raise InvalidOperation("empty preset", parameter="preset")
    for token in tokens:
        name, sep, value = token.partition("=")
        if not sep and "x" in token.lower() and re.fullmatch(r"[0-9]*x[0-9]*", token, re.IGNORECASE):
            w, _, h = token.lower().partition("x")
            if not (w or h):
                raise InvalidSize("a size needs a width or a height")
            if w:
                params["w"] = w
            if h:
                params["h"] = h
            continue
        params[name] = value.replace(";", ",") if sep else ""
    return parse_operations(params)


def _protect_crop(spec: str) -> str:
    # crop=x,y,w,h holds commas of its own: keep them out of the token split.
    return re.sub(r"crop=(\d+),(\d+),(\d+),(\d+)", r"crop=\1;\2;\3;\4", spec)


def parse_presets(text: str) -> dict[str, Operations]:
    """``thumb=50x50,small=200x200,cover=1200x630:fill,bw=200x200,grayscale``.

    Commas separate presets; a comma followed by something that is not
    ``<name>=`` for a new preset (``grayscale``, ``bg=ffffff``) continues the
    previous preset.  Names: a letter, then letters, digits or ``-`` (32 at most),
    never shaped like a size, never an operation's name.
    """
    presets: dict[str, str] = {}
    current = None
    for item in _protect_crop(text).split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, spec = item.partition("=")
        if sep and name.strip().lower() not in PARAMETERS:
            current = name.strip()
            check_preset_name(current)
            if current in presets:
                raise ValueError(f"preset {current!r} defined twice")
            presets[current] = spec.strip()
        elif current is None:
            raise ValueError(f"{item!r} does not start with a preset name (name=WxH...)")
        else:
            presets[current] += "," + item
    result = {}
    for name, spec in presets.items():
        try:
            result[name] = parse_preset_spec(spec)
        except (InvalidOperation, InvalidSize) as exc:
            raise ValueError(f"preset {name}: {exc.public}") from None
    return result


def check_preset_name(name: str) -> None:
    if _SIZE_SHAPED.search(name) or name.lower() in PARAMETERS:
        raise ValueError(f"preset name {name!r} looks like a size or an operation; pick another name")
    if not _PRESET_NAME.match(name):
        raise ValueError(f"preset name {name!r} must start with a letter and hold only letters, digits and '-'"
                         " (at most 32)")


def format_presets(presets: Mapping[str, Operations]) -> str:
    return ",".join(f"{name}={_spec_text(ops)}" for name, ops in presets.items())


def _spec_text(ops: Operations) -> str:
    text = ops.describe()
    return text.replace(":fit", "", 1) if ops.mode == "fit" else text


# ---- sizes (the anonymous presets) ----------------------------------------------

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
        if not sep or not (w or h) or not all(p == "" or (re.fullmatch(r"[0-9]{1,6}", p) and int(p) > 0)
                                              for p in (w, h)):
            raise ValueError(f"{item!r} is not WxH, Wx or xH with positive whole numbers")
        sizes.add((int(w) if w else None, int(h) if h else None))
    if not sizes:
        raise ValueError("no sizes listed (use '*' to allow any size within the maxima)")
    return frozenset(sizes)


def format_size(size: Size) -> str:
    return f"{size[0] or ''}x{size[1] or ''}"


def format_sizes(sizes: frozenset[Size] | None) -> str:
    if sizes is None:
        return "*"
    return ",".join(format_size(s) for s in sorted(sizes, key=lambda s: (s[0] or 0, s[1] or 0)))


@dataclass(frozen=True)
class Catalog:
    """The one policy: what may be rendered.

    Named presets are always allowed.  A plain size (from a ``_WxH`` key) is an
    anonymous preset: allowed if it is in ``sizes`` (``None`` allows any size
    within the maxima), unless ``presets_only``.
    """

    presets: Mapping[str, Operations] = field(default_factory=dict)
    sizes: frozenset[Size] | None = None
    max_width: int = 2048
    max_height: int = 2048
    presets_only: bool = False

    def preset(self, name: str) -> Operations | None:
        return self.presets.get(name)

    def allows(self, width: int | None, height: int | None) -> bool:
        """Whether a plain size would be rendered (used to spot derived names)."""
        if self.presets_only:
            return False
        if (width or 0) > self.max_width or (height or 0) > self.max_height:
            return False
        return self.sizes is None or (width, height) in self.sizes

    def check_size(self, ops: Operations) -> None:
        """Police a plain size from a key (named presets were validated at start-up)."""
        if self.presets_only:
            raise SizeNotAllowed("only named presets are served (RESIZE_PRESETS_ONLY=true)")
        self.check_bounds(ops)
        if self.sizes is not None and (ops.width, ops.height) not in self.sizes:
            raise SizeNotAllowed(f"size {ops.size_label} is not in RESIZE_ALLOWED_SIZES")

    def check_bounds(self, ops: Operations) -> None:
        if ops.width is not None and ops.width > self.max_width:
            raise InvalidSize(f"width {ops.width} exceeds RESIZE_MAX_WIDTH={self.max_width}", parameter="w")
        if ops.height is not None and ops.height > self.max_height:
            raise InvalidSize(f"height {ops.height} exceeds RESIZE_MAX_HEIGHT={self.max_height}", parameter="h")

    def with_presets(self, **presets: Operations) -> "Catalog":
        return replace(self, presets={**self.presets, **presets})
