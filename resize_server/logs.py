"""Structured logging: one JSON object per line, fields passed with ``extra={"fields": {...}}``.

While a request is handled, every line also carries its ``request_id``
(``request_scope``), including lines logged by the service for that request;
``note(**fields)`` lets code below the HTTP layer add fields to the request's
own line (written by ``http/requestlog.py`` when the response is ready).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from contextlib import contextmanager
from typing import Iterator

# The current request's notes (a dict holding at least "request_id"), or None outside a request.
_request: contextvars.ContextVar[dict | None] = contextvars.ContextVar("resize_request", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        entry.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _RequestIdFilter(logging.Filter):
    """Stamp the current request id on the record when it is created (in the logging thread)."""

    def filter(self, record: logging.LogRecord) -> bool:
        notes = _request.get()
        if notes is not None and not hasattr(record, "request_id"):
            record.request_id = notes.get("request_id")
        return True


_FILTER = _RequestIdFilter()


def setup(level: str = "INFO") -> None:
    """Send the package's logs to stderr as JSON lines (idempotent)."""
    logger = logging.getLogger("resize_server")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_resize_json", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler.addFilter(_FILTER)
        handler._resize_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


@contextmanager
def request_scope(request_id: str) -> Iterator[dict]:
    """Mark the lines logged inside as belonging to ``request_id``; yields the request's notes."""
    notes = {"request_id": request_id}
    token = _request.set(notes)
    try:
        yield notes
    finally:
        _request.reset(token)


def begin_request(request_id: str) -> tuple[dict, contextvars.Token]:
    """``request_scope`` split in two, for frameworks with separate before/after hooks."""
    notes = {"request_id": request_id}
    return notes, _request.set(notes)


def end_request(token: contextvars.Token) -> None:
    try:
        _request.reset(token)
    except ValueError:  # reset from another context (a thread hop): just clear it
        _request.set(None)


def current_request_id() -> str | None:
    notes = _request.get()
    return notes.get("request_id") if notes is not None else None


def note(**fields) -> None:
    """Add fields to the current request's log line (no-op outside a request)."""
    notes = _request.get()
    if notes is not None:
        notes.update(fields)
