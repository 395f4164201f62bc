"""The storage interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class SourceObject:
    data: bytes
    etag: str
    content_type: str = ""


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


@dataclass(frozen=True)
class ListedObject:
    """One object as a bucket listing gives it (no metadata: that needs a HEAD)."""

    key: str
    size: int
    etag: str = ""
    last_modified: "datetime | None" = None  # timezone-aware; None where the backend has none


# Storage implementations that list and delete (backfill, warm-up, pruning) also have:
#   list(prefix: str = "") -> Iterator[ListedObject]   every key under prefix, in key order
#   delete(key: str) -> None                            no error when the key is already gone
