"""The one use case: derived key -> fetch the source -> check -> render -> store.

HTTP, the worker and the CLI are thin adapters over ``ResizeService``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from urllib.parse import quote
from dataclasses import dataclass, replace

from . import logs
from .config import Settings
from .coordination import CoordinatorUnavailable
from .errors import NotADerivedKey, OutsideSourcePrefixes, ResizeError, SourceNotFound
from .flow import RecentStores, RenderGate, SingleFlight, StoreQueue
from .imaging.base import Engine
from .imaging.geometry import plan as make_plan
from .metrics import Metrics, instrument_storage
from .options import CONTENT_TYPES, RenderRequest, parse_key
from .storage.base import Storage, StoredObject

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    data: bytes
    content_type: str
    etag: str  # quoted MD5 of the bytes, the same ETag S3 gives the stored object
    width: int | None = None
    height: int | None = None
    source: str = "render"  # "render", "shared" (single-flight) or "stored" (another instance)
    timings: dict | None = None
    source_etag: str = ""


@dataclass
class _StoreItem:
    obj: StoredObject
    lock_key: str | None = None
    lock_token: str | None = None
    recent: object = None  # the RecentStores entry to complete


class ResizeService:
    def __init__(self, settings: Settings, storage: Storage, engine: Engine, *,
                 coordinator=None, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.storage = storage
        self.engine = engine
        self.coordinator = coordinator
        self.metrics = metrics or Metrics()
        self.policy = settings.size_policy
        self.limits = settings.source_limits
        self.gate = RenderGate(settings.render_concurrency, settings.queue_size, settings.queue_timeout)
        # Followers wait as long as a leader can take: the gate, a possible wait for
        # another instance, the S3 read with its retries, and the render.
        s3_worst = settings.s3_max_attempts * (settings.s3_connect_timeout + settings.s3_read_timeout)
        self.flight = SingleFlight(wait_timeout=settings.queue_timeout + 2 * settings.redis_wait + 2 * s3_worst + 60)
        self.store_queue = StoreQueue(self._store_item, settings.store_queue_size,
                                      max_bytes=settings.store_queue_mb << 20, size_of=lambda item: len(item.obj.data))
        self.recent = RecentStores()
        self.metrics.gauge("render_active", lambda: self.gate.active)
        self.metrics.gauge("render_waiting", lambda: self.gate.waiting)
        self.metrics.gauge("render_slots", lambda: self.gate.size)
        self.metrics.gauge("store_queue_pending", self.store_queue.pending)

    # ---- entry points ------------------------------------------------------

    def request_for(self, key: str) -> RenderRequest:
        """Parse and police a key without any I/O."""
        request = parse_key(key)
        self.policy.check(request)
        prefixes = self.settings.prefixes
        if prefixes and not request.source_key.startswith(prefixes):
            raise OutsideSourcePrefixes(detail=f"{request.source_key} is outside RESIZE_SOURCE_PREFIXES")
        if self._is_derived(request.source_key):
            # a_50x50_50x50.jpg would thumbnail a thumbnail, and so on without end.
            raise NotADerivedKey("source is itself a derived image")
        return request

    def _is_derived(self, source_key: str) -> bool:
        try:
            source = parse_key(source_key)
        except ResizeError:
            return False
        return self.policy.allows(source.width, source.height)

    def resize_key(self, key: str) -> Result:
        """Serve a derived key: render it (once per key across concurrent callers) and store it."""
        request = self.request_for(key)
        started = time.perf_counter()
        result, shared = self.flight.do(request.key, lambda: self._lead(request))
        if shared:
            self.metrics.inc("singleflight_shared_total")
            self.metrics.observe("singleflight_wait_seconds", time.perf_counter() - started)
            return replace(result, source="shared")
        return result

    def render(self, request: RenderRequest) -> Result:
        """Fetch, check and render, without storing (the benchmarks call it directly)."""
        timings: dict[str, float] = {}
        with self.gate.slot():
            t0 = time.perf_counter()
            source = self.storage.get(request.source_key, self.limits.max_bytes)
            t1 = time.perf_counter()
            header = self.limits.inspect(source.data)
            # A missing side is bounded by the maximum, so "x200" on a panorama stays within it.
            plan = make_plan(header, request.width or self.settings.max_width,
                             request.height or self.settings.max_height, request.mode, self.settings.upscale)
            rendered = self.engine.render(source.data, header, plan, request.format)
            t2 = time.perf_counter()
        timings.update(fetch_ms=round((t1 - t0) * 1000, 1), render_ms=round((t2 - t1) * 1000, 1))
        self.metrics.inc("renders_total", format=request.format)
        self.metrics.observe("render_duration_seconds", t2 - t1, format=request.format)
        self.metrics.observe("source_bytes", len(source.data))
        return Result(
            data=rendered.data,
            content_type=CONTENT_TYPES[rendered.format],
            etag='"%s"' % hashlib.md5(rendered.data).hexdigest(),
            width=rendered.width,
            height=rendered.height,
            timings=timings,
            source_etag=source.etag.strip('"'),
        )

    def drain(self, timeout: float = 30.0) -> bool:
        """Store everything still queued (graceful shutdown, tests)."""
        return self.store_queue.drain(timeout)

    # ---- internals -----------------------------------------------------------

    def _lead(self, request: RenderRequest) -> Result:
        if self.recent.wait(request.key, self.settings.redis_wait):
            stored = self._read_stored(request)
            if stored is not None:
                return stored
        token = None
        if self.coordinator is not None:
            try:
                token = self.coordinator.try_lock(request.key)
                if token is None:
                    stored = self._wait_for_other_instance(request)
                    if stored is not None:
                        return stored
            except CoordinatorUnavailable:
                token = None
        try:
            result = self.render(request)
        except BaseException:
            if token is not None:
                self.coordinator.release(request.key, token, stored=False)
            raise
        self._store(request, result, token)
        return result

    def _wait_for_other_instance(self, request: RenderRequest) -> Result | None:
        """Another instance holds the lock: wait until it has stored the image, then read that."""
        started = time.monotonic()
        deadline = started + self.settings.redis_wait
        outcome = "unavailable"  # Redis failed while we waited (CoordinatorUnavailable)
        try:
            while self.coordinator.state(request.key) == "rendering":
                if time.monotonic() > deadline:
                    outcome = "timeout"
                    log.info("lock wait timed out, rendering here", extra={"fields": {"key": request.key}})
                    return None
                time.sleep(0.05)
            stored = self._read_stored(request)
            outcome = "stored" if stored is not None else "not_stored"
            return stored
        finally:
            self.metrics.observe("redis_lock_wait_seconds", time.monotonic() - started, outcome=outcome)

    def _read_stored(self, request: RenderRequest) -> Result | None:
        """The derived image as stored in S3, or None (then it is rendered here)."""
        try:
            obj = self.storage.get(request.key, self.limits.max_bytes)
        except SourceNotFound:
            return None
        self.metrics.inc("served_stored_total")
        content_type = obj.content_type or request.content_type
        return Result(obj.data, content_type, '"%s"' % hashlib.md5(obj.data).hexdigest(), source="stored")

    def _store(self, request: RenderRequest, result: Result, token: str | None) -> None:
        item = _StoreItem(
            StoredObject(
                key=request.key,
                data=result.data,
                content_type=result.content_type,
                cache_control=self.settings.cache_control,
                storage_class=self.settings.storage_class,
                metadata={
                    # S3 metadata is ASCII only: the key is percent-encoded (RFC 3986).
                    "derived-from": quote(request.source_key, safe="/"),
                    "source-etag": result.source_etag,
                    "resize": f"{request.size_label}:{request.mode}",
                },
            ),
            lock_key=request.key if token else None,
            lock_token=token,
        )
        if not self.settings.store_results:
            self._release(item, stored=False)
            return
        item.recent = self.recent.begin(request.key)
        if not self.store_queue.submit(item):
            self.metrics.inc("store_inline_total")

    def _store_item(self, item: _StoreItem) -> None:
        stored = False
        try:
            t0 = time.perf_counter()
            self.storage.put(item.obj)
            stored = True
            self.metrics.inc("stores_total")
            log.info("stored", extra={"fields": {"key": item.obj.key, "bytes": len(item.obj.data),
                                                 "ms": round((time.perf_counter() - t0) * 1000, 1)}})
        except ResizeError as exc:
            self.metrics.inc("store_failures_total")
            logs.note(store_failed=True)  # an inline store: the request's own line says store-failed
            log.error("store failed; the client was still served", extra={"fields": {
                "key": item.obj.key, "error": type(exc).__name__, "detail": exc.detail}})
        except Exception:
            self.metrics.inc("store_failures_total")
            logs.note(store_failed=True)
            log.exception("store failed unexpectedly", extra={"fields": {"key": item.obj.key}})
        finally:
            if item.recent is not None:
                self.recent.finish(item.recent, stored)
            self._release(item, stored)

    def _release(self, item: _StoreItem, stored: bool) -> None:
        if item.lock_token is not None:
            self.coordinator.release(item.lock_key, item.lock_token, stored)


def build_service(settings: Settings, *, storage: Storage | None = None, engine: Engine | None = None,
                  coordinator=None, metrics: Metrics | None = None) -> ResizeService:
    """The composition root: the default S3 storage, Wand engine and optional Redis coordinator.

    Process-wide set-up (ImageMagick limits, allocator tuning) happens here,
    once per process, not at import time.
    """
    metrics = metrics or Metrics()
    if storage is None:
        from .storage.s3 import S3Storage, make_client

        storage = S3Storage(make_client(settings), settings.bucket)
    if engine is None:
        from .imaging.wand_engine import WandEngine, configure_process

        configure_process(settings.magick_memory_mb * 1024 * 1024, settings.max_source_pixels)
        engine = WandEngine(jpeg_quality=settings.jpeg_quality)
    if coordinator is None and settings.redis_url:
        from .coordination import RedisCoordinator

        coordinator = RedisCoordinator.from_url(settings.redis_url, settings.redis_lock_ms, metrics=metrics)
    # S3 latency and errors by kind are measured around every storage call.
    storage = instrument_storage(storage, metrics)
    return ResizeService(settings, storage, engine, coordinator=coordinator, metrics=metrics)
