"""In-memory storage, for tests and for running the service without S3."""

from __future__ import annotations

import hashlib
import threading

from ..errors import SourceNotFound, SourceTooLarge
from .base import SourceObject, StoredObject


class MemoryStorage:
    def __init__(self) -> None:
        self._objects: dict[str, StoredObject] = {}
        self._lock = threading.Lock()
        self.gets = 0
        self.puts = 0

    def add(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with self._lock:
            self._objects[key] = StoredObject(key, data, content_type, "", "STANDARD")

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
        return SourceObject(obj.data, '"%s"' % hashlib.md5(obj.data).hexdigest(), obj.content_type)

    def put(self, obj: StoredObject) -> None:
        with self._lock:
            self.puts += 1
            self._objects[obj.key] = obj

    def list(self, prefix: str = ""):
        from .base import ListedObject

        with self._lock:
            items = sorted((k, o) for k, o in self._objects.items() if k.startswith(prefix))
        for key, obj in items:
            yield ListedObject(key, len(obj.data), '"%s"' % hashlib.md5(obj.data).hexdigest())

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def check(self) -> None:
        return None
