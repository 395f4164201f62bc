"""The Flask adapter: ``create_app()`` builds the app; nothing is created at import time."""

from __future__ import annotations

from typing import Any, Mapping

from flask import Flask

from ..config import Settings


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
    from ..service import build_service
    from . import errors, requestlog, transform, views

    if settings is None:
        settings = Settings.from_env()
    elif not isinstance(settings, Settings):
        settings = Settings.from_mapping(settings)
    settings.validate()
    logs.setup(settings.log_level)

    app = Flask("resize_server")
    app.extensions["resize"] = build_service(settings, storage=storage, engine=engine, coordinator=coordinator)
    app.register_blueprint(transform.bp)  # before views: its /transform wins over the catch-all key route
    app.register_blueprint(views.bp)
    errors.register(app)
    requestlog.install(app)  # after the error handlers: it notes their error class
    return app
