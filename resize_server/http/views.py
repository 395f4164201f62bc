"""Routes: the S3-redirect endpoint, the proxied-path endpoint, health and metrics."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from ..errors import PreconditionFailed
from .. import logs
from ..options import path_readings, src_readings

bp = Blueprint("resize", __name__)
# Result.source -> the request log's outcome.
OUTCOMES = {"render": "rendered", "shared": "shared", "stored": "stored-by-other"}


def _service():
    return current_app.extensions["resize"]


@bp.get("/resize.php")
def resize_php() -> Response:
    """What the S3 website RoutingRule redirects to: ``/resize.php?src=<key>``."""
    return _serve(src_readings(request.query_string))


@bp.get("/<path:key>")
def resize_path(key: str) -> Response:
    """The same, for fronts that proxy the original path (nginx, CloudFront)."""
    raw_uri = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    return _serve(path_readings(raw_uri) if raw_uri else [key])


@bp.get("/healthz")
def healthz() -> Response:
    return Response("ok\n", mimetype="text/plain")


@bp.get("/readyz")
def readyz() -> Response:
    """One HeadBucket with the probe client: answers within RESIZE_READY_TIMEOUT (one attempt, no retries).

    Not for a load balancer's health check: an S3 blip would take every
    instance out at once (the README says why); /healthz is for that.
    """
    _service().storage.check()
    response = Response("ready\n", mimetype="text/plain")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/metrics")
def metrics() -> Response:
    metrics = _service().metrics
    response = Response(metrics.render(), content_type=metrics.content_type)
    response.headers["Cache-Control"] = "no-store"
    return response


def _serve(readings: list[str]) -> Response:
    """``readings``: the ways the request may name its key, most likely first (see options.src_readings)."""
    service = _service()
    logs.note(key=readings[0] if readings else "")
    result = service.resize_key(readings)
    logs.note(key=result.key or readings[0])
    response = Response(result.data, mimetype=result.content_type)
    # A partial image (truncated original) is cached briefly: the upload may be fixed.
    response.headers["Cache-Control"] = (service.settings.partial_cache_control if result.partial
                                         else service.settings.cache_control)
    response.set_etag(result.etag.strip('"'))
    response.headers["X-Resize-Source"] = result.source
    if result.timings:
        response.headers["Server-Timing"] = ", ".join(
            f"{name.removesuffix('_ms')};dur={value}" for name, value in result.timings.items())
    response.make_conditional(request)
    if response.status_code == 412:
        # Werkzeug keeps the image body and its cache headers on a 412; HTTP wants an error.
        raise PreconditionFailed(detail=f"{result.key}: If-Match/If-Unmodified-Since did not match {result.etag}")
    # The one log line per request is written by requestlog.py; these are its fields.
    logs.note(outcome=OUTCOMES.get(result.source, result.source), **(result.timings or {}))
    if result.partial:
        logs.note(partial=True)
    if result.width:
        logs.note(size=f"{result.width}x{result.height}")
    return response
