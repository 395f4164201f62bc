"""S3 faults injected at the botocore boundary of the app's own client, answered through Flask.

Handlers are registered first on the specific operation
(``before-send.s3.GetObject``).  botocore calls every before-send handler and
uses the first non-None response, so moto still executes the request unless
the handler raises: returning a fake response is fine for reads, writes must
raise.  The client is the one ``make_client`` builds (standard retry mode,
``Settings.s3_max_attempts`` attempts in all), so retries are real.
"""

from __future__ import annotations

import io
import logging

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError
from urllib3.exceptions import ProtocolError
from urllib3.exceptions import ReadTimeoutError as URLLib3ReadTimeoutError

from resize_server.config import Settings
from resize_server.http import create_app
from resize_server.storage.s3 import S3Storage, make_client
from tests.conftest import BUCKET, dimensions, photo

KEY = "f/earth.jpg"
DERIVED = "f/earth_200x200.jpg"
URL = "/" + DERIVED


class FakeRaw:
    """The ``raw`` of an AWSResponse: ``read(amt)`` for streaming bodies, ``stream()`` for error bodies.

    ``fail_with`` is raised once ``fail_after`` bytes have been delivered, the
    way urllib3 reports a connection that dies mid-body.
    """

    def __init__(self, body: bytes, fail_after: int | None = None, fail_with: Exception | None = None):
        self._body = io.BytesIO(body)
        self._fail_after = fail_after
        self._fail_with = fail_with
        self.closed = False

    def read(self, amt=None, **_kwargs) -> bytes:
        if self._fail_with is not None and self._body.tell() >= self._fail_after:
            raise self._fail_with
        if self._fail_with is not None:
            amt = min(amt or self._fail_after, self._fail_after - self._body.tell())
        return self._body.read(amt) if amt is not None else self._body.read()

    def stream(self, amt=1024, decode_content=None):
        while chunk := self._body.read(amt):
            yield chunk

    def close(self) -> None:
        self.closed = True


def error_xml(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>FAKE</RequestId><HostId>FAKE</HostId></Error>").encode()


def error_response(url: str, status: int, code: str, message: str) -> AWSResponse:
    body = error_xml(code, message)
    return AWSResponse(url, status, {"Content-Type": "application/xml", "Content-Length": str(len(body))},
                       FakeRaw(body))


def object_response(url: str, raw: FakeRaw, content_length: int | None) -> AWSResponse:
    headers = {"Content-Type": "image/jpeg", "ETag": '"0123456789abcdef0123456789abcdef"'}
    if content_length is not None:
        headers["Content-Length"] = str(content_length)
    return AWSResponse(url, 200, headers, raw)


class Injector:
    """Records every attempt of one operation on ``key`` and answers it with ``fault(request, attempt)``.

    With ``key``, requests for other keys go through untouched (the server also
    reads the derived key, to serve it if it is already stored).
    """

    def __init__(self, client, operation: str, fault, key: str | None = None):
        self.calls: list[str] = []
        self.fault = fault
        self.path = "/" + key if key else None
        client.meta.events.register_first(f"before-send.s3.{operation}", self)

    def __call__(self, request, **_kwargs):
        if self.path and not request.url.split("?")[0].endswith(self.path):
            return None
        self.calls.append(request.url)
        return self.fault(request, len(self.calls))


def SourceInjector(client, operation, fault):
    """An Injector for the source key only."""
    return Injector(client, operation, fault, key=KEY)


@pytest.fixture
def earth(s3):
    data = photo("Landscape_1.jpg")
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=data, ContentType="image/jpeg")
    return data


def assert_refused(response, status: int, message: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == message + "\n"
    assert response.headers["Cache-Control"] == "no-store"


def assert_not_stored(s3, key: str = DERIVED) -> None:
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=key)["KeyCount"] == 0


# ---- timeouts -------------------------------------------------------------------


