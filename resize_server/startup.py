"""The start-up check shared by every long-running command (``serve``, and the worker).

A server whose endpoint, bucket or credentials are wrong should refuse to
start with the cause, not report itself healthy and fail every request.
"""

from __future__ import annotations

from .config import Settings


def startup_check(settings: Settings, *, storage=None, bucket: str | None = None) -> None:
    """Raise the ``ResizeError`` that names the cause unless the bucket is reachable with these credentials.

    One HeadBucket with the probe client (one attempt, RESIZE_READY_TIMEOUT
    to connect and to read), so a black-holed endpoint fails in seconds.
    Does nothing when RESIZE_STARTUP_CHECK=false.  ``storage`` is injected by
    tests; ``bucket`` checks another bucket than RESIZE_BUCKET.
    """
    if not settings.startup_check:
        return
    if storage is None:
        from .storage.s3 import S3Storage, make_probe_client

        storage = S3Storage(make_probe_client(settings), bucket or settings.bucket)
    storage.check()
