"""Prometheus metrics through ``prometheus-client``: one table of every metric, one small facade.

Callers (the service, the HTTP layer, the worker) only use the facade:
``metrics.inc(name, amount=1, **labels)``, ``metrics.observe(name, value,
**labels)`` and ``metrics.gauge(name, read_fn)``; every name must be declared
in ``METRICS`` below with its labels, so a typo fails in the tests instead of
silently creating a new series.

Two modes, chosen per ``Metrics`` instance from the environment:

* **multiprocess** when ``PROMETHEUS_MULTIPROC_DIR`` is set (gunicorn sets it,
  see ``gunicorn_conf.py``): every worker process writes its values to
  memory-mapped files in that directory and a scrape of any one worker merges
  the files of all of them, so one scrape covers the whole server.  Gauges
  are read from their callables by a sampling thread (and after each request),
  because a scrape cannot call into another process.
* **single-process** otherwise (tests, the CLI, Lambda): a registry per
  ``Metrics`` instance, so building many apps in one process never collides.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

PREFIX = "resize_"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BYTES = (16 << 10, 64 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 5 << 20, 10 << 20, 20 << 20, 50 << 20)


@dataclass(frozen=True)
class Spec:
    kind: str  # "counter", "histogram" or "gauge"
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = _SECONDS
    # How a multiprocess scrape merges one gauge across processes; "livesum"
    # adds up the processes still alive (a dead worker's value is dropped).
    multiprocess_mode: str = "livesum"


# Every metric the code records, exported as ``resize_<name>``.
METRICS: dict[str, Spec] = {
    # HTTP (http/requestlog.py): every request, by Flask endpoint and status.
    "http_requests_total": Spec("counter", "HTTP requests answered, by route and status", ("route", "status")),
    "http_request_duration_seconds": Spec("histogram", "Time to answer a request (body excluded), by route",
                                          ("route",)),
    "errors_total": Spec("counter", "Error responses, by status (503: overloaded)", ("status",)),
    # Rendering (service.py).
    "renders_total": Spec("counter", "Images rendered, by output format", ("format",)),
    "partial_renders_total": Spec("counter", "Renders of truncated originals (served with a short Cache-Control)"),
    "render_duration_seconds": Spec("histogram", "Decode + resize + encode time, by output format", ("format",)),
    "source_bytes": Spec("histogram", "Size of the source images read for rendering", buckets=_BYTES),
    "render_active": Spec("gauge", "Renders running now (render-gate slots in use)"),
    "render_waiting": Spec("gauge", "Requests waiting for a render slot"),
    "render_slots": Spec("gauge", "Render-gate slots (capacity)"),
    # Sharing work (service.py, coordination.py).
    "singleflight_shared_total": Spec("counter", "Requests answered by another request's render in this process"),
    "singleflight_wait_seconds": Spec("histogram", "Time a request waited for another request's render"),
    "redis_lock_wait_seconds": Spec("histogram", "Time waited for another instance holding the Redis lock, by "
                                    "outcome (stored, timeout, unavailable)", ("outcome",)),
    "served_stored_total": Spec("counter", "Requests answered with the image another request or instance stored"),
    "redis_errors_total": Spec("counter", "Redis failures (the server falls back to local single-flight)"),
    # S3 (the storage wrapper below).
    "s3_request_duration_seconds": Spec("histogram", "S3 call latency, by operation (get = read, put = write)",
                                        ("operation",)),
    "s3_errors_total": Spec("counter", "Failed S3 calls, by operation and kind (the error class)",
                            ("operation", "kind")),
    # Storing results (service.py, flow.StoreQueue).
    "stores_total": Spec("counter", "Rendered images stored to S3"),
    "store_failures_total": Spec("counter", "Stores that failed (the client was served anyway)"),
    "store_inline_total": Spec("counter", "Stores done in the request because the store queue was full"),
    "store_queue_pending": Spec("gauge", "Rendered images waiting to be stored"),
    # The event worker (pre-generation on upload).
    "worker_messages_total": Spec("counter", "Queue messages handled by the event worker, by outcome "
                                  "(processed, failed, dead_lettered)", ("outcome",)),
    # The event worker and Lambda (events/, appended by the events helper).
    "worker_messages_received_total": Spec("counter", "Queue messages received by the event worker"),
    "worker_queue_errors_total": Spec("counter", "Failed SQS calls of the event worker, by operation "
                                      "(receive, delete, change_visibility)", ("operation",)),
    "worker_visibility_extended_total": Spec("counter", "Visibility extensions of messages still being worked on"),
    "events_total": Spec("counter", "S3 event records handled (worker and Lambda), by result: done, skipped, "
                         "derived-key, test-event, not-created, malformed, transient, permanent, error", ("result",)),
    "events_dropped_total": Spec("counter", "Event records dropped as permanently bad, by status "
                                 "(404 source gone, 413, 415, 422)", ("status",)),
}
WORKER_OUTCOMES = ("processed", "failed", "dead_lettered")


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def choose_multiprocess_dir(bind: str, environ=None) -> tuple[Path, bool]:
    """Where gunicorn's workers keep their metric files, and whether the operator chose it.

    ``PROMETHEUS_MULTIPROC_DIR`` if set; else systemd's ``RuntimeDirectory``
    (``$RUNTIME_DIRECTORY/prometheus``, gone when the service stops); else a
    folder in the temporary directory named after the bind address, so each
    server on a host has its own and a restart finds (and empties) the same one.
    """
    environ = os.environ if environ is None else environ
    given = environ.get(MULTIPROC_ENV)
    if given:
        return Path(given), True
    runtime = (environ.get("RUNTIME_DIRECTORY") or "").split(":")[0]
    if runtime:
        return Path(runtime) / "prometheus", False
    bind = bind if isinstance(bind, str) else ",".join(bind)
    name = re.sub(r"[^A-Za-z0-9.]+", "_", bind).strip("_") or "default"
    return Path(tempfile.gettempdir()) / f"resize-server-prometheus-{name}", False


def reset_multiprocess_dir(path: Path) -> None:
    """Create the folder and delete a previous run's metric files (they would add old counts)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for old in path.glob("*.db"):
        old.unlink(missing_ok=True)


