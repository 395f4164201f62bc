"""Pure parser for Amazon S3 server access logs (the space-delimited format AWS documents).

No I/O: lines go in, ``LogEntry`` values come out.  A record is a sequence of
space-separated fields where a field is either ``"a quoted string"`` (which
may hold spaces and backslash-escaped quotes), ``[a bracketed time]``, or a
bare token; any field may be ``-`` (unknown / not applicable).  AWS appends
new fields at the end from time to time, so fields past the ones named here
are ignored, and records that stop early (older logs) are accepted as long as
the fields up to the status code are there.

The ``key`` field is URL-encoded the way S3 encodes keys elsewhere (``+`` for
a space, ``%2B`` for a plus); it is decoded here with ``unquote_plus``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Iterator
from urllib.parse import unquote_plus

# The documented fields, in order.
FIELDS = (
    "bucket_owner", "bucket", "time", "remote_ip", "requester", "request_id", "operation", "key",
    "request_uri", "http_status", "error_code", "bytes_sent", "object_size", "total_time",
    "turn_around_time", "referer", "user_agent", "version_id", "host_id", "signature_version",
    "cipher_suite", "authentication_type", "host_header", "tls_version", "access_point_arn",
    "acl_required",
)
_MIN_FIELDS = FIELDS.index("http_status") + 1
_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|\[([^\]]*)\]|(\S+)')
_ESCAPE = re.compile(r"\\(.)")
_TIME_FORMAT = "%d/%b/%Y:%H:%M:%S %z"


class LogParseError(ValueError):
    pass


@dataclass(frozen=True)
class LogEntry:
    bucket: str
    time: datetime  # timezone-aware
    operation: str  # e.g. REST.GET.OBJECT, WEBSITE.GET.OBJECT
    key: str | None  # decoded; None for "-"
    request_uri: str | None
    http_status: int | None
    error_code: str | None
    bytes_sent: int | None
    object_size: int | None
    remote_ip: str | None = None
    requester: str | None = None
    user_agent: str | None = None
    referer: str | None = None

    @property
    def is_website_get(self) -> bool:
        return self.operation == "WEBSITE.GET.OBJECT"

    @property
    def is_object_read(self) -> bool:
        """A GET or HEAD of an object, through the REST API or the website endpoint."""
        return self.operation in ("REST.GET.OBJECT", "REST.HEAD.OBJECT", "WEBSITE.GET.OBJECT",
                                  "WEBSITE.HEAD.OBJECT")

    @property
    def is_miss(self) -> bool:
        """A website request for a key S3 did not have: the 404/403 that the RoutingRule redirects
        (logged as the error, or as the redirect status the rule answered with)."""
        return self.is_website_get and self.http_status in (301, 302, 303, 307, 403, 404)


def tokenize(line: str) -> list[str | None]:
    """The fields of one record; ``-`` becomes None, quotes and brackets are removed."""
    fields: list[str | None] = []
    pos = 0
    line = line.rstrip("\r\n")
    while True:
        while pos < len(line) and line[pos] == " ":
            pos += 1
        if pos >= len(line):
            return fields
        match = _TOKEN.match(line, pos)
        if match is None:  # an unterminated quote or bracket
            raise LogParseError(f"unterminated field at column {pos}")
        quoted, bracketed, bare = match.groups()
        if quoted is not None:
            value = _ESCAPE.sub(r"\1", quoted)
        elif bracketed is not None:
            value = bracketed
        else:
            value = bare
        end = match.end()
        if end < len(line) and line[end] != " ":
            raise LogParseError(f"junk after a field at column {end}")
        fields.append(None if value == "-" else value)
        pos = end


def parse_line(line: str) -> LogEntry:
    fields = tokenize(line)
    if len(fields) < _MIN_FIELDS:
        raise LogParseError(f"{len(fields)} fields, expected at least {_MIN_FIELDS}")
    named = dict(zip(FIELDS, fields))
    if named["time"] is None:
        raise LogParseError("no time")
    try:
        when = datetime.strptime(named["time"], _TIME_FORMAT)
    except ValueError:
        raise LogParseError(f"bad time {named['time']!r}") from None
    key = named["key"]
    if key is not None:
        try:
            key = unquote_plus(key, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise LogParseError("key is not valid UTF-8 once decoded") from None
    return LogEntry(
        bucket=named["bucket"] or "",
        time=when,
        operation=named["operation"] or "",
        key=key,
        request_uri=named["request_uri"],
        http_status=_int(named["http_status"]),
        error_code=named["error_code"],
        bytes_sent=_int(named["bytes_sent"]),
        object_size=_int(named["object_size"]),
        remote_ip=named["remote_ip"],
        requester=named["requester"],
        user_agent=named.get("user_agent"),
        referer=named.get("referer"),
    )


def parse_lines(lines: Iterable[str], errors: list[str] | None = None) -> Iterator[LogEntry]:
    """Every parseable record; unparseable ones are skipped (and described in ``errors`` if given)."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield parse_line(line)
        except LogParseError as exc:
            if errors is not None:
                errors.append(f"line {number}: {exc}")


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise LogParseError(f"not a number: {value!r}") from None


def parse_duration(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``90s`` (or plain seconds) -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 7d, 12h, 30m)")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match[2]]
    return float(match[1]) * scale
