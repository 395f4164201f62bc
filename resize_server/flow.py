"""Concurrency control inside one process: single-flight, the render gate, the store queue."""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from .errors import Overloaded

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Call:
    __slots__ = ("done", "result", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None


class SingleFlight:
    """Concurrent calls for the same key share one execution and its outcome."""

    def __init__(self, wait_timeout: float) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}
        self.wait_timeout = wait_timeout

    def do(self, key: str, fn: Callable[[], T]) -> tuple[T, bool]:
        """Run ``fn`` once for all concurrent callers; returns (result, shared)."""
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if leader:
                call = self._calls[key] = _Call()
        if not leader:
            if not call.done.wait(self.wait_timeout):
                raise Overloaded(detail=f"waited {self.wait_timeout}s for another request rendering {key}")
            if call.error is not None:
                raise call.error
            return call.result, True
        try:
            call.result = fn()
            return call.result, False
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()

    def in_flight(self) -> int:
        with self._lock:
            return len(self._calls)


class RenderGate:
    """At most ``slots`` renders at once; at most ``max_waiting`` callers wait, each for ``timeout`` s.

    Beyond that a caller is refused at once with 503, so load above capacity
    costs nothing but the refusal.  Waiters are served first come, first
    served: a released slot is handed to the oldest waiter, so no request
    starves behind later ones (a plain semaphore wakes an arbitrary thread).
    """

    def __init__(self, slots: int, max_waiting: int, timeout: float) -> None:
        self._lock = threading.Lock()
        self._free = slots
        self._waiters: deque[threading.Event] = deque()
        self._active = 0
        self.max_waiting = max_waiting
        self.timeout = timeout
        self.size = slots

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def active(self) -> int:
        return self._active

    @contextmanager
    def slot(self) -> Iterator[None]:
        self._acquire()
        try:
            yield
        finally:
            self._release()

    def _acquire(self) -> None:
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                self._active += 1
                return
            if len(self._waiters) >= self.max_waiting:
                raise Overloaded(retry_after=1, detail=f"{len(self._waiters)} requests already waiting")
            turn = threading.Event()
            self._waiters.append(turn)
        turn.wait(self.timeout)
        with self._lock:
            if not turn.is_set():  # timed out and still queued: leave the queue
                self._waiters.remove(turn)
                raise Overloaded(retry_after=2, detail=f"no render slot within {self.timeout}s")
            self._active += 1  # a releasing render handed its slot over to us

    def _release(self) -> None:
        with self._lock:
            self._active -= 1
            if self._waiters:
                self._waiters.popleft().set()
            else:
                self._free += 1


class StoreQueue:
    """Stores rendered images after the response, in one background thread.

    Bounded in items and in bytes: when either bound is reached the caller
    stores inline (slower for that client, but no image is dropped and memory
    stays bounded).  ``drain()`` stores everything still queued; it runs on
    graceful shutdown.
    """

    def __init__(self, store: Callable[[object], None], maxsize: int, max_bytes: int = 64 << 20,
                 size_of: Callable[[object], int] = lambda item: 0) -> None:
        self._store = store
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._bytes_lock = threading.Lock()
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self._size_of = size_of

    def submit(self, item: object) -> bool:
        """Queue ``item``; returns False if it was stored inline because the queue was full."""
        self._ensure_thread()
        size = self._size_of(item)
        with self._bytes_lock:
            fits = self.queued_bytes + size <= self.max_bytes
            if fits:
                self.queued_bytes += size
        if fits:
            try:
                # The submitter's context goes along, so the store's log lines carry its request id.
                self._queue.put_nowait((contextvars.copy_context(), item))
                return True
            except queue.Full:
                with self._bytes_lock:
                    self.queued_bytes -= size
        self._store(item)
        return False

    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._start_lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="store-queue", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            context, item = self._queue.get()
            try:
                context.run(self._store, item)
            except Exception:  # the store function logs its own failures; never let the thread die
                log.exception("store worker failed")
            finally:
                with self._bytes_lock:
                    self.queued_bytes -= self._size_of(item)
                self._queue.task_done()

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued item is stored; True if the queue emptied in time."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            if self._thread is None or not self._thread.is_alive():
                self._ensure_thread()
            time.sleep(0.005)
        return True


class _Store:
    __slots__ = ("done", "ok", "at")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False
        self.at = time.monotonic()


class RecentStores:
    """Keys this process rendered recently, with whether their store succeeded.

    A request that arrives after the render finished (so single-flight no
    longer holds it) but before S3 serves the stored object reads the stored
    object instead of rendering again.  Bounded in size and age.
    """

    def __init__(self, ttl: float = 60.0, maxsize: int = 4096) -> None:
        self.ttl = ttl
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._entries: dict[str, _Store] = {}

    def begin(self, key: str) -> _Store:
        """Record a store under way; hand the entry to ``finish`` (it may be evicted meanwhile)."""
        entry = _Store()
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = entry
            while len(self._entries) > self.maxsize:
                self._entries.pop(next(iter(self._entries)))
        return entry

    @staticmethod
    def finish(entry: _Store, ok: bool) -> None:
        entry.ok = ok
        entry.done.set()

    def wait(self, key: str, timeout: float) -> bool:
        """True if ``key`` was stored by this process within the TTL (waiting for a store under way)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and time.monotonic() - entry.at > self.ttl:
                del self._entries[key]
                entry = None
        if entry is None:
            return False
        return entry.done.wait(timeout) and entry.ok