def compact_dead_process(path: Path, pid: int) -> None:
    """Fold a dead worker's counter and histogram files into one archive file per type.

    Its counts must stay in the totals (a counter that drops looks like a reset
    to Prometheus), but one file per dead worker would pile up: gunicorn
    recycles workers (``max_requests``), and every scrape reads every file.
    The archive is a file of the library's own format (``counter_archive.db``),
    which the multiprocess collector sums like any other.  Runs in the master.
    """
    from prometheus_client.mmap_dict import MmapedDict

    for kind in ("counter", "histogram"):
        dead = path / f"{kind}_{pid}.db"
        if not dead.exists():
            continue
        archive = MmapedDict(str(path / f"{kind}_archive.db"))
        try:
            for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(dead)):
                total, _ = archive.read_value(key)
                archive.write_value(key, total + value, timestamp)
        finally:
            archive.close()
        dead.unlink()


def remove_multiprocess_dir(path: Path) -> None:
    reset_multiprocess_dir(path)
    try:
        path.rmdir()
    except OSError:  # something else lives there: leave it
        pass


class Metrics:
    """The facade over prometheus-client; one per service (and so per app)."""

    def __init__(self, *, multiprocess: bool | None = None, sample_interval: float = 1.0) -> None:
        import prometheus_client as prom
        from prometheus_client import values

        self._prom = prom
        self.multiprocess = bool(multiprocess_dir()) if multiprocess is None else multiprocess
        if self.multiprocess and values.ValueClass is values.MutexValue:
            # prometheus-client picks its value store when first imported: the
            # variable must be set before that (gunicorn_conf.py does it).
            raise RuntimeError(f"{MULTIPROC_ENV} was set after prometheus_client was imported")
        self.registry = prom.CollectorRegistry(auto_describe=True)
        self._metrics = {name: self._create(name, spec) for name, spec in METRICS.items()}
        self._readers: dict[str, Callable[[], float]] = {}
        self._sample_interval = sample_interval
        self._sampler_pid: int | None = None
        self._lock = threading.Lock()

    def _create(self, name: str, spec: Spec):
        prom = self._prom
        full = PREFIX + name
        if spec.kind == "counter":
            return prom.Counter(full, spec.help, spec.labels, registry=self.registry)
        if spec.kind == "histogram":
            return prom.Histogram(full, spec.help, spec.labels, buckets=spec.buckets, registry=self.registry)
        if spec.kind == "gauge":
            return prom.Gauge(full, spec.help, spec.labels, registry=self.registry,
                              multiprocess_mode=spec.multiprocess_mode)
        raise ValueError(f"metric {name}: unknown kind {spec.kind!r}")

    def _child(self, name: str, kind: str, labels: dict):
        spec = METRICS.get(name)
        if spec is None or spec.kind != kind:
            raise KeyError(f"{name} is not a declared {kind} (see METRICS in resize_server/metrics.py)")
        metric = self._metrics[name]
        if set(labels) != set(spec.labels):
            raise ValueError(f"{name} takes labels {spec.labels}, got {tuple(labels)}")
        return metric.labels(**{k: str(v) for k, v in labels.items()}) if spec.labels else metric

    # ---- recording -------------------------------------------------------

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        self._child(name, "counter", labels).inc(amount)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._child(name, "histogram", labels).observe(value)

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """Register a callable giving a gauge's current value (read at scrape time, or sampled)."""
        gauge = self._child(name, "gauge", {})
        with self._lock:
            self._readers[name] = read
        if self.multiprocess:
            gauge.set(float(read()))
            self._ensure_sampler()
        else:
            gauge.set_function(lambda: float(read()))

    def sample_gauges(self) -> None:
        """Write every gauge's current value (multiprocess mode: other processes read the files)."""
        if not self.multiprocess:
            return
        with self._lock:
            readers = list(self._readers.items())
        for name, read in readers:
            try:
                self._metrics[name].set(float(read()))
            except Exception:  # a gauge must never break a request or the sampler
                log.exception("gauge read failed", extra={"fields": {"gauge": name}})

    def _ensure_sampler(self) -> None:
        # One sampler per process (a forked child starts its own).
        with self._lock:
            if self._sampler_pid == os.getpid():
                return
            self._sampler_pid = os.getpid()
        threading.Thread(target=self._sample_forever, name="metrics-sampler", daemon=True).start()

    def _sample_forever(self) -> None:
        while True:
            time.sleep(self._sample_interval)
            self.sample_gauges()

    # ---- reading ---------------------------------------------------------

    def get(self, name: str, **labels: str) -> float:
        """This process's current value of a sample, e.g. ``get("errors_total", status="502")``
        or ``get("render_duration_seconds_count", format="jpeg")``; 0 if never recorded."""
        value = self.registry.get_sample_value(PREFIX + name, {k: str(v) for k, v in labels.items()})
        return value or 0

    @property
    def content_type(self) -> str:
        return self._prom.exposition.CONTENT_TYPE_PLAIN_0_0_4

    def render(self) -> bytes:
        """The Prometheus text exposition: in multiprocess mode, merged over every process."""
        if not self.multiprocess:
            return self._prom.generate_latest(self.registry)
        from prometheus_client import multiprocess

        self.sample_gauges()  # this process's gauges fresh; the others' are at most one interval old
        registry = self._prom.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return self._prom.generate_latest(registry)


