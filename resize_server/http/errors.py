"""The one place where errors become responses."""

from __future__ import annotations

import json
import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from ..errors import MethodNotAllowed, ResizeError

log = logging.getLogger("resize_server.http")


def error_response(status: int, message: str, headers: dict[str, str] | None = None, *,
                   parameter: str | None = None) -> Response:
    if request and request.blueprint == "transform":
        # The API answers in JSON; everything else stays short plain text.
        body = json.dumps({"error": message, "parameter": parameter}) + "\n"
        response = Response(body, status=status, mimetype="application/json")
    else:
        response = Response(message + "\n", status=status, mimetype="text/plain")
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(headers or {})
    return response


def register(app: Flask) -> None:
    @app.before_request
    def no_automatic_options() -> None:
        # Flask answers OPTIONS itself with a text/html 200; nothing here is for browsers' CORS.
        if request.method == "OPTIONS":
            allowed = sorted((request.url_rule.methods if request.url_rule else {"GET", "HEAD"}) - {"OPTIONS"})
            raise MethodNotAllowed(", ".join(allowed))

    @app.errorhandler(ResizeError)
    def resize_error(exc: ResizeError) -> Response:
        service = app.extensions["resize"]
        service.metrics.inc("errors_total", status=str(exc.status))
        # Logged once, on the request's own line (http/requestlog.py): error class, detail, exc.log_level.
        return error_response(exc.status, exc.public, exc.headers, parameter=exc.parameter)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        # Werkzeug's own responses are HTML pages: keep only the headers that carry meaning
        # (Allow on a 405), never its Content-Type.
        headers = {name: value for name, value in exc.get_headers() if name.lower() == "allow"}
        return error_response(exc.code or 500, (exc.name or "error").lower(), headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        app.extensions["resize"].metrics.inc("errors_total", status="500")
        log.exception("unhandled error (a bug)", extra={"fields": {"path": request.full_path.rstrip("?")}})
        return error_response(500, "internal error")
