"""In-memory storage, for tests and for running the service without S3."""

from __future__ import annotations

import hashlib
import threading
from typing import Iterator

from ..errors import SourceNotFound, SourceTooLarge
from .base import ListedObject, ObjectInfo, SourceObject, StoredObject


class MemoryStorage:
    """Buckets in a dict; ``for_bucket`` gives a view of another bucket of the same store."""

    def __init__(self, bucket: str = "images", _buckets: dict | None = None,
                 _lock: threading.Lock | None = None) -> None:
        self.bucket = bucket
        self._buckets = _buckets if _buckets is not None else {}
        self._objects: dict[str, StoredObject] = self._buckets.setdefault(bucket, {})
        self._lock = _lock or threading.Lock()
        self.gets = 0
        self.puts = 0
        self.heads = 0

    def add(self, key: str, data: bytes, content_type: str = "application/octet-stream",
            metadata: dict[str, str] | None = None) -> None:
        with self._lock:
            self._objects[key] = StoredObject(key, data, content_type, "", "STANDARD", dict(metadata or {}))

    def stored(self, key: str) -> StoredObject | None:
        with self._lock:
            return self._objects.get(key)

    def get(self, key: str, max_bytes: int) -> SourceObject:
        with self._lock:
            self.gets += 1
            obj = self._objects.get(key)
        if obj is None:
            raise SourceNotFound()
        if len(obj.data) > max_bytes:
            raise SourceTooLarge(f"source is larger than RESIZE_MAX_SOURCE_BYTES={max_bytes}")
        return SourceObject(obj.data, _etag(obj.data), obj.content_type, dict(obj.metadata))

    def put(self, obj: StoredObject) -> None:
        with self._lock:
            self.puts += 1
            self._objects[obj.key] = obj

    def list(self, prefix: str = "") -> Iterator[ListedObject]:
        with self._lock:
            items = sorted(((k, o) for k, o in self._objects.items() if k.startswith(prefix)), key=lambda i: i[0])
        for key, obj in items:
            yield ListedObject(key, len(obj.data), _etag(obj.data))

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def check(self) -> None:
        return None

    def head(self, key: str) -> ObjectInfo | None:
        with self._lock:
            self.heads += 1
            obj = self._objects.get(key)
        if obj is None:
            return None
        return ObjectInfo(key, _etag(obj.data), len(obj.data), obj.content_type, dict(obj.metadata))

    def for_bucket(self, bucket: str) -> "MemoryStorage":
        return self if bucket == self.bucket else MemoryStorage(bucket, self._buckets, self._lock)


def _etag(data: bytes) -> str:
    return '"%s"' % hashlib.md5(data).hexdigest()
