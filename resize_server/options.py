"""Pure parsing of a requested object key into a render request.

No I/O and no imports of boto3, Wand or Flask: a string goes in, a
``RenderRequest`` or a typed ``ResizeError`` comes out.

Grammar of a derived key (``<name>`` is a preset from ``RESIZE_PRESETS``)::

    <stem>_<W>x<H>[_fill].<ext>      source: <stem>.<ext> (then other RESIZE_SOURCE_EXTENSIONS)
    <stem>_<W>x[_fill].<ext>         width only
    <stem>_x<H>[_fill].<ext>         height only
    <stem>_<name>.<ext>              a named preset
    p/<name>/<original key>          a named preset, path form (nginx-style fronts)
    <original key>!<name>            a named preset, style suffix (separator RESIZE_STYLE_SEPARATOR)

In the first four forms ``<ext>`` names the output format and is matched
case-insensitively; the source is looked for with the same extension first
(kept verbatim: ``earth_200x200.JPG`` derives from ``earth.JPG``), then with
each of the source extensions, so ``earth_200x200.webp`` can come from
``earth.jpg``.  In the last two the output has the preset's format, or the
original's.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from .errors import InvalidKey, NotADerivedKey, ResizeError
from .presets import CONTENT_TYPES, Catalog, Operations, _side, validated

MAX_KEY_BYTES = 1024  # S3's own limit on key length
MAX_READINGS = 3  # at most this many readings of one src value are looked up in S3

# Output format for each extension we derive images for.
FORMAT_BY_EXTENSION = {
    "jpg": "jpeg",
    "jpeg": "jpeg",
    "png": "png",
    "gif": "gif",
    "webp": "webp",
    "avif": "avif",
}
DEFAULT_SOURCE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
PRESET_PATH_PREFIX = "p/"

# <stem>_<size>[_fill].<ext>; <size> is anything shaped like "AxB" so that
# malformed sizes are reported as such rather than as "not a derived name".
_DERIVED = re.compile(
    r"^(?P<stem>.+)_(?P<w>[^_x/]*)x(?P<h>[^_x/]*?)(?P<fill>_fill)?\.(?P<ext>[A-Za-z0-9]+)$",
    re.DOTALL,
)
_NAMED = re.compile(r"^(?P<stem>.+)_(?P<name>[A-Za-z][A-Za-z0-9-]*)\.(?P<ext>[A-Za-z0-9]+)$", re.DOTALL)
_SIZE_LIKE_SIDE = re.compile(r"^[-+0-9.]")
_ESCAPE = re.compile(rb"%[0-9A-Fa-f]{2}")


@dataclass(frozen=True)
class RenderRequest:
    """What to render: where to store it, where the source may be, the operations and the format."""

    key: str  # the derived key, where the result is stored
    source_key: str  # the source the key names
    ops: Operations
    format: str = "jpeg"
    preset: str | None = None  # the preset's name, None for a plain size
    # Where to look for the source, in order (format conversion); empty: only source_key.
    source_candidates: tuple[str, ...] = ()

    @property
    def width(self) -> int | None:
        return self.ops.width

    @property
    def height(self) -> int | None:
        return self.ops.height

    @property
    def mode(self) -> str:
        return self.ops.mode

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    @property
    def size_label(self) -> str:
        return self.ops.size_label

    @property
    def label(self) -> str:
        """The preset name, or the size as written in the key (``200x200``, ``200x200_fill``)."""
        if self.preset:
            return self.preset
        return self.ops.size_label + ("_fill" if self.ops.mode == "fill" else "")

    @property
    def sources(self) -> tuple[str, ...]:
        return self.source_candidates or (self.source_key,)


# ---- the src parameter and the path ----------------------------------------------

def src_value(raw_query: bytes | str) -> bytes:
    """The raw (still encoded) value of ``src`` from a raw query string.

    When ``src=`` opens the query (what the RoutingRule produces) the value is
    everything after it, so ``&`` and ``=`` in keys survive S3 writing the key
    raw into the redirect.  Otherwise it is the value of the single ``src``
    parameter among ``&``-separated ones.
    """
    if isinstance(raw_query, str):
        raw_query = raw_query.encode("latin-1", "replace")
    if raw_query.startswith(b"src="):
        return raw_query[4:]
    values = [part[4:] for part in raw_query.split(b"&") if part.startswith(b"src=")]
    if not values:
        raise InvalidKey("missing src parameter")
    if len(values) > 1:
        raise InvalidKey("src given more than once")
    return values[0]


def src_readings(raw_query: bytes | str) -> list[str]:
    """The keys a ``src`` value may mean, most likely first; at most ``MAX_READINGS``, no duplicates.

    1. percent-decoded once (what browsers and S3 itself produce);
    2. ``+`` read as a space, then decoded once (curl turns the raw space S3 puts in
       the redirect into ``+``);
    3. decoded twice (an endpoint that encoded the key twice);
    4. the value as sent (an endpoint that put a key holding a literal ``%41`` raw).

    Every reading must pass ``check_key`` (``..``, control characters, length);
    readings that do not are dropped, and if none is left the first one's error
    is raised.  The caller looks them up in order and uses the first whose source
    exists.
    """
    value = src_value(raw_query)
    once_bytes = unquote_to_bytes(value)
    candidates = [once_bytes]
    if b"+" in value:
        candidates.append(unquote_to_bytes(value.replace(b"+", b"%20")))
    if _ESCAPE.search(once_bytes):
        candidates.append(unquote_to_bytes(once_bytes))
    if _ESCAPE.search(value):
        candidates.append(value)
    return _checked_readings(candidates)


def path_readings(raw_uri: str) -> list[str]:
    """The key from the request target as sent (``/photos/a%20b_200x200.jpg?...``).

    Decoded with the same strictness as ``src`` (once, UTF-8 only, ``+`` literal:
    a path has no form encoding), then checked.  A front passes the client's
    original URI, which browsers and curl both encode once.
    """
    path = raw_uri.split("?", 1)[0]
    if "://" in path:  # absolute-form request target
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    raw = path.encode("latin-1", "replace").removeprefix(b"/")
    return _checked_readings([unquote_to_bytes(raw)])


def _checked_readings(candidates: list[bytes]) -> list[str]:
    readings: list[str] = []
    first_error: InvalidKey | None = None
    for raw in candidates:
        try:
            key = check_key(_decode_utf8(raw))
        except InvalidKey as exc:
            first_error = first_error or exc
            continue
        if key not in readings:
            readings.append(key)
        if len(readings) == MAX_READINGS:
            break
    if not readings:
        raise first_error or InvalidKey("empty key")
    return readings


def decode_src(raw_query: bytes | str) -> str:
    """The first reading of ``src`` (see ``src_readings``)."""
    return src_readings(raw_query)[0]


def decode_path(raw_uri: str) -> str:
    return path_readings(raw_uri)[0]


def _decode_utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidKey("key is not valid UTF-8") from None


def check_key(key: str) -> str:
    """Reject keys that are hostile or cannot name an S3 object (run on the final, decoded key)."""
    if not key:
        raise InvalidKey("empty key")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"key longer than {MAX_KEY_BYTES} bytes")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in key):
        raise InvalidKey("key contains control characters")
    if key.startswith("/") or key.startswith("\\"):
        raise InvalidKey("key must be relative")
    if any(segment in (".", "..") for segment in re.split(r"[/\\]", key)):
        raise InvalidKey("key contains '.' or '..' segments")
    return key


# ---- the key grammar ------------------------------------------------------------

_DEFAULT_CATALOG = Catalog(sizes=None, max_width=10**6, max_height=10**6)


def parse_key(key: str, catalog: Catalog | None = None, *, style_separator: str = "!",
              source_extensions: tuple[str, ...] = DEFAULT_SOURCE_EXTENSIONS) -> RenderRequest:
    """Turn a derived key into a render request, or raise a typed error.

    Pure grammar: the catalog supplies the preset names; whether a plain size is
    *allowed* is the catalog's ``check_size``, applied by the caller.
    """
    check_key(key)
    catalog = catalog or _DEFAULT_CATALOG
    folder, _, name = key.rpartition("/")

    if catalog.presets and key.startswith(PRESET_PATH_PREFIX):
        preset, _, original = key[len(PRESET_PATH_PREFIX):].partition("/")
        ops = catalog.preset(preset)
        if ops is not None and original:
            return _preset_of_original(key, original, preset, ops)

    if style_separator and catalog.presets and style_separator in name:
        original, _, preset = key.rpartition(style_separator)
        ops = catalog.preset(preset)
        if ops is not None and original:
            return _preset_of_original(key, original, preset, ops)

    named = _NAMED.match(name)
    if named is not None and catalog.preset(named["name"]) is not None:
        preset = named["name"]
        fmt = _format_of(named["ext"])
        preset_format = catalog.preset(preset).format
        if preset_format and preset_format != fmt:
            # One key, one object: earth_small.jpg can never be WebP bytes from pre-generation and
            # JPEG bytes on demand.
            raise NotADerivedKey(f"preset {preset} renders {preset_format}, not .{named['ext']}")
        return RenderRequest(key=key, source_key=_join(folder, f"{named['stem']}.{named['ext']}"),
                             ops=catalog.preset(preset), format=fmt, preset=preset,
                             source_candidates=_candidates(folder, named["stem"], named["ext"], source_extensions))

    match = _DERIVED.match(name)
    if match is None:
        raise NotADerivedKey()
    w_text, h_text = match["w"], match["h"]
    if not (_SIZE_LIKE_SIDE.match(w_text) or _SIZE_LIKE_SIDE.match(h_text)):
        # "my_xmas.jpg" has an "x" but no size in it.
        raise NotADerivedKey()
    fmt = _format_of(match["ext"])
    width = _side(w_text, "width") if w_text else None
    height = _side(h_text, "height") if h_text else None
    ops = validated(Operations(width=width, height=height, mode="fill" if match["fill"] else "fit"))
    return RenderRequest(key=key, source_key=_join(folder, f"{match['stem']}.{match['ext']}"), ops=ops, format=fmt,
                         source_candidates=_candidates(folder, match["stem"], match["ext"], source_extensions))


def _preset_of_original(key: str, original: str, preset: str, ops: Operations) -> RenderRequest:
    check_key(original)
    ext = original.rpartition("/")[2].rpartition(".")[2]
    source_format = FORMAT_BY_EXTENSION.get(ext.lower())
    fmt = ops.format or source_format
    if fmt is None:
        raise NotADerivedKey(f"unsupported extension .{ext}" if "." in original.rpartition("/")[2]
                             else "the original has no image extension")
    return RenderRequest(key=key, source_key=original, ops=ops, format=fmt, preset=preset)


def _format_of(ext: str) -> str:
    fmt = FORMAT_BY_EXTENSION.get(ext.lower())
    if fmt is None:
        raise NotADerivedKey(f"unsupported extension .{ext}")
    return fmt


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _candidates(folder: str, stem: str, ext: str, source_extensions: tuple[str, ...]) -> tuple[str, ...]:
    names = [f"{stem}.{ext}"] + [f"{stem}.{other}" for other in source_extensions if other.lower() != ext.lower()]
    return tuple(dict.fromkeys(_join(folder, n) for n in names))


def is_derived_key(key: str, catalog: Catalog, *, style_separator: str = "!") -> bool:
    """Whether ``key`` names something this server would render (so it is never treated as an original)."""
    try:
        request = parse_key(key, catalog, style_separator=style_separator)
    except ResizeError:  # any parse failure means "not derived"
        return False
    if request.preset is not None:
        return True
    return catalog.allows(request.width, request.height)
