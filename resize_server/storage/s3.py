"""S3 storage through boto3.  The only module that imports boto3/botocore.

The client is passed in (one per process, shared by all threads: boto3
clients are thread-safe); ``make_client`` builds one from settings with
explicit timeouts and retries.  Every botocore error is translated here.
"""

from __future__ import annotations

import logging

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from ..errors import SourceNotFound, SourceTooLarge, UpstreamAccessDenied, UpstreamError, UpstreamTimeout
from .base import ObjectInfo, SourceObject, StoredObject

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def make_client(settings, max_pool_connections: int = 32, credentials: dict | None = None):
    """One S3 client for the process, with explicit timeouts and bounded retries.

    ``credentials`` (``aws_access_key_id``/``aws_secret_access_key``) are for
    local S3 servers with fixed keys; otherwise boto3's standard chain applies.
    """
    config = Config(
        region_name=settings.region,
        connect_timeout=settings.s3_connect_timeout,
        read_timeout=settings.s3_read_timeout,
        # total_max_attempts counts the first try; the "max_attempts" key would count retries only.
        retries={"total_max_attempts": settings.s3_max_attempts, "mode": "standard"},
        max_pool_connections=max_pool_connections,
        # Checksums only where S3 requires them: S3-compatible local servers
        # (s3rver, older MinIO) do not understand aws-chunked trailers.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else {},
    )
    session = boto3.session.Session(**(credentials or {}))
    return session.client("s3", endpoint_url=settings.s3_endpoint_url or None, config=config)


class S3Storage:
    def __init__(self, client, bucket: str):
        self.client = client
        self.bucket = bucket

    def get(self, key: str, max_bytes: int) -> SourceObject:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            try:
                length = response.get("ContentLength")
                if length is not None and length > max_bytes:
                    raise SourceTooLarge(
                        f"source is larger than RESIZE_MAX_SOURCE_BYTES={max_bytes}",
                        detail=f"{key} has {length} bytes",
                    )
                data = _read_capped(body, max_bytes, key)
            finally:
                body.close()
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, "GetObject", key, self.bucket) from None
        return SourceObject(data, response.get("ETag", ""), response.get("ContentType", ""),
                            response.get("Metadata") or {})

    def put(self, obj: StoredObject) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=obj.key,
                Body=obj.data,
                ContentType=obj.content_type,
                CacheControl=obj.cache_control,
                StorageClass=obj.storage_class,
                Metadata=obj.metadata,
            )
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, "PutObject", obj.key, self.bucket) from None

    def head(self, key: str) -> ObjectInfo | None:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            error = _translate(exc, "HeadObject", key, self.bucket)
            if isinstance(error, SourceNotFound):
                return None
            raise error from None
        return ObjectInfo(key, response.get("ETag", ""), response.get("ContentLength", 0),
                          response.get("ContentType", ""), response.get("Metadata") or {})

    def for_bucket(self, bucket: str) -> "S3Storage":
        return self if bucket == self.bucket else type(self)(self.client, bucket)

    def configure_website(self, website_configuration: dict, policy: str | None) -> list[str]:
        """Apply the website configuration and (if the server implements it) the bucket policy."""
        notes = []
        try:
            self.client.put_bucket_website(Bucket=self.bucket, WebsiteConfiguration=website_configuration)
            if policy is not None:
                try:
                    self.client.put_bucket_policy(Bucket=self.bucket, Policy=policy)
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") != "NotImplemented":
                        raise
                    notes.append("this S3 server does not implement bucket policies (s3rver's website is public)")
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, "PutBucketWebsite/PutBucketPolicy", "", self.bucket) from None
        return notes

    def create_bucket(self) -> None:
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, "CreateBucket", "", self.bucket) from None

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            error = _translate(exc, "HeadBucket", "", self.bucket)
            if isinstance(error, SourceNotFound):
                error = UpstreamError("bucket not found", detail=f"bucket {self.bucket} does not exist")
            raise error from None


