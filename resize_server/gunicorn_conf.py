"""gunicorn settings: ``gunicorn -c python:resize_server.gunicorn_conf wsgi:app``.

gthread workers: Wand calls release the GIL, so threads in one process render
in parallel; each worker's ``RenderGate`` bounds how many render at once and
how many may wait, and the threads beyond those answer 503 at once.
"""

import os

from resize_server.config import Settings
from resize_server.website import deploy_dir

_settings = Settings.from_env()

bind = os.environ.get("RESIZE_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("RESIZE_WORKERS", str(_settings.render_concurrency)))
worker_class = "gthread"
# Enough threads for the render slots, the waiting room and health checks; the
# gate, not gunicorn's backlog, decides who waits and who gets a 503.
threads = int(os.environ.get("RESIZE_THREADS", str(_settings.render_concurrency + _settings.queue_size + 4)))
timeout = 60
# A backstop against slow memory growth in native code: recycle a worker after
# this many requests (jittered so workers do not restart together; graceful, so
# its queued stores are written first).
max_requests = 20000
max_requests_jitter = 2000
# SIGTERM: in-flight requests finish, then worker_exit stores what is queued;
# both must fit before the arbiter's SIGKILL at graceful_timeout.
graceful_timeout = 60
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
    import sys

    print("resize-server: deploy/policy.xml not found and MAGICK_CONFIGURE_PATH unset: "
          "ImageMagick runs with the system policy only", file=sys.stderr)


def worker_exit(server, worker):
    """Graceful stop (SIGTERM, SIGHUP, scale-in): store every rendered image before exiting."""
    app = getattr(worker, "wsgi", None)
    service = getattr(app, "extensions", {}).get("resize") if app is not None else None
    if service is not None:
        drained = service.drain(timeout=20)
        server.log.info("store queue drained" if drained else "store queue NOT drained before timeout")


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