def test_read_timeout_is_504_after_every_attempt(client, service, s3, earth):
    def timeout(request, attempt):
        raise ReadTimeoutError(endpoint_url=request.url)

    injected = SourceInjector(s3, "GetObject", timeout)
    response = client.get(URL)
    assert_refused(response, 504, "storage backend timed out")
    assert len(injected.calls) == service.settings.s3_max_attempts == 3
    assert service.drain(10)
    assert_not_stored(s3)


def test_connect_timeout_is_504_after_the_configured_attempts(s3, earth):
    settings = Settings(bucket=BUCKET, s3_max_attempts=2)
    client = make_client(settings)  # inside the moto mock of the s3 fixture

    def timeout(request, attempt):
        raise ConnectTimeoutError(endpoint_url=request.url)

    injected = SourceInjector(client, "GetObject", timeout)
    app = create_app(settings, storage=S3Storage(client, BUCKET))
    response = app.test_client().get(URL)
    assert_refused(response, 504, "storage backend timed out")
    assert len(injected.calls) == 2


# ---- S3 errors -------------------------------------------------------------------


def test_internal_error_on_every_attempt_is_502(client, service, s3, earth):
    injected = SourceInjector(s3, "GetObject",
                        lambda request, attempt: error_response(request.url, 500, "InternalError", "We encountered an internal error. Please try again."))
    response = client.get(URL)
    assert_refused(response, 502, "storage backend error")
    assert len(injected.calls) == 3
    assert service.metrics.get("errors_total", status="502") == 1


def test_one_internal_error_then_success_is_retried(client, service, s3, earth):
    def once(request, attempt):
        if attempt == 1:
            return error_response(request.url, 500, "InternalError", "We encountered an internal error.")
        return None  # moto answers

    injected = SourceInjector(s3, "GetObject", once)
    response = client.get(URL)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert dimensions(response.data) == ("JPEG", 200, 133)
    assert len(injected.calls) == 2
    assert service.drain(10)
    assert s3.get_object(Bucket=BUCKET, Key=DERIVED)["Body"].read() == response.data


def test_access_denied_is_502_and_the_log_names_the_permission(client, s3, earth, caplog):
    injected = SourceInjector(s3, "GetObject", lambda request, attempt: error_response(request.url, 403, "AccessDenied", "Access Denied"))
    with caplog.at_level(logging.INFO, logger="resize_server"):
        response = client.get(URL)
    assert_refused(response, 502, "storage backend denied access")
    assert len(injected.calls) == 1  # a 403 is not retried
    records = [r for r in caplog.records if getattr(r, "fields", {}).get("status") == 502]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.ERROR
    assert record.fields["error"] == "UpstreamAccessDenied"
    assert "s3:GetObject" in record.fields["detail"]
    assert f"arn:aws:s3:::{BUCKET}/{KEY}" in record.fields["detail"]
    # the client learns nothing about the bucket, the key or the permission
    assert BUCKET not in response.get_data(as_text=True)


def test_no_such_key_from_s3_is_404(client, s3, earth):
    # The object exists in moto: only the injected answer says it does not.
    injected = SourceInjector(s3, "GetObject",
                        lambda request, attempt: error_response(request.url, 404, "NoSuchKey", "The specified key does not exist."))
    response = client.get(URL)
    assert_refused(response, 404, "source image not found")
    assert len(injected.calls) == 1


def test_readiness_reports_denied_head_bucket(client, s3, caplog):
    Injector(s3, "HeadBucket", lambda request, attempt: AWSResponse(request.url, 403, {}, FakeRaw(b"")))
    with caplog.at_level(logging.INFO, logger="resize_server"):
        response = client.get("/readyz")
    assert_refused(response, 502, "storage backend denied access")
    detail = [r.fields["detail"] for r in caplog.records if getattr(r, "fields", {}).get("status") == 502]
    assert len(detail) == 1 and "s3:ListBucket" in detail[0] and f"arn:aws:s3:::{BUCKET}" in detail[0]


