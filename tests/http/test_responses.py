"""Conditional requests as HTTP says, and every error the application produces as text/plain + no-store."""

from __future__ import annotations

import logging

import pytest
from botocore.exceptions import ReadTimeoutError

from resize_server.errors import Overloaded
from resize_server.http import create_app
from tests.conftest import BUCKET, photo
from tests.http.test_s3_faults import Injector, error_response

KEY = "photos/earth.jpg"
URL = "/photos/earth_200x200.jpg"


@pytest.fixture
def earth(s3):
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=photo("Landscape_1.jpg"), ContentType="image/jpeg")


@pytest.fixture
def first(client, service, earth):
    """The 200 the conditional requests are compared with (its store finished)."""
    response = client.get(URL)
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    assert service.drain(10)
    return response


def assert_plain_error(response, status: int, message: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "text/plain", response.headers
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_data(as_text=True) == message + "\n"


# ---- conditional requests --------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{"If-Match": '"abc"'}, {"If-Match": '"abc", "def"'},
                                     {"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT", "If-Match": '"abc"'}])
def test_precondition_failed_is_an_error_without_the_image(client, first, headers):
    response = client.get(URL, headers=headers)
    assert_plain_error(response, 412, "precondition failed")
    assert "ETag" not in response.headers
    assert "immutable" not in response.headers["Cache-Control"]
    assert len(response.data) < 100  # not the 8 kB JPEG


def test_if_match_on_the_current_etag_is_the_image(client, first):
    response = client.get(URL, headers={"If-Match": first.headers["ETag"]})
    assert response.status_code == 200 and response.data == first.data


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_not_modified_carries_the_etag_and_cache_control_of_the_200_and_no_body(client, first, method):
    response = client.open(URL, method=method, headers={"If-None-Match": first.headers["ETag"]})
    assert response.status_code == 304
    assert response.data == b""
    assert response.headers["ETag"] == first.headers["ETag"]
    assert response.headers["Cache-Control"] == first.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "Content-Length" not in response.headers or response.headers["Content-Length"] == "0"


def test_if_none_match_on_another_etag_is_the_image(client, first):
    response = client.get(URL, headers={"If-None-Match": '"abc"'})
    assert response.status_code == 200 and response.data == first.data


# ---- every error: text/plain, no-store -----------------------------------------------------------


class BrokenEngine:
    def render(self, *args, **kwargs):
        raise RuntimeError("a bug")


@pytest.mark.parametrize("method, path, status, message", [
    ("POST", URL, 405, "method not allowed"),
    ("PUT", "/resize.php?src=photos/earth_200x200.jpg", 405, "method not allowed"),
    ("DELETE", URL, 405, "method not allowed"),
    ("POST", "/healthz", 405, "method not allowed"),
    ("GET", "/", 404, "not found"),
    ("GET", "/photos/earth.jpg", 404, None),  # the messages of the key grammar are tested with it
    ("GET", "/photos/missing_200x200.jpg", 404, "source image not found"),
    ("GET", "/photos/earth_0x200.jpg", 400, None),
    ("GET", "/photos/earth_300x300.jpg", 403, None),
])
def test_errors_are_plain_text_and_never_cached(client, earth, method, path, status, message):
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.mimetype == "text/plain" and response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    if message is not None:
        assert response.get_data(as_text=True).startswith(message)
    if status == 405:
        assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "HEAD"}
        assert "<" not in response.get_data(as_text=True)  # not Werkzeug's HTML page


def test_an_unexpected_exception_is_a_plain_500(settings, storage, earth, caplog):
    app = create_app(settings, storage=storage, engine=BrokenEngine())
    with caplog.at_level(logging.ERROR, logger="resize_server"):
        response = app.test_client().get(URL)
    assert_plain_error(response, 500, "internal error")
    assert any("a bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_storage_errors_are_plain(client, s3, earth):
    Injector(s3, "GetObject", key=KEY, fault=lambda request, attempt: error_response(request.url, 403, "InvalidAccessKeyId", "x"))
    assert_plain_error(client.get(URL), 502, "storage backend error")


def test_timeouts_are_plain(client, s3, earth):
    def timeout(request, attempt):
        raise ReadTimeoutError(endpoint_url=request.url)

    Injector(s3, "GetObject", key=KEY, fault=timeout)
    assert_plain_error(client.get(URL), 504, "storage backend timed out")


def test_overload_is_plain_with_retry_after(client, service, earth, monkeypatch):
    def busy(*args, **kwargs):
        raise Overloaded(retry_after=2)

    monkeypatch.setattr(service, "resize_key", busy)
    response = client.get(URL)
    assert_plain_error(response, 503, "server busy, retry later")
    assert response.headers["Retry-After"] == "2"


def test_invalid_credentials_are_not_reported_as_missing_permissions(client, s3, earth, caplog):
    """The issue's log line: "InvalidAccessKeyId: the server's credentials need s3:GetObject on arn:..."."""
    Injector(s3, "GetObject", key=KEY, fault=lambda request, attempt: error_response(
        request.url, 403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."))
    with caplog.at_level(logging.INFO, logger="resize_server"):
        response = client.get(URL)
    assert_plain_error(response, 502, "storage backend error")
    (fields,) = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("status") == 502]
    assert fields["error"] == "UpstreamCredentials"
    assert "InvalidAccessKeyId: the access key id is not known" in fields["detail"]
    assert "s3:GetObject" not in fields["detail"]
