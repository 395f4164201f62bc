"""S3 storage through boto3.  The only module that imports boto3/botocore.

The client is passed in (one per process, shared by all threads: boto3
clients are thread-safe); ``make_client`` builds one from settings with
explicit timeouts and retries.  Every botocore error is translated here.
"""

from __future__ import annotations

import logging
from typing import Iterator

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
from .base import ListedObject, ObjectInfo, SourceObject, StoredObject

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

    def list(self, prefix: str = "") -> Iterator[ListedObject]:
        """Every object under ``prefix`` (ListObjectsV2, 1000 a page), in key order."""
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ListedObject(item["Key"], item.get("Size", 0), item.get("ETag", ""),
                                       item.get("LastModified"))
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, "ListObjectsV2", prefix, self.bucket) from None

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, "DeleteObject", key, self.bucket) from None


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

