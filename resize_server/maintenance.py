"""Backfill, warm-up and pruning: thin bulk operations over the service and storage.

* ``backfill``: pre-generate the presets of every original under a prefix that
  lack them (``service.pregenerate`` HEADs each destination, so a rerun skips
  what is already there with the same source ETag: it resumes).
* ``warm``: from S3 server access logs, the derived keys the website endpoint
  most often answered as missing; render the top N that are still missing.
* ``prune``: delete derived objects (only those whose metadata says
  ``derived-from``, never an original) that no log record shows requested in
  N days.  They can always be rendered again.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Iterator

from .accesslog import LogEntry, parse_lines
from .errors import ResizeError
from .events.pregen import looks_derived
from .options import FORMAT_BY_EXTENSION

log = logging.getLogger(__name__)

MAX_LOG_OBJECT_BYTES = 256 << 20  # an access-log object is a few KB to a few MB


class MaintenanceError(ValueError):
    """A bulk operation refused to run (bad arguments, logs that cannot justify a deletion)."""


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix)."""
    if not url.startswith("s3://"):
        raise MaintenanceError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise MaintenanceError(f"no bucket in {url!r}")
    return bucket, prefix


def is_image_key(key: str) -> bool:
    name = key.rpartition("/")[2]
    return "." in name and name.rpartition(".")[2].lower() in FORMAT_BY_EXTENSION


# ---- backfill ---------------------------------------------------------------------


@dataclass
class BackfillSummary:
    originals: int = 0  # originals handled (rendered, skipped or failed)
    rendered: int = 0  # outputs rendered and stored
    skipped: int = 0  # outputs already there with the same source ETag
    skipped_keys: int = 0  # originals skipped whole (derived metadata)
    ignored: int = 0  # listed keys that are derived or not images
    failed: Counter = field(default_factory=Counter)  # reason -> originals
    would_process: list[str] = field(default_factory=list)  # --dry-run
    interrupted: bool = False

    def lines(self) -> list[str]:
        out = [f"originals: {self.originals}", f"rendered: {self.rendered}",
               f"skipped (already there, same source ETag): {self.skipped}"]
        if self.skipped_keys:
            out.append(f"skipped originals (metadata marks them derived): {self.skipped_keys}")
        out.append(f"ignored keys (derived or not images): {self.ignored}")
        failed = sum(self.failed.values())
        out.append(f"failed: {failed}" + ("" if not failed else " (" + ", ".join(
            f"{reason}: {n}" for reason, n in sorted(self.failed.items())) + ")"))
        if self.interrupted:
            out.append("interrupted: rerun the same command to resume")
        return out


def originals_under(service, storage, prefix: str, summary: BackfillSummary | None = None) -> Iterator:
    """Listed objects under ``prefix`` that are originals (not derived keys, image extensions)."""
    for obj in storage.list(prefix):
        if obj.key.endswith("/") or not is_image_key(obj.key) or looks_derived(service, obj.key):
            if summary is not None:
                summary.ignored += 1
            continue
        yield obj


