"""One S3 event -> ``service.pregenerate`` for each created original: the rules shared by the
SQS worker and the Lambda handler (what to skip, what is retried, what is dropped).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..errors import ResizeError
from .s3events import MalformedEvent, ObjectCreated, ParsedEvent, parse_body

log = logging.getLogger(__name__)


def is_transient(exc: BaseException) -> bool:
    """Worth another delivery: S3 5xx, timeouts, throttling, overload, and anything unexpected (a 500).

    An unexpected exception (a bug) is retried too: after the queue's
    maxReceiveCount it lands in the dead-letter queue, where it can be looked
    at and redriven once fixed, instead of being lost.
    """
    if isinstance(exc, ResizeError):
        return bool(exc.transient) or exc.status >= 500
    return True


@dataclass
class EventOutcome:
    """What became of one message (or one Lambda S3 event)."""

    rendered: int = 0
    skipped: int = 0  # outputs already there with the same source ETag, and skipped keys
    transient: list[tuple[str, str]] = field(default_factory=list)  # (key, error)
    permanent: list[tuple[str, int, str]] = field(default_factory=list)  # (key, status, error)

    @property
    def retry(self) -> bool:
        """Leave the message for redelivery (never delete it)."""
        return bool(self.transient)


def looks_derived(service, key: str) -> bool:
    """Cheap check, before any S3 call, that a key is our own output (so it cannot loop)."""
    return service.is_derived(key)


def process_body(service, body: str, *, presets=None) -> EventOutcome:
    """An SQS message body: parse it and pre-generate every created original in it."""
    try:
        parsed = parse_body(body)
    except MalformedEvent as exc:
        # Never valid, however often it is delivered: drop it (logged with a sample).
        service.metrics.inc("events_total", result="malformed")
        log.error("message is not an S3 event; deleted", extra={"fields": {
            "error": str(exc), "body": body[:500]}})
        return EventOutcome(permanent=[("", 400, f"MalformedEvent: {exc}")])
    return process_event(service, parsed, presets=presets)


def process_event(service, parsed: ParsedEvent, *, presets=None) -> EventOutcome:
    outcome = EventOutcome()
    for reason, detail in parsed.skipped:
        service.metrics.inc("events_total", result=reason)
        log.debug("event skipped", extra={"fields": {"reason": reason, "detail": detail}})
    for created in parsed.created:
        process_created(service, created, outcome, presets=presets)
    return outcome


def process_created(service, created: ObjectCreated, outcome: EventOutcome, *, presets=None) -> None:
    fields = {"bucket": created.bucket, "key": created.key, "event": created.event_name}
    if looks_derived(service, created.key):
        outcome.skipped += 1
        service.metrics.inc("events_total", result="derived-key")
        log.info("event for a derived key skipped (our own output)", extra={"fields": fields})
        return
    try:
        # The event's ETag lets pregenerate skip even the GET when every output is already there.
        result = service.pregenerate(created.key, bucket=created.bucket, presets=presets,
                                     source_etag=created.etag or None)
    except ResizeError as exc:
        if is_transient(exc):
            outcome.transient.append((created.key, type(exc).__name__))
            service.metrics.inc("events_total", result="transient")
            log.warning("pre-generation failed transiently; left for redelivery", extra={"fields": {
                **fields, "status": exc.status, "error": type(exc).__name__, "detail": exc.detail}})
        else:
            outcome.permanent.append((created.key, exc.status, type(exc).__name__))
            service.metrics.inc("events_total", result="permanent")
            service.metrics.inc("events_dropped_total", status=str(exc.status))
            log.warning("original cannot be pre-generated; event dropped", extra={"fields": {
                **fields, "status": exc.status, "error": type(exc).__name__, "detail": exc.detail}})
        return
    except Exception as exc:  # a bug: keep the message (it reaches the DLQ after N receives)
        outcome.transient.append((created.key, type(exc).__name__))
        service.metrics.inc("events_total", result="error")
        log.exception("pre-generation failed unexpectedly; left for redelivery", extra={"fields": fields})
        return
    if result.skipped:
        outcome.skipped += 1
        service.metrics.inc("events_total", result="skipped")
        log.info("event skipped", extra={"fields": {**fields, "reason": result.skipped}})
        return
    rendered = sum(1 for *_, state in result.outputs if state == "rendered")
    outcome.rendered += rendered
    outcome.skipped += len(result.outputs) - rendered
    service.metrics.inc("events_total", result="done")
    log.info("pre-generated", extra={"fields": {**fields, "outputs": [
        {"bucket": b, "key": k, "result": state} for b, k, state in result.outputs]}})
