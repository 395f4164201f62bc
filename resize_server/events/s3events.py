"""Pure parsing of S3 event notifications, as S3 sends them to SQS, SNS or Lambda.

No I/O and no imports of boto3, Wand or Flask: a message body (or an already
decoded event) goes in, the created objects and the reasons for skipping the
rest come out.

Shapes understood:

* an S3 event (``{"Records": [{"eventSource": "aws:s3", "eventName":
  "ObjectCreated:Put", "s3": {"bucket": {"name": ...}, "object": {"key": ...}}}]}``),
  the body of an SQS message or the event of a Lambda S3 trigger;
* the same wrapped by SNS (``{"Type": "Notification", "Message": "<the S3 event as JSON>"}``)
  for the S3 -> SNS -> SQS fan-out;
* ``s3:TestEvent`` (``{"Service": "Amazon S3", "Event": "s3:TestEvent", ...}``), which
  S3 sends once when a notification is configured: skipped.

Keys in event records are URL-encoded the way HTML forms are: a space is
``+``, a literal plus is ``%2B``, other bytes are ``%XX`` of their UTF-8.
``unquote_plus`` reverses exactly that (and also reads the ``%20`` that
AWS's sample events use).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import unquote_plus

CREATED_PREFIX = "ObjectCreated:"


class MalformedEvent(ValueError):
    """The message is not an S3 event notification (or a record of one is unusable)."""


@dataclass(frozen=True)
class ObjectCreated:
    """One created object, with its key decoded."""

    bucket: str
    key: str
    event_name: str = "ObjectCreated:Put"
    size: int | None = None
    etag: str = ""
    sequencer: str = ""
    event_time: str = ""


@dataclass
class ParsedEvent:
    created: list[ObjectCreated] = field(default_factory=list)
    # (reason, detail) for each record (or whole message) that is not a creation.
    skipped: list[tuple[str, str]] = field(default_factory=list)


def decode_event_key(raw: str) -> str:
    """The object key from its form in an event record (``+`` is a space, ``%2B`` a plus)."""
    try:
        return unquote_plus(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise MalformedEvent(f"event key is not valid UTF-8 once decoded: {raw[:200]!r}") from None


def parse_body(body: str | bytes) -> ParsedEvent:
    """Parse an SQS message body holding an S3 event (possibly wrapped by SNS)."""
    try:
        payload = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise MalformedEvent(f"message body is not JSON: {exc}") from None
    return parse_event(payload)


def parse_event(payload: Any) -> ParsedEvent:
    """Parse an already decoded S3 event (a Lambda S3 trigger's event, or a decoded body)."""
    if not isinstance(payload, Mapping):
        raise MalformedEvent(f"event is a {type(payload).__name__}, not an object")
    if payload.get("Type") == "Notification" and isinstance(payload.get("Message"), str):
        # S3 -> SNS -> SQS: the S3 event is the SNS message, as a JSON string.
        return parse_body(payload["Message"])
    if payload.get("Event") == "s3:TestEvent":
        return ParsedEvent(skipped=[("test-event", str(payload.get("Bucket", "")))])
    records = payload.get("Records")
    if not isinstance(records, list):
        raise MalformedEvent("event has no Records list")
    parsed = ParsedEvent()
    for record in records:
        created = parse_record(record)
        if isinstance(created, ObjectCreated):
            parsed.created.append(created)
        else:
            parsed.skipped.append(created)
    return parsed


def parse_record(record: Any) -> ObjectCreated | tuple[str, str]:
    """One S3 event record: an ``ObjectCreated``, or ``(reason, detail)`` when it is not a creation."""
    if not isinstance(record, Mapping):
        raise MalformedEvent("event record is not an object")
    source = record.get("eventSource")
    if source != "aws:s3":
        raise MalformedEvent(f"event record is from {source!r}, not aws:s3")
    name = str(record.get("eventName", ""))
    if not name.startswith(CREATED_PREFIX):
        return ("not-created", name)
    s3 = record.get("s3")
    try:
        bucket = s3["bucket"]["name"]
        obj = s3["object"]
        raw_key = obj["key"]
    except (KeyError, TypeError):
        raise MalformedEvent("event record lacks s3.bucket.name or s3.object.key") from None
    if not isinstance(bucket, str) or not bucket or not isinstance(raw_key, str) or not raw_key:
        raise MalformedEvent("event record has an empty bucket or key")
    size = obj.get("size")
    return ObjectCreated(
        bucket=bucket,
        key=decode_event_key(raw_key),
        event_name=name,
        size=size if isinstance(size, int) else None,
        etag=str(obj.get("eTag", "") or ""),
        sequencer=str(obj.get("sequencer", "") or ""),
        event_time=str(record.get("eventTime", "") or ""),
    )


def lambda_event_kind(event: Any) -> str:
    """What triggered a Lambda invocation, by the event's shape.

    ``"s3"`` (an S3 trigger), ``"sqs"`` (an SQS batch), ``"apigw-v1"`` (REST API
    proxy integration), ``"apigw-v2"`` (HTTP API, payload format 2.0), ``"s3-test"``
    (the TestEvent), or ``"unknown"``.
    """
    if not isinstance(event, Mapping):
        return "unknown"
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], Mapping):
        source = records[0].get("eventSource")
        if source == "aws:s3":
            return "s3"
        if source == "aws:sqs":
            return "sqs"
        return "unknown"
    if event.get("Event") == "s3:TestEvent":
        return "s3-test"
    context = event.get("requestContext")
    if isinstance(context, Mapping):
        if event.get("version") == "2.0" and isinstance(context.get("http"), Mapping):
            return "apigw-v2"
        if "httpMethod" in event:
            return "apigw-v1"
    return "unknown"
