"""``POST /transform``: the body is an image, the query names the operations, the answer is the image.

Off unless API keys are configured (``RESIZE_API_KEYS``) or it is made public on
purpose (``RESIZE_TRANSFORM_PUBLIC=true``): an open transform endpoint is free
compute for anyone.  Errors here are JSON (``{"error": ..., "parameter": ...}``);
``http.errors`` does that mapping, for this blueprint only.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, request

from ..errors import (BadRequest, Forbidden, InvalidOperation, MethodNotAllowed, NotFound, ResizeError, Unauthorized,
                      UploadTooLarge)
from ..presets import parse_operations

bp = Blueprint("transform", __name__)
_CHUNK = 64 * 1024


@bp.post("/transform")
def transform() -> Response:
    service = current_app.extensions["resize"]
    limit = service.settings.max_upload_bytes
    try:
        _authorize(service.settings)
        ops = parse_operations(_single_valued_args())
        data = _read_body(limit)
    except ResizeError:
        # Answer only once the client (or the front) has sent its body: a proxy still
        # writing it to a closed socket turns our 400/401/413 into its own 502.
        _drain(2 * limit)
        raise
    result = service.transform(data, ops)
    response = Response(result.data, mimetype=result.content_type)
    response.headers["Cache-Control"] = "no-store"
    response.set_etag(result.etag.strip('"'))
    if result.timings:
        response.headers["Server-Timing"] = f"render;dur={result.timings['render_ms']}"
    return response


@bp.route("/transform", methods=["GET", "PUT", "DELETE", "PATCH"])
def transform_other_methods() -> Response:
    raise MethodNotAllowed("POST", "use POST with the image as the request body")


def _authorize(settings) -> None:
    keys = settings.api_key_list
    if not keys:
        if settings.transform_public:
            return
        raise NotFound("not found", detail="POST /transform is off: set RESIZE_API_KEYS or RESIZE_TRANSFORM_PUBLIC")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing API key (Authorization: Bearer <key>)")
    token_bytes = token.strip().encode()
    # Compare against every key, each in constant time, so timing tells nothing about which matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token_bytes, key.encode())
    if not matched:
        raise Forbidden()


def _single_valued_args() -> dict[str, str]:
    params = {}
    for name in request.args:
        values = request.args.getlist(name)
        if len(values) > 1:
            raise InvalidOperation(f"{name[:32]} given more than once", parameter=name[:32])
        params[name] = values[0]
    return params


def _drain(limit: int) -> None:
    """Read and drop what is left of the body, up to ``limit`` bytes (then the connection is closed)."""
    stream, total = request.stream, 0
    try:
        while total < limit:
            chunk = stream.read(_CHUNK)
            if not chunk:
                return
            total += len(chunk)
    except OSError:  # the client went away
        return


def _read_body(limit: int) -> bytes:
    """The body, read in chunks and refused as soon as it passes ``limit`` (whatever Content-Length says)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise UploadTooLarge(f"request body is larger than RESIZE_MAX_UPLOAD_BYTES={limit}")
    stream = request.stream
    chunks, total = [], 0
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise UploadTooLarge(f"request body is larger than RESIZE_MAX_UPLOAD_BYTES={limit}")
        chunks.append(chunk)
    if not total:
        raise BadRequest("request body is empty: send the image as the body")
    return b"".join(chunks)
