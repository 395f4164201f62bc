"""The use cases: render a derived key on demand, render the presets of an upload, transform bytes.

HTTP, the event worker, Lambda and the CLI are thin adapters over ``ResizeService``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from typing import Sequence
from urllib.parse import quote

from . import logs
from .config import Settings
from .coordination import CoordinatorUnavailable
from .errors import (CorruptImage, EncoderMissing, InvalidOperation, NotADerivedKey, OutsideSourcePrefixes,
                     ResizeError, SourceNotFound)
from .flow import RecentStores, RenderGate, SingleFlight, StoreQueue
from .imaging.base import Engine, Job
from .imaging.geometry import plan as make_plan
from .metrics import Metrics, instrument_storage
from .options import FORMAT_BY_EXTENSION, RenderRequest, is_derived_key, parse_key
from .presets import CONTENT_TYPES, EXTENSION_FOR_FORMAT, Operations
from .sniff import ImageHeader, is_complete
from .storage.base import SourceObject, Storage, StoredObject

log = logging.getLogger(__name__)
DERIVED_FROM = "derived-from"  # metadata that marks an object as derived (and names its source)
# How long a miss waits, once its source has arrived, for the concurrent read of the derived key.
STORED_READ_GRACE = 0.5


@dataclass(frozen=True)
class Result:
    data: bytes
    content_type: str
    etag: str  # quoted MD5 of the bytes, the same ETag S3 gives the stored object
    width: int | None = None
    height: int | None = None
    source: str = "render"  # "render", "shared" (single-flight) or "stored" (read back from the bucket)
    timings: dict | None = None
    source_etag: str = ""
    key: str = ""  # the key the result is (or would be) stored under
    source_key: str = ""  # the original it was rendered from
    partial: bool = False  # rendered from a truncated original: served briefly, never stored


@dataclass
class PregenResult:
    key: str
    outputs: list[tuple[str, str, str]] = field(default_factory=list)  # (bucket, key, "rendered"|"skipped-same-etag")
    skipped: str | None = None  # why the whole key was skipped, if it was


@dataclass
class _StoreItem:
    obj: StoredObject
    lock_key: str | None = None
    lock_token: str | None = None
    recent: object = None  # the RecentStores entry to complete


class ResizeService:
    def __init__(self, settings: Settings, storage: Storage, engine: Engine, *,
                 coordinator=None, metrics: Metrics | None = None, formats: frozenset[str] | None = None) -> None:
        self.settings = settings
        self.storage = storage
        self.engine = engine
        self.coordinator = coordinator
        self.metrics = metrics or Metrics()
        self.catalog = settings.catalog
        self.limits = settings.source_limits
        # Output formats the engine can write (AVIF only where ImageMagick has an encoder).
        self._formats = formats
        self._probe_formats = None
        self.gate = RenderGate(settings.render_concurrency, settings.queue_size, settings.queue_timeout)
        # Followers wait as long as a leader can take: the gate, a possible wait for
        # another instance, the S3 read with its retries, and the render.
        s3_worst = settings.s3_max_attempts * (settings.s3_connect_timeout + settings.s3_read_timeout)
        self.flight = SingleFlight(wait_timeout=settings.queue_timeout + 2 * settings.redis_wait + 2 * s3_worst + 60)
        self.store_queue = StoreQueue(self._store_item, settings.store_queue_size,
                                      max_bytes=settings.store_queue_mb << 20, size_of=lambda item: len(item.obj.data))
        self.recent = RecentStores()
        # Reads the derived key while the source is fetched (a key already stored is
        # served from the store at no extra latency); bounded by the render slots + waiting room.
        self._readers = ThreadPoolExecutor(max_workers=settings.render_concurrency + settings.queue_size + 2,
                                           thread_name_prefix="derived-read")
        self.metrics.gauge("render_active", lambda: self.gate.active)
        self.metrics.gauge("render_waiting", lambda: self.gate.waiting)
        self.metrics.gauge("render_slots", lambda: self.gate.size)
        self.metrics.gauge("store_queue_pending", self.store_queue.pending)

    # ---- parsing and policing (no I/O) ---------------------------------------------

    def can_encode(self, fmt: str) -> bool:
        """Whether the engine writes ``fmt``; asked of ImageMagick the first time it is needed.

        Not at start-up: probing the AVIF encoder (libaom) costs ~150 ms and ~130 MB of peak
        memory, which every worker and every Lambda cold start would pay for nothing.
        """
        if self._formats is None:
            self._formats = (self._probe_formats or (lambda: frozenset(("jpeg", "png", "gif", "webp"))))()
        return fmt in self._formats

    def request_for(self, key: str) -> RenderRequest:
        """Parse and police a key without any I/O."""
        request = parse_key(key, self.catalog, style_separator=self.settings.style_separator,
                            source_extensions=self.settings.source_extension_list)
        if request.preset is None:
            self.catalog.check_size(request.ops)
        if not self.can_encode(request.format):
            raise NotADerivedKey(f"{request.format} output is not supported by this server")
        prefixes = self.settings.prefixes
        if prefixes:
            allowed = tuple(k for k in request.sources if k.startswith(prefixes))
            if not allowed:
                raise OutsideSourcePrefixes(detail=f"{request.source_key} is outside RESIZE_SOURCE_PREFIXES")
            request = replace(request, source_candidates=allowed)
        if self.is_derived(request.source_key):
            # a_50x50_50x50.jpg would thumbnail a thumbnail, and so on without end.
            raise NotADerivedKey("source is itself a derived image")
        return request

    def is_derived(self, key: str) -> bool:
        """Whether ``key`` names something this server renders (never an original)."""
        return is_derived_key(key, self.catalog, style_separator=self.settings.style_separator)

    # ---- on demand -----------------------------------------------------------------

    def resize_key(self, key: str | Sequence[str]) -> Result:
        """Serve a derived key: render it (once per key across concurrent callers) and store it.

        ``key`` may be several readings of one request (see ``options.src_readings``),
        most likely first: the first whose source exists is rendered and stored
        under that reading.
        """
        readings = [key] if isinstance(key, str) else list(key)
        requests: list[RenderRequest] = []
        first_error: ResizeError | None = None
        for reading in readings:
            try:
                requests.append(self.request_for(reading))
            except ResizeError as exc:
                first_error = first_error or exc
        if not requests:
            raise first_error  # type: ignore[misc]
        started = time.perf_counter()
        result, shared = self.flight.do(requests[0].key, lambda: self._lead(requests))
        if shared:
            self.metrics.inc("singleflight_shared_total")
            self.metrics.observe("singleflight_wait_seconds", time.perf_counter() - started)
            return replace(result, source="shared")
        return result

    def render(self, request: RenderRequest | Sequence[RenderRequest], *, check_stored: bool = False) -> Result:
        """Fetch, check and render, without storing (the benchmarks call it directly).

        With ``check_stored`` the derived key itself is read at the same time as
        the source; if it exists it is returned as it is (``source="stored"``).
        """
        requests = [request] if isinstance(request, RenderRequest) else list(request)
        timings: dict[str, float] = {}
        stored_read = None
        missing: SourceNotFound | None = None
        with self.gate.slot():
            # Submitted once a slot is ours: refused requests cost no S3 read, and reads in
            # flight are bounded by the slots.
            if check_stored:
                stored_read = self._readers.submit(self._stored_or_none, requests[0])
            t0 = time.perf_counter()
            try:
                matched, source_key, source = self._fetch_source(requests)
            except SourceNotFound as exc:
                missing = exc
            except BaseException:
                if stored_read is not None:
                    stored_read.cancel()
                raise
            if missing is None:
                # The source is here: give the derived read a moment more, never a slow S3's worth.
                stored = self._await_stored(stored_read, timeout=STORED_READ_GRACE)
                if stored is None and check_stored and matched is not requests[0]:
                    # An alternative reading matched (curl's "+" for a space...): the image is
                    # stored under that reading's key, so that is the one to look for.
                    stored = self._stored_or_none(matched)
                if stored is not None:
                    return stored
                t1 = time.perf_counter()
                header = self.limits.inspect(source.data)
                plan = self._plan(header, matched.ops)
                rendered = self.engine.render(source.data, header, plan, matched.format)
                t2 = time.perf_counter()
        if missing is not None:
            # No source under any reading: the derived key may still be stored. Waited for
            # outside the slot, so a flood of missing keys cannot hold the render slots.
            stored = self._await_stored(stored_read, timeout=self.settings.s3_read_timeout)
            if stored is not None:
                return stored
            raise missing
        timings.update(fetch_ms=round((t1 - t0) * 1000, 1), render_ms=round((t2 - t1) * 1000, 1))
        self.metrics.inc("renders_total", format=matched.format)
        self.metrics.observe("render_duration_seconds", t2 - t1, format=matched.format)
        self.metrics.observe("source_bytes", len(source.data))
        partial = not is_complete(source.data, header.format)
        return Result(
            data=rendered.data,
            content_type=CONTENT_TYPES[rendered.format],
            etag=_etag(rendered.data),
            width=rendered.width,
            height=rendered.height,
            timings=timings,
            source_etag=source.etag.strip('"'),
            key=matched.key,
            source_key=source_key,
            partial=partial,
        )

    def _stored_or_none(self, request: RenderRequest) -> Result | None:
        """Best effort: a failure to read the derived key must not fail a request whose source is fine."""
        try:
            return self._read_stored(request)
        except ResizeError as exc:
            log.debug("could not read the derived key; rendering", extra={"fields": {
                "key": request.key, "error": type(exc).__name__, "detail": exc.detail}})
            return None

    @staticmethod
    def _await_stored(future, timeout: float) -> Result | None:
        if future is None:
            return None
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            return None

    def _fetch_source(self, requests: list[RenderRequest]) -> tuple[RenderRequest, str, SourceObject]:
        """The first source that exists: every candidate of the first reading, then each other reading's own.

        At most ``len(source extensions) + 2`` reads: the format-conversion
        candidates of the most likely reading, then one per alternative reading.
        """
        tried: set[str] = set()
        for index, request in enumerate(requests):
            candidates = request.sources if index == 0 else request.sources[:1]
            for candidate in candidates:
                if candidate in tried:
                    continue
                tried.add(candidate)
                try:
                    source = self.storage.get(candidate, self.limits.max_bytes)
                except SourceNotFound:
                    continue
                return request, candidate, source
        raise SourceNotFound(detail=f"none of {', '.join(sorted(tried))} exists")

    def _plan(self, header: ImageHeader, ops: Operations):
        # A missing side is bounded by the maximum, so "x200" on a panorama stays within it.
        return make_plan(header, ops.width or self.settings.max_width, ops.height or self.settings.max_height,
                         ops.mode, self.settings.upscale, ops=ops)

    # ---- transform (POST /transform) ------------------------------------------------

    def transform(self, data: bytes, ops: Operations) -> Result:
        """Render uploaded bytes with ``ops``: the same limits and format allow-list as the on-demand path."""
        self.catalog.check_bounds(ops)
        header = self.limits.inspect(data)
        fmt = ops.format or header.format
        if not self.can_encode(fmt):
            raise InvalidOperation(f"{fmt} output is not supported by this server", parameter="format")
        with self.gate.slot():
            t0 = time.perf_counter()
            rendered = self.engine.render(data, header, self._plan(header, ops), fmt)
            t1 = time.perf_counter()
        self.metrics.inc("renders_total", format=fmt)
        self.metrics.observe("render_duration_seconds", t1 - t0, format=fmt)
        return Result(rendered.data, CONTENT_TYPES[fmt], _etag(rendered.data), rendered.width, rendered.height,
                      timings={"render_ms": round((t1 - t0) * 1000, 1)},
                      partial=not is_complete(data, header.format))

    # ---- pre-generation (event worker, Lambda, backfill) -------------------------------

    def destination(self, key: str, preset: str, bucket: str) -> tuple[str, str]:
        """Where pre-generation stores ``preset`` of the original ``key`` from ``bucket``."""
        stem, dot, ext = key.rpartition(".")
        if not dot or "/" in ext:
            stem, ext = key, ""
        ops = self.catalog.preset(preset)
        if ops is not None and ops.format:
            ext = EXTENSION_FOR_FORMAT[ops.format]
        dest_bucket = (self.settings.dest_bucket or bucket).replace("{bucket}", bucket)
        dest_key = (self.settings.dest_key.replace("{key}", key).replace("{stem}", stem)
                    .replace("{preset}", preset).replace("{ext}", ext).replace("{bucket}", bucket))
        return dest_bucket, dest_key

    def pregenerate(self, key: str, *, bucket: str | None = None, presets: Sequence[str] | None = None,
                    source_etag: str | None = None) -> PregenResult:
        """Render the presets of an uploaded original with one read and one decode; store each.

        Idempotent: an output whose destination already holds a rendering of the
        same source ETag is not rendered again (a HEAD each; with ``source_etag``
        known from the event, nothing is read at all when every output is there).
        Every store completes before this returns.
        """
        bucket = bucket or self.settings.bucket
        names = list(presets or self.settings.event_preset_names)
        result = PregenResult(key)
        unknown = [n for n in names if self.catalog.preset(n) is None]
        if unknown:
            raise NotADerivedKey(f"unknown preset {', '.join(unknown)}")
        ext = key.rpartition("/")[2].rpartition(".")[2].lower() if "." in key.rpartition("/")[2] else ""
        if self.is_derived(key):
            result.skipped = "derived key"
        elif not names:
            result.skipped = "no presets configured"
        elif ext not in FORMAT_BY_EXTENSION:
            result.skipped = "not an image extension"
        elif self.settings.prefixes and not key.startswith(self.settings.prefixes):
            result.skipped = "outside RESIZE_SOURCE_PREFIXES"
        if result.skipped:
            return result
        source_storage = self.storage.for_bucket(bucket)
        targets = [(name, *self.destination(key, name, bucket)) for name in names]
        if source_etag is not None:
            todo = [t for t in targets if not self.holds_rendering(t[1], t[2], source_etag)]
            result.outputs += [(b, k, "skipped-same-etag") for n, b, k in targets if (n, b, k) not in todo]
            if not todo:
                return result
            targets = todo
        source = source_storage.get(key, self.limits.max_bytes)
        if DERIVED_FROM in source.metadata:
            result.skipped = "object is derived (metadata)"
            return result
        etag = source.etag.strip('"')
        if source_etag is None or source_etag.strip('"') != etag:
            todo = [t for t in targets if not self.holds_rendering(t[1], t[2], etag)]
            result.outputs += [(b, k, "skipped-same-etag") for n, b, k in targets if (n, b, k) not in todo]
            targets = todo
        if not targets:
            return result
        header = self.limits.inspect(source.data)
        if not is_complete(source.data, header.format):
            raise CorruptImage("original is truncated", detail=f"{key} ends before its end marker")
        source_format = FORMAT_BY_EXTENSION[ext]
        jobs = []
        for name, _, _ in targets:
            ops = self.catalog.preset(name)
            fmt = ops.format or source_format
            if not self.can_encode(fmt):
                raise EncoderMissing(detail=f"preset {name}: this ImageMagick cannot write {fmt}")
            jobs.append(Job(self._plan(header, ops), fmt))
        self.metrics.observe("source_bytes", len(source.data))
        with self.gate.slot():
            t0 = time.perf_counter()
            rendered = self.engine.render_many(source.data, header, jobs)
            elapsed = time.perf_counter() - t0
        for (name, dest_bucket, dest_key), out in zip(targets, rendered):
            self.metrics.inc("renders_total", format=out.format)
            # One decode feeds every output: each output is charged its share of the time.
            self.metrics.observe("render_duration_seconds", elapsed / len(rendered), format=out.format)
            obj = self._stored_object(dest_key, out.data, CONTENT_TYPES[out.format], key, etag,
                                      self.catalog.preset(name))
            self.storage.for_bucket(dest_bucket).put(obj)
            self.metrics.inc("stores_total")
            result.outputs.append((dest_bucket, dest_key, "rendered"))
        return result

    def holds_rendering(self, bucket: str, key: str, source_etag: str) -> bool:
        """Whether ``bucket``/``key`` already holds a rendering of the source with this ETag (one HEAD)."""
        info = self.storage.for_bucket(bucket).head(key)
        return info is not None and info.metadata.get("source-etag") == source_etag.strip('"')

    def drain(self, timeout: float = 30.0) -> bool:
        """Store everything still queued (graceful shutdown, tests)."""
        return self.store_queue.drain(timeout)

    def close(self, timeout: float = 30.0) -> bool:
        """Drain the stores and wait for reads still under way (a derived-key read that outlived its request)."""
        drained = self.drain(timeout)
        self._readers.shutdown(wait=True)
        return drained

    # ---- internals -----------------------------------------------------------

    def _lead(self, requests: list[RenderRequest]) -> Result:
        request = requests[0]
        if self.recent.wait(request.key, self.settings.redis_wait):
            # This process stored it a moment ago. Some S3-compatible servers (s3rver) make a
            # fresh object readable a little after the PUT returns: a few short retries beat
            # rendering it a second time.
            for delay in (0, 0.05, 0.1, 0.2):
                time.sleep(delay)
                stored = self._stored_or_none(request)
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
            result = self.render(requests, check_stored=True)
        except BaseException:
            if token is not None:
                self.coordinator.release(request.key, token, stored=False)
            raise
        if result.source == "stored":  # it was in the bucket already: nothing to store
            if token is not None:
                self.coordinator.release(request.key, token, stored=True)
            return result
        if result.partial:
            # A partial thumbnail beats an error, but it must not become the object S3 serves forever.
            self.metrics.inc("partial_renders_total")
            log.warning("source is truncated: partial image served briefly and not stored",
                        extra={"fields": {"key": result.key, "source": result.source_key}})
            if token is not None:
                self.coordinator.release(request.key, token, stored=False)
            return result
        matched = next((r for r in requests if r.key == result.key), request)
        self._store(matched, result, token if matched is request else None)
        if token is not None and matched is not request:
            self.coordinator.release(request.key, token, stored=False)
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
            stored = self._stored_or_none(request)
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
        return Result(obj.data, content_type, _etag(obj.data), source="stored", key=request.key)

    def _stored_object(self, key: str, data: bytes, content_type: str, source_key: str, source_etag: str,
                       ops: Operations) -> StoredObject:
        """A derived image as stored: the same for the on-demand path and pre-generation."""
        return StoredObject(
            key=key,
            data=data,
            content_type=content_type,
            cache_control=self.settings.cache_control,
            storage_class=self.settings.storage_class,
            metadata={
                # S3 metadata is ASCII only: the key is percent-encoded (RFC 3986).
                DERIVED_FROM: quote(source_key, safe="/"),
                "source-etag": source_etag,
                "resize": ops.describe(),
            },
        )

    def _store(self, request: RenderRequest, result: Result, token: str | None) -> None:
        item = _StoreItem(
            self._stored_object(request.key, result.data, result.content_type, result.source_key or
                                request.source_key, result.source_etag, request.ops),
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


def _etag(data: bytes) -> str:
    return '"%s"' % hashlib.md5(data).hexdigest()


def build_service(settings: Settings, *, storage: Storage | None = None, engine: Engine | None = None,
                  coordinator=None, metrics: Metrics | None = None) -> ResizeService:
    """The composition root: the default S3 storage, Wand engine and optional Redis coordinator.

    Process-wide set-up (ImageMagick limits, allocator tuning) happens here,
    once per process, not at import time.
    """
    metrics = metrics or Metrics()
    if storage is None:
        from .storage.s3 import storage_from_settings

        # With the one-attempt probe client /readyz uses, so it answers within RESIZE_READY_TIMEOUT.
        storage = storage_from_settings(settings)
    if engine is None:
        from .imaging.wand_engine import WandEngine, configure_process

        configure_process(settings.magick_memory_mb * 1024 * 1024, settings.max_source_pixels)
        engine = WandEngine(jpeg_quality=settings.jpeg_quality)
    probe = _format_probe(engine)
    if coordinator is None and settings.redis_url:
        from .coordination import RedisCoordinator

        coordinator = RedisCoordinator.from_url(settings.redis_url, settings.redis_lock_ms, metrics=metrics)
    # S3 latency and errors by kind are measured around every storage call.
    storage = instrument_storage(storage, metrics)
    service = ResizeService(settings, storage, engine, coordinator=coordinator, metrics=metrics)
    service._probe_formats = probe
    return service


def _format_probe(engine):
    """ImageMagick's own answer to what it can write (AVIF depends on the build), or None for other engines."""
    from .imaging import wand_engine

    return wand_engine.encodable_formats if isinstance(engine, wand_engine.WandEngine) else None