def backfill(service, bucket: str, prefix: str = "", *, presets: list[str] | None = None, dry_run: bool = False,
             workers: int = 4, on_done: Callable[[str, BackfillSummary], None] | None = None,
             storage=None) -> BackfillSummary:
    """Pre-generate what is missing for every original under ``bucket/prefix``.

    At most ``workers`` originals are rendered at once and at most twice that
    many are queued, however long the listing.  ``on_done(key, summary)`` is
    called in the calling thread after each original (the progress bar).
    KeyboardInterrupt stops submitting, lets the renders under way finish
    (their stores complete) and returns the summary so far, ``interrupted``.
    """
    if workers < 1:
        raise MaintenanceError("--workers must be at least 1")
    unknown = [name for name in presets or () if service.catalog.preset(name) is None]
    if unknown:
        raise MaintenanceError(f"unknown preset {', '.join(unknown)} (RESIZE_PRESETS defines "
                               f"{', '.join(service.settings.presets) or 'none'})")
    storage = storage if storage is not None else service.storage.for_bucket(bucket)
    summary = BackfillSummary()
    listing = originals_under(service, storage, prefix, summary)
    if dry_run:
        names = list(presets or service.settings.event_preset_names)
        for obj in listing:
            missing = [name for name in names if not service.holds_rendering(
                *service.destination(obj.key, name, bucket), obj.etag)]
            summary.originals += 1
            summary.skipped += len(names) - len(missing)
            if missing:
                summary.would_process.append(f"{obj.key}\t{','.join(missing)}")
        return summary

    def handle(future: Future, progress: bool = True) -> None:
        key = future.key  # type: ignore[attr-defined]
        summary.originals += 1
        try:
            result = future.result()
        except ResizeError as exc:
            summary.failed[f"{exc.status} {type(exc).__name__}"] += 1
            log.warning("backfill failed for an original", extra={"fields": {
                "key": key, "status": exc.status, "error": type(exc).__name__, "detail": exc.detail}})
        except Exception as exc:  # a bug: count it, keep going
            summary.failed[f"error {type(exc).__name__}"] += 1
            log.error("backfill failed unexpectedly for an original", exc_info=exc, extra={"fields": {"key": key}})
        else:
            if result.skipped:
                summary.skipped_keys += 1
            for *_, state in result.outputs:
                if state == "rendered":
                    summary.rendered += 1
                else:
                    summary.skipped += 1
        if progress and on_done is not None:
            on_done(key, summary)

    pending: set[Future] = set()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="backfill")
    try:
        for obj in listing:
            while len(pending) >= 2 * workers:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    pending.discard(future)  # before handle(): a Ctrl-C in it must not lose the others
                    handle(future)
            # The listing's ETag lets pregenerate skip the GET when every output is there (a cheap resume).
            future = pool.submit(service.pregenerate, obj.key, bucket=bucket, presets=presets,
                                 source_etag=obj.etag or None)
            future.key = obj.key  # type: ignore[attr-defined]
            pending.add(future)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                pending.discard(future)
                handle(future)
    except KeyboardInterrupt:
        summary.interrupted = True
        not_started = {f for f in pending if f.cancel()}
        # The renders under way finish (a half-done original is never left: each
        # output is stored whole or not at all), and are counted.
        for future in pending - not_started:
            future.exception()  # waits for it
            handle(future, progress=False)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return summary


# ---- access logs ------------------------------------------------------------------


def read_log_entries(storage, prefix: str, since: datetime | None = None,
                     errors: list[str] | None = None) -> Iterator[LogEntry]:
    """Every record in the log objects under ``prefix`` (newer than ``since`` when given).

    A log object is written after the requests it records, so one last
    modified before ``since`` holds nothing newer and is not read at all.
    """
    for obj in storage.list(prefix):
        if since is not None and obj.last_modified is not None and obj.last_modified < since:
            continue
        data = storage.get(obj.key, MAX_LOG_OBJECT_BYTES).data
        for entry in parse_lines(data.decode("utf-8", "replace").splitlines(), errors):
            if since is None or entry.time >= since:
                yield entry


@dataclass
class WarmSummary:
    candidates: list[tuple[str, int]] = field(default_factory=list)  # (key, misses), most missed first
    rendered: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # missed then, stored since
    failed: Counter = field(default_factory=Counter)
    log_errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        failed = sum(self.failed.values())
        return [f"missed derived keys in the logs: {len(self.candidates)}",
                f"rendered: {len(self.rendered)}", f"already present: {len(self.present)}",
                f"failed: {failed}" + ("" if not failed else " (" + ", ".join(
                    f"{r}: {n}" for r, n in sorted(self.failed.items())) + ")"),
                f"unparseable log lines: {len(self.log_errors)}"]


def count_misses(service, entries: Iterable[LogEntry], bucket: str) -> Counter:
    """Website misses (404/403, or the RoutingRule's redirect) per key that parses as derived."""
    misses: Counter = Counter()
    for entry in entries:
        if entry.is_miss and entry.key and entry.bucket == bucket and looks_derived(service, entry.key):
            misses[entry.key] += 1
    return misses


