"""One JSON log line and the request metrics for every response, with a request id.

The id is the caller's ``X-Request-Id`` (or the load balancer's
``X-Amzn-Trace-Id``) when it is short and made of safe characters, else a new
one; it is echoed as ``X-Request-Id`` and stamped on every line logged while
the request is handled.  Views add their fields (key, outcome, timings) with
``logs.note``; error responses are noted with their error class by wrapping
the app's error handlers, so failures get the same one line.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

from .. import logs

log = logging.getLogger("resize_server.http")

REQUEST_ID_HEADERS = ("X-Request-Id", "X-Amzn-Trace-Id")
# Trace ids look like "Root=1-67891233-abcdef012345678912345678;Sampled=1": allow
# what such ids use, nothing that could forge a log field or a header.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:;=+/@-]{1,200}")


_PROBES = ("healthz", "readyz", "metrics")
_PRIVATE_NOTES = ("request_id", "store_failed", "log_level")


def request_id_from(headers) -> str:
    for name in REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value and _SAFE_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex


def _route() -> str:
    """A bounded label: the Flask endpoint without its blueprint, or "unmatched"."""
    endpoint = request.endpoint
    return endpoint.rsplit(".", 1)[-1] if endpoint else "unmatched"


def install(app: Flask) -> None:
    """Register the hooks; call after the error handlers are registered."""

    @app.before_request
    def begin() -> None:
        g.request_started = time.perf_counter()
        g.request_notes, g.request_token = logs.begin_request(request_id_from(request.headers))

    @app.after_request
    def finish(response: Response) -> Response:
        notes = getattr(g, "request_notes", None)
        if notes is None:  # before_request did not run (a failure in an earlier hook)
            notes = {"request_id": request_id_from(request.headers)}
        started = getattr(g, "request_started", None)
        total = time.perf_counter() - started if started is not None else 0.0
        response.headers["X-Request-Id"] = notes["request_id"]
        route = _route()
        service = app.extensions.get("resize")
        if service is not None:
            service.metrics.inc("http_requests_total", route=route, status=str(response.status_code))
            service.metrics.observe("http_request_duration_seconds", total, route=route)
            service.metrics.sample_gauges()  # gauges as this request leaves them (multiprocess mode)
        fields = {"request_id": notes["request_id"], "method": request.method, "route": route,
                  "path": request.path, "status": response.status_code}
        # A snapshot: a store running in the background may add a note meanwhile.
        snapshot = dict(notes)
        fields.update((k, v) for k, v in snapshot.items() if k not in _PRIVATE_NOTES)
        if snapshot.get("store_failed") and fields.get("outcome") == "rendered":
            fields["outcome"] = "store-failed"  # served, but storing it failed in this request (inline store)
        if response.status_code >= 400:
            fields.setdefault("outcome", "error")
            fields.setdefault("error", _status_error(response.status_code))
        fields["bytes"] = response.calculate_content_length() or 0
        fields["ms"] = round(total * 1000, 1)
        if "log_level" in notes:
            level = notes["log_level"]  # a ResizeError says how loud it is (client mistake, limit, fault)
        elif route in _PROBES and response.status_code < 400:
            level = logging.DEBUG  # health checks and scrapes every few seconds would drown the log
        elif response.status_code >= 500:
            level = logging.ERROR
        else:
            level = logging.INFO
        log.log(level, "request", extra={"fields": fields})
        return response

    @app.teardown_request
    def end(_exc) -> None:
        token = g.pop("request_token", None)
        if token is not None:
            logs.end_request(token)

    _note_errors(app)


def _status_error(status: int) -> str:
    return {404: "NotFound", 405: "MethodNotAllowed"}.get(status, f"HTTP{status}")


def _note_errors(app: Flask) -> None:
    """Wrap every registered error handler so the request line names the error class."""
    for codes in app.error_handler_spec.get(None, {}).values():
        for cls, handler in list(codes.items()):
            codes[cls] = _noting(handler)


def _noting(handler):
    @functools.wraps(handler)
    def handle(exc):
        fields = {"outcome": "error", "error": type(exc).__name__}
        detail = getattr(exc, "detail", None)
        if detail:
            fields["detail"] = detail
        if isinstance(getattr(exc, "log_level", None), int):
            fields["log_level"] = exc.log_level
        logs.note(**fields)
        return handler(exc)

    return handle