class InstrumentedStorage:
    """A storage wrapper that times S3 calls and counts their errors by kind.

    Everything else (``client``, ``bucket``, ``check``, ``list``...) is passed
    through unchanged; ``for_bucket`` returns a wrapped storage too.
    """

    _TIMED = {"get": "get", "put": "put", "head": "head", "delete": "delete"}

    def __init__(self, storage, metrics: Metrics) -> None:
        self.__dict__["_inner"] = storage
        self.__dict__["_metrics"] = metrics

    @property
    def inner(self):
        return self._inner

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        operation = self._TIMED.get(name)
        if operation is not None and callable(attr):
            return self._timed(operation, attr)
        if name == "for_bucket" and callable(attr):
            return lambda *args, **kwargs: InstrumentedStorage(attr(*args, **kwargs), self._metrics)
        return attr

    def __setattr__(self, name: str, value) -> None:
        setattr(self._inner, name, value)

    def _timed(self, operation: str, fn):
        metrics = self._metrics

        def call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                metrics.inc("s3_errors_total", operation=operation, kind=type(exc).__name__)
                raise
            finally:
                metrics.observe("s3_request_duration_seconds", time.perf_counter() - started, operation=operation)

        return call


def instrument_storage(storage, metrics: Metrics):
    """Wrap ``storage`` once (idempotent)."""
    if isinstance(storage, InstrumentedStorage):
        return storage
    return InstrumentedStorage(storage, metrics)