# ---- the store after the response -------------------------------------------------


def test_failed_put_still_serves_the_image(client, service, s3, earth):
    def timeout(request, attempt):
        # Raise: a returned response would not stop moto from storing the object.
        raise ReadTimeoutError(endpoint_url=request.url)

    injected = Injector(s3, "PutObject", timeout, key=DERIVED)
    response = client.get(URL)
    assert response.status_code == 200
    assert response.mimetype == "image/jpeg"
    assert dimensions(response.data) == ("JPEG", 200, 133)
    assert service.drain(30)
    assert len(injected.calls) == 3
    assert service.metrics.get("store_failures_total") == 1
    assert service.metrics.get("stores_total") == 0
    assert_not_stored(s3)


# ---- bodies that go wrong while streaming -------------------------------------------


def test_body_shorter_than_its_content_length_is_502(client, service, s3, earth):
    """S3 says 347 kB, the connection ends after 60%: a storage fault (502), not a partial thumbnail.

    botocore's StreamingBody checks the bytes read against Content-Length and
    raises IncompleteReadError, which S3Storage reports as an upstream error.
    The same bytes stored whole as a truncated file render (see the corpus).
    """
    cut = earth[: int(len(earth) * 0.6)]
    raws = []

    def short(request, attempt):
        raws.append(FakeRaw(cut))
        return object_response(request.url, raws[-1], content_length=len(earth))

    SourceInjector(s3, "GetObject", short)
    response = client.get(URL)
    assert_refused(response, 502, "storage backend error")
    assert raws and all(raw.closed for raw in raws)  # the connection is given back
    assert service.drain(10)
    assert_not_stored(s3)


@pytest.mark.parametrize("error, status, message", [
    (ProtocolError("Connection broken: IncompleteRead"), 502, "storage backend error"),
    (URLLib3ReadTimeoutError(None, None, "Read timed out."), 504, "storage backend timed out"),
])
def test_connection_dropping_mid_body(client, s3, earth, error, status, message):
    """urllib3 reports a reset or stalled connection while the body streams: never a 500."""
    SourceInjector(s3, "GetObject", lambda request, attempt: object_response(
        request.url, FakeRaw(earth, fail_after=100_000, fail_with=error), content_length=len(earth)))
    response = client.get(URL)
    assert response.status_code != 500
    assert_refused(response, status, message)


def test_body_over_the_byte_limit_without_content_length_is_413(s3, storage, earth):
    """No Content-Length to refuse up front: the read is capped while streaming and stops there."""
    app = create_app(Settings(bucket=BUCKET, max_source_bytes=1_000_000), storage=storage)
    body = earth + b"\x00" * (1_500_000 - len(earth))
    raws = []

    def unsized(request, attempt):
        raws.append(FakeRaw(body))
        return object_response(request.url, raws[-1], content_length=None)

    SourceInjector(s3, "GetObject", unsized)
    response = app.test_client().get(URL)
    assert_refused(response, 413, "source is larger than RESIZE_MAX_SOURCE_BYTES=1000000")
    assert len(raws) == 1 and raws[0].closed
    assert raws[0]._body.tell() < 1_500_000  # stopped reading past the cap, not after the whole body


# ---- the client's configuration -----------------------------------------------------


def test_make_client_sets_timeouts_and_retries_from_settings():
    settings = Settings(bucket=BUCKET, s3_connect_timeout=1.5, s3_read_timeout=7.0, s3_max_attempts=5)
    config = make_client(settings).meta.config
    assert config.connect_timeout == 1.5
    assert config.read_timeout == 7.0
    assert config.retries == {"total_max_attempts": 5, "mode": "standard"}

    defaults = make_client(Settings(bucket=BUCKET)).meta.config
    assert (defaults.connect_timeout, defaults.read_timeout) == (2.0, 10.0)
    assert defaults.retries["total_max_attempts"] == 3
