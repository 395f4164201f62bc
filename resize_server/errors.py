"""Every failure the service can report, each with its HTTP status and public message.

Errors are raised anywhere below the HTTP layer and turned into a response in
exactly one place (``http.errors``).  ``public`` is safe to show to a client;
``detail`` is for the log only.  ``log_level`` says how loudly the failure is
logged: client mistakes are ``info``, limits are ``warning``, faults of our
dependencies are ``error``.
"""

from __future__ import annotations

import logging


class ResizeError(Exception):
    status = 500
    public = "internal error"
    log_level = logging.ERROR
    headers: dict[str, str] = {}
    # True when trying again later may succeed (S3 5xx, timeouts, throttling, overload):
    # the event worker leaves such a message for redelivery instead of deleting it.
    transient = False
    parameter: str | None = None  # the request parameter at fault, when there is one

    def __init__(self, public: str | None = None, *, detail: str | None = None, parameter: str | None = None):
        if public is not None:
            self.public = public
        if parameter is not None:
            self.parameter = parameter
        self.detail = detail or self.public
        super().__init__(self.detail)


class BadRequest(ResizeError):
    status = 400
    public = "bad request"
    log_level = logging.INFO


class InvalidKey(BadRequest):
    """The key is malformed or hostile (traversal, control characters, too long)."""


class InvalidSize(BadRequest):
    """The size in a derived name is zero, negative or not a number."""


class InvalidOperation(BadRequest):
    """An operation parameter is unknown, malformed or out of its bounds; ``parameter`` names it."""


class SizeNotAllowed(ResizeError):
    """The size is well formed but the size policy does not allow it."""

    status = 403
    public = "size not allowed"
    log_level = logging.INFO


class NotFound(ResizeError):
    status = 404
    public = "not found"
    log_level = logging.INFO


class NotADerivedKey(NotFound):
    public = "not a derived image name"


class OutsideSourcePrefixes(NotFound):
    """The source is outside RESIZE_SOURCE_PREFIXES: treated as if it did not exist."""

    public = "source image not found"


class SourceNotFound(NotFound):
    public = "source image not found"


class SourceTooLarge(ResizeError):
    status = 413
    public = "source image too large"
    log_level = logging.WARNING


class UnsupportedFormat(ResizeError):
    status = 415
    public = "unsupported image format"
    log_level = logging.WARNING


class CorruptImage(ResizeError):
    status = 422
    public = "image could not be decoded"
    log_level = logging.WARNING


class Overloaded(ResizeError):
    status = 503
    public = "server busy, retry later"
    log_level = logging.WARNING
    transient = True

    def __init__(self, public: str | None = None, *, retry_after: int = 1, detail: str | None = None):
        super().__init__(public, detail=detail)
        self.headers = {"Retry-After": str(retry_after)}


class UpstreamError(ResizeError):
    """S3 failed (5xx after retries, or a response we cannot use)."""

    status = 502
    public = "storage backend error"
    transient = True


class UpstreamAccessDenied(UpstreamError):
    public = "storage backend denied access"


class UpstreamTimeout(ResizeError):
    status = 504
    public = "storage backend timed out"
    transient = True


class UploadTooLarge(ResizeError):
    status = 413
    public = "request body too large"
    log_level = logging.INFO


class Unauthorized(ResizeError):
    status = 401
    public = "missing API key"
    log_level = logging.INFO
    headers = {"WWW-Authenticate": 'Bearer realm="resize-server"'}


class Forbidden(ResizeError):
    status = 403
    public = "invalid API key"
    log_level = logging.INFO


class EncoderMissing(ResizeError):
    """A preset asks for an output format this server's ImageMagick cannot write: the server's
    fault, not the upload's, so pre-generation leaves the message for redelivery (and the
    dead-letter queue) instead of dropping it as poison."""

    status = 501
    public = "output format not supported by this server"
    transient = True


class MethodNotAllowed(ResizeError):
    status = 405
    public = "method not allowed"
    log_level = logging.INFO

    def __init__(self, allowed: str, public: str | None = None):
        super().__init__(public or f"method not allowed (use {allowed})")
        self.headers = {"Allow": allowed}


# ---- causes of storage failures (appended for issue 8) -------------------------------------
# The public message stays short and generic (the client learns nothing about our bucket or
# keys); ``detail`` names the cause for the log line and the CLI.


class UpstreamCredentials(UpstreamError):
    """The AWS credentials are missing, unknown to S3, wrong or expired: not a missing permission."""


class UpstreamUnreachable(UpstreamError):
    """No connection to the S3 endpoint (refused, DNS, TLS, proxy): ``detail`` names the URL."""


class BucketNotFound(UpstreamError):
    """RESIZE_BUCKET does not exist at the endpoint (a configuration fault, not a missing source)."""


class PublicAccessBlocked(UpstreamAccessDenied):
    """S3 Block Public Access (BlockPublicPolicy) refused the public-read bucket policy."""


class PreconditionFailed(ResizeError):
    """``If-Match`` / ``If-Unmodified-Since`` did not match: no body, no image cache headers."""

    status = 412
    public = "precondition failed"
    log_level = logging.INFO


class ResponseTooLarge(ResizeError):
    """A response API Gateway cannot carry (its 6 MB payload limit, after base64)."""

    status = 413
    public = "response too large for API Gateway (6 MB limit); ask for a smaller size"
    log_level = logging.WARNING