def _read_capped(body, max_bytes: int, key: str) -> bytes:
    """Read the stream, stopping as soon as it passes the cap (the header may lie or be absent)."""
    chunks = []
    total = 0
    while True:
        chunk = body.read(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise SourceTooLarge(
                f"source is larger than RESIZE_MAX_SOURCE_BYTES={max_bytes}",
                detail=f"{key} passed {max_bytes} bytes while streaming",
            )
        chunks.append(chunk)


def _translate(exc: Exception, operation: str, key: str, bucket: str):
    if isinstance(exc, (ReadTimeoutError, ConnectTimeoutError)):
        return UpstreamTimeout(detail=f"{operation} {key}: {exc}")
    if isinstance(exc, EndpointConnectionError):
        return UpstreamError(detail=f"{operation} {key}: {exc}")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return UpstreamError("bucket not found", detail=f"{operation} {key}: bucket {bucket} does not exist")
        if code in _NOT_FOUND or status == 404:
            return SourceNotFound(detail=f"{operation} {key}: {code}")
        if code in _DENIED or status == 403:
            action = "s3:" + ("ListBucket" if operation == "HeadBucket" else operation)
            resource = f"arn:aws:s3:::{bucket}" + (f"/{key}" if key else "")
            hint = f"the server's credentials need {action} on {resource}"
            if operation == "GetObject":
                hint += f" (and s3:ListBucket on arn:aws:s3:::{bucket}, or missing keys are reported as 403)"
            return UpstreamAccessDenied(detail=f"{operation} {key}: {code}: {hint}")
        return UpstreamError(detail=f"{operation} {key}: {code or status}: {exc}")
    return UpstreamError(detail=f"{operation} {key}: {type(exc).__name__}: {exc}")


# ---- Operator checks (`resize-server doctor`) --------------------------------
# Read-only questions about the bucket (and the queue), with the "not there"
# answers returned as None and every other failure translated as above.


class NotImplementedByServer(Exception):
    """The S3-compatible server does not implement this API (s3rver: bucket policies)."""


# s3rver answers GetBucketPolicy with 405 MethodNotAllowed, PutBucketPolicy with 501 NotImplemented.
_NOT_IMPLEMENTED = {"NotImplemented", "MethodNotAllowed"}


def credentials_info() -> tuple[str, str] | None:
    """(where boto3 found credentials, the access key id), or None when it found none."""
    credentials = boto3.session.Session().get_credentials()
    if credentials is None:
        return None
    return credentials.method, credentials.get_frozen_credentials().access_key


class BucketInspector:
    def __init__(self, client, bucket: str):
        self.client = client
        self.bucket = bucket

    def _ask(self, operation: str, call, absent: tuple[str, ...] = ()):
        try:
            return call()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in absent:
                return None
            if code in _NOT_IMPLEMENTED:
                raise NotImplementedByServer(f"{operation}: {code}") from None
            raise _translate(exc, operation, "", self.bucket) from None
        except BotoCoreError as exc:
            raise _translate(exc, operation, "", self.bucket) from None

    def website(self) -> dict | None:
        response = self._ask("GetBucketWebsite", lambda: self.client.get_bucket_website(Bucket=self.bucket),
                             absent=("NoSuchWebsiteConfiguration",))
        if response is None:
            return None
        response.pop("ResponseMetadata", None)
        return response

    def policy(self) -> str | None:
        response = self._ask("GetBucketPolicy", lambda: self.client.get_bucket_policy(Bucket=self.bucket),
                             absent=("NoSuchBucketPolicy",))
        return None if response is None else response["Policy"]

    def public_access_block(self) -> dict | None:
        response = self._ask("GetPublicAccessBlock",
                             lambda: self.client.get_public_access_block(Bucket=self.bucket),
                             absent=("NoSuchPublicAccessBlockConfiguration",))
        return None if response is None else response.get("PublicAccessBlockConfiguration", {})

    def keys(self, prefix: str = "", limit: int = 50) -> list[str]:
        response = self._ask("ListObjectsV2", lambda: self.client.list_objects_v2(
            Bucket=self.bucket, Prefix=prefix, MaxKeys=limit))
        return [item["Key"] for item in response.get("Contents", [])]

    def delete(self, key: str) -> None:
        self._ask("DeleteObject", lambda: self.client.delete_object(Bucket=self.bucket, Key=key))


def queue_attributes(queue_url: str, region: str, client=None) -> dict:
    """The SQS queue's depth and redrive policy; raises ``UpstreamError`` when it does not answer."""
    if client is None:
        client = boto3.session.Session().client(
            "sqs", region_name=region, config=Config(connect_timeout=2, read_timeout=5,
                                                     retries={"total_max_attempts": 2, "mode": "standard"}))
    try:
        response = client.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "RedrivePolicy"])
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        raise UpstreamError(f"queue error {code}", detail=f"GetQueueAttributes {queue_url}: {code}: {exc}") from None
    except BotoCoreError as exc:
        raise UpstreamError("queue unreachable", detail=f"GetQueueAttributes {queue_url}: {exc}") from None
    return response.get("Attributes", {})
