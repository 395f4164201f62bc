"""Pure parsing of a requested object key into a render request.

No I/O and no imports of boto3, Wand or Flask: a string goes in, a
``RenderRequest`` or a typed ``ResizeError`` comes out.

Grammar of a derived key (the last path segment carries the size)::

    <stem>_<W>x<H>[_fill].<ext>      source: <stem>.<ext>
    <stem>_<W>x[_fill].<ext>         width only
    <stem>_x<H>[_fill].<ext>         height only

``<ext>`` is matched case-insensitively and kept verbatim in the source key
(``earth_200x200.JPG`` derives from ``earth.JPG``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from .errors import InvalidKey, InvalidSize, NotADerivedKey

MAX_KEY_BYTES = 1024  # S3's own limit on key length

# Output format for each extension we derive images for.
FORMAT_BY_EXTENSION = {
    "jpg": "jpeg",
    "jpeg": "jpeg",
    "png": "png",
    "gif": "gif",
    "webp": "webp",
}
CONTENT_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
}
MODES = ("fit", "fill")

# <stem>_<size>[_fill].<ext>; <size> is anything shaped like "AxB" so that
# malformed sizes are reported as such rather than as "not a derived name".
_DERIVED = re.compile(
    r"^(?P<stem>.+)_(?P<w>[^_x/]*)x(?P<h>[^_x/]*?)(?P<fill>_fill)?\.(?P<ext>[A-Za-z0-9]+)$",
    re.DOTALL,
)
_NUMBER = re.compile(r"^[1-9][0-9]{0,5}$")
_SIZE_LIKE_SIDE = re.compile(r"^[-+0-9.]")
_ESCAPE_LEFT = re.compile(r"%[0-9A-Fa-f]{2}")


@dataclass(frozen=True)
class RenderRequest:
    """What to render: the source object, the box, how to fit it, and the output format."""

    key: str  # the derived key, where the result is stored
    source_key: str
    width: int | None
    height: int | None
    mode: str = "fit"
    format: str = "jpeg"

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    @property
    def size_label(self) -> str:
        return f"{self.width or ''}x{self.height or ''}"


def decode_src(raw_query: bytes | str) -> str:
    """Extract and decode the ``src`` parameter from a raw query string.

    The value is percent-decoded exactly once as UTF-8. ``+`` stays a literal
    plus, because S3 keys may contain it and S3's RoutingRule copies the key
    into the query string without turning spaces into ``+``.
    """
    if isinstance(raw_query, str):
        raw_query = raw_query.encode("latin-1", "replace")
    values = [part[4:] for part in raw_query.split(b"&") if part.startswith(b"src=")]
    if not values:
        raise InvalidKey("missing src parameter")
    if len(values) > 1:
        raise InvalidKey("src given more than once")
    return _decode_utf8(unquote_to_bytes(values[0]))


def decode_path(raw_uri: str) -> str:
    """The key from the request target as sent (``/photos/a%20b_200x200.jpg?...``).

    Decoded with the same rules as ``src``: percent-escapes once, strictly as
    UTF-8 (invalid UTF-8 is a 400, never a key with replacement characters),
    ``+`` literal.
    """
    path = raw_uri.split("?", 1)[0]
    if "://" in path:  # absolute-form request target
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    return _decode_utf8(unquote_to_bytes(path)).removeprefix("/")


def _decode_utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidKey("key is not valid UTF-8") from None


def check_key(key: str) -> str:
    """Reject keys that are hostile or cannot name an S3 object."""
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
    if _ESCAPE_LEFT.search(key):
        raise InvalidKey("key is percent-encoded more than once")
    return key


def parse_key(key: str) -> RenderRequest:
    """Turn a derived key into a render request, or raise a typed error."""
    check_key(key)
    folder, _, name = key.rpartition("/")
    match = _DERIVED.match(name)
    if match is None:
        raise NotADerivedKey()
    w_text, h_text = match["w"], match["h"]
    if not (_SIZE_LIKE_SIDE.match(w_text) or _SIZE_LIKE_SIDE.match(h_text)):
        # "my_xmas.jpg" has an "x" but no size in it.
        raise NotADerivedKey()
    fmt = FORMAT_BY_EXTENSION.get(match["ext"].lower())
    if fmt is None:
        raise NotADerivedKey(f"unsupported extension .{match['ext']}")
    width, height = _side(w_text, "width"), _side(h_text, "height")
    mode = "fill" if match["fill"] else "fit"
    if mode == "fill" and (width is None or height is None):
        raise InvalidSize("fill needs both a width and a height")
    source_name = f"{match['stem']}.{match['ext']}"
    source_key = f"{folder}/{source_name}" if folder else source_name
    return RenderRequest(key=key, source_key=source_key, width=width, height=height, mode=mode, format=fmt)


def _side(text: str, name: str) -> int | None:
    if text == "":
        return None
    if not _NUMBER.match(text):
        raise InvalidSize(f"{name} must be a positive whole number without leading zeros, got {text[:16]!r}")
    return int(text)
