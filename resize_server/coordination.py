"""Cross-instance coordination: a Redis lock so one instance renders a key while the others wait.

The lock is ``SET key token NX PX ttl`` and is released only by its owner
(compare-and-delete in Lua), so an instance whose lock expired cannot delete
the lock another instance took since.  Redis is an optimisation, never a
dependency: when it is down or slow, callers go on with local single-flight
only, and a counter records it.  After a failure Redis is not asked again for
``backoff`` seconds, so a dead Redis costs one timeout per backoff period, not
one per request.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time

log = logging.getLogger(__name__)

# Release by the owner only.  After a successful store the lock becomes a
# short-lived "stored" marker, so late requests on other instances read the
# stored image instead of rendering it again.
_RELEASE = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    if ARGV[2] == "1" then
        return redis.call("set", KEYS[1], "stored", "PX", ARGV[3])
    end
    return redis.call("del", KEYS[1])
end
return 0
"""
STORED = "stored"


class CoordinatorUnavailable(Exception):
    pass


class RedisCoordinator:
    prefix = "resize-lock:"

    def __init__(self, client, lock_ms: int, backoff: float = 5.0, metrics=None,
                 stored_ms: int = 60_000) -> None:
        self.client = client
        self.lock_ms = lock_ms
        self.stored_ms = stored_ms
        self.backoff = backoff
        self.metrics = metrics
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._release = client.register_script(_RELEASE)
        import redis  # only when Redis is configured

        self._redis_error = redis.RedisError

    @classmethod
    def from_url(cls, url: str, lock_ms: int, metrics=None) -> "RedisCoordinator":
        import redis

        client = redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25, retry_on_timeout=False)
        return cls(client, lock_ms, metrics=metrics)

    def _call(self, fn, *args):
        if time.monotonic() < self._down_until:
            raise CoordinatorUnavailable("redis marked down")
        try:
            return fn(*args)
        except self._redis_error as exc:
            with self._lock:
                self._down_until = time.monotonic() + self.backoff
            if self.metrics is not None:
                self.metrics.inc("redis_errors_total")
            log.warning("redis unavailable, using local single-flight only",
                        extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
            raise CoordinatorUnavailable(str(exc)) from None

    def try_lock(self, key: str) -> str | None:
        """A token if this instance now owns the lock, None if another instance does."""
        token = secrets.token_hex(16)
        ok = self._call(lambda: self.client.set(self.prefix + key, token, nx=True, px=self.lock_ms))
        return token if ok else None

    def state(self, key: str) -> str | None:
        """None (nobody is on it), ``"stored"`` (recently stored), or ``"rendering"``."""
        value = self._call(lambda: self.client.get(self.prefix + key))
        if value is None:
            return None
        return STORED if value == STORED.encode() else "rendering"

    def release(self, key: str, token: str, stored: bool) -> None:
        try:
            self._call(lambda: self._release(keys=[self.prefix + key], args=[token, "1" if stored else "0",
                                                                              self.stored_ms]))
        except CoordinatorUnavailable:
            pass  # the lock expires by itself
