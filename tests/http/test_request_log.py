"""One JSON line per request (http/requestlog.py): request id, key, size, outcome, status, durations."""

from __future__ import annotations

import json
import logging
import re

import pytest
from botocore.exceptions import ConnectionClosedError

from resize_server.logs import JsonFormatter
from tests.conftest import BUCKET, dimensions, photo

KEY = "log/earth.jpg"
DERIVED = "log/earth_200x200.jpg"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def earth(s3):
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=photo(), ContentType="image/jpeg")


@pytest.fixture
def lines(caplog):
    """The JSON lines the package logs, formatted by its own formatter and parsed back."""
    caplog.set_level(logging.DEBUG, logger="resize_server")
    formatter = JsonFormatter()

    def parsed(msg: str | None = "request") -> list[dict]:
        out = [json.loads(formatter.format(r)) for r in caplog.records if r.name.startswith("resize_server")]
        return [e for e in out if msg is None or e["msg"] == msg]

    return parsed


def test_a_render_logs_one_line_with_its_fields(client, service, earth, lines):
    response = client.get("/" + DERIVED)
    assert response.status_code == 200
    assert dimensions(response.data) == ("JPEG", 200, 133)
    [line] = lines()
    assert GENERATED_ID.fullmatch(line["request_id"])
    assert response.headers["X-Request-Id"] == line["request_id"]
    assert line["level"] == "info"
    assert line["key"] == DERIVED
    assert line["size"] == "200x133"
    assert line["outcome"] == "rendered"
    assert line["status"] == 200
    assert line["bytes"] == len(response.data)
    assert line["route"] == "resize_path" and line["method"] == "GET" and line["path"] == "/" + DERIVED
    assert line["fetch_ms"] >= 0 and line["render_ms"] > 0
    assert line["ms"] >= line["fetch_ms"] + line["render_ms"]
    assert "error" not in line
    # The store happens after the response, on the store thread: its line carries the same request id.
    assert service.drain(10)
    [stored] = lines("stored")
    assert stored["request_id"] == line["request_id"] and stored["key"] == DERIVED


def test_the_next_request_reads_what_was_stored(client, service, earth, lines):
    client.get("/resize.php?src=" + DERIVED)
    assert service.drain(10)
    second = client.get("/resize.php?src=" + DERIVED)
    assert second.status_code == 200
    first_line, second_line = lines()
    assert first_line["route"] == second_line["route"] == "resize_php"
    assert first_line["outcome"] == "rendered"
    assert second_line["outcome"] == "stored-by-other"
    assert second_line["request_id"] != first_line["request_id"]


@pytest.mark.parametrize("headers, expected", [
    ({"X-Request-Id": "abc-123"}, "abc-123"),
    ({"X-Amzn-Trace-Id": "Root=1-67891233-abcdef012345678912345678;Sampled=1"},
     "Root=1-67891233-abcdef012345678912345678;Sampled=1"),
    ({"X-Request-Id": "mine", "X-Amzn-Trace-Id": "Root=1-2-3"}, "mine"),  # the client's own id first
    ({"X-Request-Id": "bad id\" with quotes", "X-Amzn-Trace-Id": "Root=1-2-3"}, "Root=1-2-3"),
    ({"X-Request-Id": "x" * 201}, None),  # too long
    ({"X-Request-Id": "a\u00e9b"}, None),  # not ASCII
    ({"X-Request-Id": "a<script>"}, None),
    ({"X-Request-Id": ""}, None),
])
def test_the_request_id_is_taken_when_sane_and_generated_otherwise(client, earth, lines, headers, expected):
    response = client.get("/" + DERIVED, headers=headers)
    assert response.status_code == 200
    [line] = lines()
    if expected is None:
        assert GENERATED_ID.fullmatch(line["request_id"])
    else:
        assert line["request_id"] == expected
    assert response.headers["X-Request-Id"] == line["request_id"]


@pytest.mark.parametrize("method, path, status, error, key, level", [
    ("GET", "/log/missing_200x200.jpg", 404, "SourceNotFound", "log/missing_200x200.jpg", "info"),
    ("GET", "/log/earth_201x201.jpg", 403, "SizeNotAllowed", "log/earth_201x201.jpg", "info"),
    ("GET", "/log/earth.jpg", 404, "NotADerivedKey", "log/earth.jpg", "info"),
    ("POST", "/log/earth_200x200.jpg", 405, "MethodNotAllowed", None, "info"),
])
def test_error_responses_get_the_same_one_line(client, earth, lines, method, path, status, error, key, level):
    response = client.open(path, method=method)
    assert response.status_code == status
    [line] = lines(None)  # nothing else is logged for it
    assert line["msg"] == "request"
    assert line["status"] == status
    assert line["outcome"] == "error"
    assert line["error"] == error
    assert line.get("key") == key
    assert line["level"] == level
    assert response.headers["X-Request-Id"] == line["request_id"]


def test_a_storage_fault_is_logged_once_at_error_level_with_its_detail(client, s3, earth, lines):
    def deny(request, **kwargs):
        raise ConnectionClosedError(endpoint_url=request.url)

    s3.meta.events.register_first("before-send.s3.GetObject", deny)
    response = client.get("/" + DERIVED)
    assert response.status_code == 502
    [line] = [e for e in lines(None) if e["level"] != "debug"]  # (the derived-key read's fallback is debug)
    assert line["level"] == "error"
    assert line["error"] == "UpstreamUnreachable"  # the connection dropped: named as such
    assert "GetObject" in line["detail"]
    assert line["outcome"] == "error"


def test_a_failed_store_in_the_request_says_store_failed(client, service, s3, earth, lines):
    def fail_put(request, **kwargs):
        raise ConnectionClosedError(endpoint_url=request.url)

    s3.meta.events.register_first("before-send.s3.PutObject", fail_put)
    service.store_queue.max_bytes = 0  # nothing fits the queue: the store happens in the request
    response = client.get("/" + DERIVED)
    assert response.status_code == 200  # the client is still served
    [line] = lines()
    assert line["outcome"] == "store-failed"
    [failure] = lines("store failed; the client was still served")
    assert failure["request_id"] == line["request_id"]


def test_a_failed_background_store_is_logged_with_the_request_id(client, service, s3, earth, lines):
    def fail_put(request, **kwargs):
        raise ConnectionClosedError(endpoint_url=request.url)

    s3.meta.events.register_first("before-send.s3.PutObject", fail_put)
    response = client.get("/" + DERIVED, headers={"X-Request-Id": "trace-me"})
    assert response.status_code == 200
    assert service.drain(30)
    [line] = lines()
    assert line["outcome"] == "rendered"  # written before the store ran
    [failure] = lines("store failed; the client was still served")
    assert failure["request_id"] == "trace-me" and failure["level"] == "error"


def test_probes_are_counted_and_logged_at_debug_only(client, lines):
    assert client.get("/healthz").status_code == 200
    [line] = lines()
    assert line["level"] == "debug" and line["route"] == "healthz" and line["status"] == 200