def warm(service, log_storage, log_prefix: str, *, since_seconds: float, top: int, dry_run: bool = False,
         now: datetime | None = None, storage=None) -> WarmSummary:
    """Render ahead of time the ``top`` derived keys most often missed and still missing."""
    if top < 1:
        raise MaintenanceError("--top must be at least 1")
    storage = storage if storage is not None else service.storage
    now = now or datetime.now(timezone.utc)
    summary = WarmSummary()
    entries = read_log_entries(log_storage, log_prefix, now - timedelta(seconds=since_seconds), summary.log_errors)
    misses = count_misses(service, entries, storage.bucket)
    summary.candidates = sorted(misses.items(), key=lambda item: (-item[1], item[0]))
    for key, _count in summary.candidates:
        if len(summary.rendered) >= top:
            break
        try:
            service.request_for(key)  # the policy (allowed sizes, presets, prefixes) still allows it
            if storage.head(key) is not None:
                summary.present.append(key)
                continue
            if not dry_run:
                service.resize_key(key)
            summary.rendered.append(key)
        except ResizeError as exc:
            summary.failed[f"{exc.status} {type(exc).__name__}"] += 1
            log.warning("warm-up failed for a key", extra={"fields": {
                "key": key, "status": exc.status, "error": type(exc).__name__, "detail": exc.detail}})
    if not service.drain():
        log.error("store queue not drained")
    return summary


@dataclass
class PruneSummary:
    deleted: list[tuple[str, int]] = field(default_factory=list)  # (key, bytes); "would delete" on --dry-run
    kept_recent: int = 0  # requested (or created) within the window
    kept_originals: int = 0  # no derived-from metadata
    log_errors: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def deleted_bytes(self) -> int:
        return sum(size for _, size in self.deleted)

    def lines(self) -> list[str]:
        verb = "would delete" if self.dry_run else "deleted"
        return [f"{verb}: {len(self.deleted)} derived objects, {self.deleted_bytes} bytes",
                f"kept (requested or created recently): {self.kept_recent}",
                f"kept (originals, no derived-from metadata): {self.kept_originals}",
                f"unparseable log lines: {len(self.log_errors)}"]


def prune(service, log_storage, log_prefix: str, *, unused_days: float, prefix: str = "", dry_run: bool = False,
          now: datetime | None = None, storage=None) -> PruneSummary:
    """Delete derived objects under ``prefix`` that nobody requested in ``unused_days`` days.

    Refuses to run when the logs do not reach back ``unused_days`` days: with
    missing or misdirected logs every derived object would look unused.
    """
    if unused_days <= 0:
        raise MaintenanceError("--unused-days must be positive")
    storage = storage if storage is not None else service.storage
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(days=unused_days)
    summary = PruneSummary(dry_run=dry_run)
    last_read: dict[str, datetime] = {}
    earliest: datetime | None = None
    for entry in read_log_entries(log_storage, log_prefix, None, summary.log_errors):
        if entry.bucket != storage.bucket:
            continue
        earliest = entry.time if earliest is None else min(earliest, entry.time)
        if entry.key and entry.is_object_read and entry.http_status in (200, 206, 304):
            if entry.key not in last_read or entry.time > last_read[entry.key]:
                last_read[entry.key] = entry.time
    if earliest is None or earliest > cutoff:
        raise MaintenanceError(
            f"the access logs under {log_prefix or '/'} for bucket {storage.bucket} "
            + ("have no records" if earliest is None else f"start at {earliest:%Y-%m-%d %H:%M}")
            + f", not {unused_days:g} days back: refusing to prune")
    for obj in storage.list(prefix):
        recent = (obj.last_modified is not None and obj.last_modified >= cutoff) or (
            last_read.get(obj.key, cutoff) > cutoff)
        if recent:
            summary.kept_recent += 1
            continue
        info = storage.head(obj.key)
        if info is None:
            continue
        if "derived-from" not in (info.metadata or {}):
            summary.kept_originals += 1
            continue
        if not dry_run:
            storage.delete(obj.key)
        summary.deleted.append((obj.key, obj.size))
        log.info("pruned" if not dry_run else "would prune", extra={"fields": {"key": obj.key, "bytes": obj.size}})
    return summary
