"""The one AWS Lambda entry point: ``resize_server.aws_lambda.handler(event, context)``.

One function for every trigger, told apart by the event's shape:

* a direct S3 event (the classic "upload triggers a function"): each created
  original is pre-generated with the worker's rules; a transient failure
  raises, so Lambda's asynchronous retries (and its on-failure destination)
  take over; a permanently bad original is logged and dropped;
* an SQS batch wrapping S3 events: the same, per message, and only the
  messages that failed transiently are reported in ``batchItemFailures`` (the
  event source mapping needs ``FunctionResponseTypes: [ReportBatchItemFailures]``);
* API Gateway (REST API proxy integration, payload v1, and HTTP API, payload
  v2): the same Flask app as the server, through apig-wsgi with binary support.

In Lambda the container is frozen as soon as the handler returns, so nothing
may be left to a background thread: the store queue is drained before every
HTTP response is returned, and pre-generation stores inline.  Nothing is
written to ``/tmp``.  The settings, the boto3 client, the service and the
Flask app are created on the first invocation (not at import, so a bad
``RESIZE_*`` variable is reported by a clear log line rather than an import
error) and reused by every later invocation of the container.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .events.s3events import MalformedEvent, lambda_event_kind, parse_event
from .events.pregen import EventOutcome, process_body, process_event

log = logging.getLogger(__name__)

# API Gateway's limit on a Lambda proxy response (the whole JSON, base64 body included).
API_GATEWAY_MAX_RESPONSE = 6 * 1024 * 1024


class TransientFailure(RuntimeError):
    """Raised from a direct S3 invocation so that Lambda retries it (renders are idempotent)."""


@dataclass
class _Container:
    settings: Any
    app: Any
    service: Any
    wsgi: Any  # apig-wsgi's handler around the Flask app


_container: _Container | None = None
_container_lock = threading.Lock()


def _get_container() -> _Container:
    global _container
    if _container is None:
        with _container_lock:
            if _container is None:
                _container = _cold_start()
    return _container


def reset() -> None:
    """Forget the container's singletons (tests; a new configuration)."""
    global _container
    with _container_lock:
        _container = None


def _cold_start() -> _Container:
    from . import logs
    from .config import ConfigError, Settings

    logs.setup("INFO")
    try:
        settings = Settings.from_env().validate()
    except ConfigError as exc:
        # One line naming every bad variable, then fail the invocation (and every
        # later one until the configuration is fixed: nothing is cached).
        log.error("invalid configuration", extra={"fields": {"problems": str(exc)}})
        raise
    logs.setup(settings.log_level)
    from apig_wsgi import make_lambda_handler

    from .http import create_app

    app = create_app(settings)
    log.info("cold start", extra={"fields": {"bucket": settings.bucket}})
    return _Container(settings, app, app.extensions["resize"], make_lambda_handler(app, binary_support=True))


def handler(event: dict, context: Any) -> dict:
    kind = lambda_event_kind(event)
    container = _get_container()
    if kind == "s3":
        return _on_s3_event(container, event)
    if kind == "sqs":
        return _on_sqs_batch(container, event)
    if kind in ("apigw-v1", "apigw-v2"):
        return _on_http(container, event, context)
    if kind == "s3-test":
        log.info("s3:TestEvent skipped")
        return {"skipped": "s3:TestEvent"}
    log.error("unrecognised Lambda event", extra={"fields": {"keys": sorted(event)[:20] if isinstance(event, dict)
                                                              else type(event).__name__}})
    raise ValueError("unrecognised event: not S3, SQS or API Gateway")


# ---- S3 and SQS ---------------------------------------------------------------


def _summary(outcome: EventOutcome) -> dict:
    return {"rendered": outcome.rendered, "skipped": outcome.skipped,
            "failed": [{"key": k, "status": s, "error": e} for k, s, e in outcome.permanent]}


def _on_s3_event(container: _Container, event: dict) -> dict:
    try:
        parsed = parse_event(event)
    except MalformedEvent as exc:
        log.error("malformed S3 event dropped", extra={"fields": {"error": str(exc)}})
        return {"rendered": 0, "skipped": 0, "failed": [{"key": "", "status": 400, "error": str(exc)}]}
    outcome = process_event(container.service, parsed)
    if outcome.retry:
        raise TransientFailure("transient failure for " + ", ".join(k for k, _ in outcome.transient))
    return _summary(outcome)


def _on_sqs_batch(container: _Container, event: dict) -> dict:
    failures = []
    for record in event["Records"]:
        outcome = process_body(container.service, record.get("body", ""))
        if outcome.retry:
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


# ---- API Gateway ------------------------------------------------------------------


def _on_http(container: _Container, event: dict, context: Any) -> dict:
    try:
        response = container.wsgi(event, context)
    finally:
        # The stores the app queued must complete now: a frozen container never runs them.
        if not container.service.drain(timeout=container.settings.s3_read_timeout * container.settings.s3_max_attempts):
            log.error("store queue not drained before returning")
    size = len(json.dumps(response))
    if size <= API_GATEWAY_MAX_RESPONSE:
        return response
    return _too_large(container, event, response, size)


def _too_large(container: _Container, event: dict, response: dict, size: int) -> dict:
    from .errors import ResponseTooLarge

    readings = _on_demand_keys(event) if response.get("statusCode") == 200 else []
    website = container.settings.website_url
    # The app stored the render under the reading of the key whose source exists: find that one.
    key = next((k for k in readings if _stored(container, k)), None) if website else None
    if key:
        location = website.rstrip("/") + "/" + quote(key, safe="/")
        log.info("response over API Gateway's limit; redirected to the stored object",
                 extra={"fields": {"key": key, "bytes": size, "location": location}})
        return {"statusCode": 302, "headers": {"Location": location, "Cache-Control": "no-store"},
                "body": "", "isBase64Encoded": False}
    error = ResponseTooLarge(detail=f"response of {size} bytes (base64 JSON) over {API_GATEWAY_MAX_RESPONSE}")
    container.service.metrics.inc("errors_total", status=str(error.status))
    log.warning(error.public, extra={"fields": {"bytes": size, "key": readings[0] if readings else None}})
    return {"statusCode": error.status, "headers": {"Content-Type": "text/plain; charset=utf-8",
                                                    "Cache-Control": "no-store"},
            "body": error.public + "\n", "isBase64Encoded": False}


def _on_demand_keys(event: dict) -> list[str]:
    """The readings of the derived key an on-demand GET asked for (``/resize.php?src=`` or the proxied path)."""
    from .errors import ResizeError
    from .options import path_readings, src_readings

    if event.get("version") == "2.0":
        method = event["requestContext"]["http"].get("method")
        path, query = event.get("rawPath", ""), event.get("rawQueryString", "")
    else:
        method = event.get("httpMethod")
        path = event.get("path", "")
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in (event.get("queryStringParameters") or {}).items())
    if method != "GET":
        return []
    try:
        return src_readings(query) if path == "/resize.php" else path_readings(path)
    except ResizeError:
        return []


def _stored(container: _Container, key: str) -> bool:
    from .errors import ResizeError

    storage = container.service.storage
    head = getattr(storage, "head", None)
    if head is None:
        return False
    try:
        return head(key) is not None
    except ResizeError:  # cannot promise the redirect would find it
        return False
