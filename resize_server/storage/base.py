"""The storage interface."""

from __future__ import annotations

from dataclasses import dataclass, field
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
