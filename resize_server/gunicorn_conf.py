"""gunicorn settings, the one source: ``gunicorn -c python:resize_server.gunicorn_conf wsgi:app``.

The production topology is nginx (deploy/nginx.conf) in front of this gunicorn
on a unix socket (``RESIZE_BIND=unix:/run/resize-server/gunicorn.sock``).

One gthread process owns every render slot.  Wand calls release the GIL, so
the threads of one process render on every core (bench/front_bench.py, in
BENCHMARKS.md); and one process means one ``RenderGate``, so the documented
capacity (``RESIZE_RENDER_CONCURRENCY + RESIZE_QUEUE_SIZE`` requests rendering
or waiting) holds however the kernel spreads connections.  With several
processes each has its own gate, and the kernel's uneven spread (44/7 measured)
refused requests well below the sum of their capacities.
"""

import logging
import os
import sys
import time

from resize_server.config import Settings
from resize_server.website import deploy_dir

_settings = Settings.from_env()

# RESIZE_BIND, RESIZE_WORKERS, RESIZE_THREADS, RESIZE_GRACEFUL_TIMEOUT: validated with the
# rest of the settings (a bad value stops here with the same message as check-config).
bind = _settings.bind
# Default 1 process (see above).  Threads: the render slots, the waiting room, and
# the requests that never render (health checks, stored reads, errors); the
# gate, not gunicorn's backlog, decides who waits and who gets a 503.
workers = _settings.gunicorn_workers
worker_class = "gthread"
threads = _settings.gunicorn_threads
timeout = 60
# A backstop against slow memory growth in native code: recycle a worker after
# this many requests (jittered so workers do not restart together; graceful, so
# its queued stores are written first).
max_requests = 20000
max_requests_jitter = 2000
# SIGTERM: the worker lets in-flight requests finish for at most
# graceful_timeout - STORE_DRAIN_S, then worker_exit stores what is still
# queued within STORE_DRAIN_S, so both fit before the master's SIGKILL at
# graceful_timeout.  (gunicorn gives the worker's wait and the master's kill
# the same timeout: a client that lingers on a connection, measured 61.7 s,
# would otherwise use all of it and the worker died before storing.)
graceful_timeout = _settings.graceful_timeout
STORE_DRAIN_S = max(1, min(20, graceful_timeout // 2))
# Longer than an ELB's default 60 s idle timeout, so the balancer closes idle
# connections first and never sends a request on a socket we are closing.
keepalive = 75
# Several servers may run on one host (tests, benchmarks); none needs gunicorn's control socket.
control_socket_disable = True
accesslog = None
errorlog = "-"
loglevel = os.environ.get("RESIZE_LOG_LEVEL", "info").lower()

# ImageMagick's OpenMP threads do not speed up thumbnails and fight the
# worker threads for cores; one per render is the measured best.
os.environ.setdefault("MAGICK_THREAD_LIMIT", "1")
# The restrictive ImageMagick policy shipped in deploy/ (coders, delegates, paths, resources).
_policy_dir = deploy_dir()
if _policy_dir is not None:
    os.environ.setdefault("MAGICK_CONFIGURE_PATH", str(_policy_dir))
elif "MAGICK_CONFIGURE_PATH" not in os.environ:
    print("resize-server: deploy/policy.xml not found and MAGICK_CONFIGURE_PATH unset: "
          "ImageMagick runs with the system policy only", file=sys.stderr)


def post_worker_init(worker):
    # In the worker process only (its own copy of the config): leave STORE_DRAIN_S
    # of the master's graceful_timeout to worker_exit.
    worker.cfg.set("graceful_timeout", max(1, graceful_timeout - STORE_DRAIN_S))


def worker_exit(server, worker):
    """Graceful stop (SIGTERM, SIGHUP, scale-in, max_requests), in the worker: store every rendered image, exit."""
    app = getattr(worker, "wsgi", None)
    service = getattr(app, "extensions", {}).get("resize") if app is not None else None
    if service is not None:
        pending = service.store_queue.pending()
        started = time.monotonic()
        drained = service.drain(timeout=STORE_DRAIN_S - 0.5)
        server.log.info("store queue %s: %d pending at stop, %.1f s",
                        "drained" if drained else "NOT drained before timeout", pending,
                        time.monotonic() - started)
    # Nothing is left to do; but a thread still blocked reading a lingering client
    # would keep the interpreter from exiting (it joins the thread pool) until the
    # master's SIGKILL at graceful_timeout.  Flush the logs and leave now.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


# ---- Prometheus multiprocess mode (metrics helper; see resize_server/metrics.py) ----
# Each worker writes its metrics to files in one directory and a scrape of any
# worker merges them all.  The directory: PROMETHEUS_MULTIPROC_DIR if set, else
# systemd's RuntimeDirectory ($RUNTIME_DIRECTORY/prometheus, removed by systemd
# when the service stops), else <tmp>/resize-server-prometheus-<bind>.  It is
# emptied when the server starts (old files would add a previous run's counts)
# and, unless it was given, removed when the master exits.  It must be set here,
# in the master, before any worker imports prometheus_client.
from resize_server import metrics as _metrics  # noqa: E402  (imports no prometheus_client itself)

_prometheus_dir, _prometheus_dir_given = _metrics.choose_multiprocess_dir(bind)
os.environ[_metrics.MULTIPROC_ENV] = str(_prometheus_dir)


def on_starting(server):
    _metrics.reset_multiprocess_dir(_prometheus_dir)
    server.log.info("prometheus multiprocess dir: %s", _prometheus_dir)


def child_exit(server, worker):
    """A dead worker's live gauges (render occupancy, queue depth) leave the sums; its counts stay,
    folded into one archive file so recycled workers do not pile up files."""
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, str(_prometheus_dir))
        _metrics.compact_dead_process(_prometheus_dir, worker.pid)
    except Exception:  # metrics bookkeeping must never take the master down
        server.log.exception("could not fold worker %s's metrics into the archive", worker.pid)


def on_exit(server):
    if not _prometheus_dir_given:
        _metrics.remove_multiprocess_dir(_prometheus_dir)
