"""The storage interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterator, Protocol


@dataclass(frozen=True)
class SourceObject:
    data: bytes
    etag: str
    content_type: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD tells about an object."""

    key: str
    etag: str
    size: int
    content_type: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredObject:
    """What a derived image is stored as."""

    key: str
    data: bytes
    content_type: str
    cache_control: str
    storage_class: str
    metadata: dict[str, str] = field(default_factory=dict)


class Storage(Protocol):
    def get(self, key: str, max_bytes: int) -> SourceObject:
        """Read an object, raising ``SourceNotFound`` or ``SourceTooLarge`` (checked while reading)."""

    def put(self, obj: StoredObject) -> None:
        """Write a derived image."""

    def check(self) -> None:
        """Raise an ``UpstreamError`` unless the bucket is reachable."""

    def head(self, key: str) -> ObjectInfo | None:
        """The object's ETag, size and metadata, or None if it does not exist."""

    def for_bucket(self, bucket: str) -> "Storage":
        """The same storage (same client) on another bucket."""

    def list(self, prefix: str = "") -> Iterator[ListedObject]:
        """Every object under ``prefix``, in key order (backfill, warm-up, pruning)."""

    def delete(self, key: str) -> None:
        """Delete an object (no error when it is already gone)."""


@dataclass(frozen=True)
class ListedObject:
    """One object as a bucket listing gives it (no metadata: that needs a HEAD)."""

    key: str
    size: int
    etag: str = ""
    last_modified: "datetime | None" = None  # timezone-aware; None where the backend has none
