"""The Flask adapter: ``create_app()`` builds the app; nothing is created at import time."""

from __future__ import annotations

from typing import Any, Mapping

from flask import Flask

from ..config import Settings
from ..metrics import Metrics


def create_app(settings: Settings | Mapping[str, Any] | None = None, *, storage=None, engine=None,
               coordinator=None) -> Flask:
    """Build the WSGI app.

    ``settings`` defaults to ``Settings.from_env()``; a mapping is read as
    field names (``{"bucket": "images"}``).  ``storage``, ``engine`` and
    ``coordinator`` are injected for tests; by default they are the S3
    storage (one boto3 client per process), the Wand engine and, when
    ``RESIZE_REDIS_URL`` is set, the Redis coordinator.
    """
    from .. import logs
    from ..service import ResizeService
    from . import errors, views

    if settings is None:
        settings = Settings.from_env()
    elif not isinstance(settings, Settings):
        settings = Settings.from_mapping(settings)
    settings.validate()
    logs.setup(settings.log_level)
    metrics = Metrics()

    if storage is None:
        from ..storage.s3 import S3Storage, make_client

        storage = S3Storage(make_client(settings), settings.bucket)
    if engine is None:
        from ..imaging.wand_engine import WandEngine, apply_resource_limits

        apply_resource_limits(settings.magick_memory_mb * 1024 * 1024, settings.max_source_pixels)
        engine = WandEngine(jpeg_quality=settings.jpeg_quality)
    if coordinator is None and settings.redis_url:
        from ..coordination import RedisCoordinator

        coordinator = RedisCoordinator.from_url(settings.redis_url, settings.redis_lock_ms, metrics=metrics)

    app = Flask("resize_server")
    app.extensions["resize"] = ResizeService(settings, storage, engine, coordinator=coordinator, metrics=metrics)
    app.register_blueprint(views.bp)
    errors.register(app)
    return app
