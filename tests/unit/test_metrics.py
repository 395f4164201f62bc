"""The metrics facade on prometheus-client: the declared table, the exposition, the storage wrapper."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from resize_server import metrics as metrics_module
from resize_server.errors import SourceNotFound
from resize_server.http import create_app
from resize_server.metrics import METRICS, Metrics, choose_multiprocess_dir, instrument_storage
from resize_server.storage.base import StoredObject
from resize_server.storage.memory import MemoryStorage
from tests.conftest import BUCKET, photo

ROOT = Path(__file__).resolve().parents[2]


def families(text: bytes | str) -> dict:
    """Parse an exposition with prometheus-client's own parser: {family name: family}."""
    if isinstance(text, bytes):
        text = text.decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(text, name: str, **labels) -> float | None:
    for family in families(text).values():
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def test_every_declared_metric_is_exposed_with_its_help_and_type():
    m = Metrics()
    exposed = families(m.render())
    for name, spec in METRICS.items():
        family_name = "resize_" + name.removesuffix("_total")
        assert family_name in exposed, name
        assert exposed[family_name].type == spec.kind
        assert exposed[family_name].documentation == spec.help


def test_names_recorded_in_the_code_are_all_declared():
    """Grep the package for metric calls: a name missing from the table would fail at run time."""
    used = set()
    pattern = re.compile(r"""\.(?:inc|observe|gauge)\(\s*["']([a-z0-9_]+)["']""")
    for path in (ROOT / "resize_server").rglob("*.py"):
        used |= set(pattern.findall(path.read_text()))
    assert used, "no metric calls found: the pattern is wrong"
    assert used <= set(METRICS), sorted(used - set(METRICS))


@pytest.mark.parametrize("call, error", [
    (lambda m: m.inc("no_such_total"), KeyError),
    (lambda m: m.observe("renders_total", 1.0, format="jpeg"), KeyError),  # a counter, not a histogram
    (lambda m: m.inc("renders_total"), ValueError),  # its label is missing
    (lambda m: m.inc("renders_total", format="jpeg", size="1"), ValueError),  # an undeclared label
    (lambda m: m.gauge("stores_total", lambda: 1), KeyError),
])
def test_undeclared_names_and_labels_are_refused(call, error):
    with pytest.raises(error):
        call(Metrics())


def test_counters_histograms_and_gauges_in_the_exposition():
    m = Metrics()
    m.inc("renders_total", format="jpeg")
    m.inc("renders_total", 2, format="jpeg")
    m.inc("renders_total", format="png")
    m.inc("worker_messages_total", outcome="dead_lettered")
    for value in (0.004, 0.2, 0.3, 40.0):
        m.observe("render_duration_seconds", value, format="jpeg")
    m.observe("source_bytes", 100_000)
    queue = [1, 2, 3]
    m.gauge("store_queue_pending", lambda: len(queue))

    text = m.render()
    assert sample(text, "resize_renders_total", format="jpeg") == 3
    assert sample(text, "resize_renders_total", format="png") == 1
    assert sample(text, "resize_worker_messages_total", outcome="dead_lettered") == 1
    assert sample(text, "resize_render_duration_seconds_count", format="jpeg") == 4
    assert sample(text, "resize_render_duration_seconds_sum", format="jpeg") == pytest.approx(40.504)
    assert sample(text, "resize_render_duration_seconds_bucket", format="jpeg", le="0.005") == 1
    assert sample(text, "resize_render_duration_seconds_bucket", format="jpeg", le="0.25") == 2
    assert sample(text, "resize_render_duration_seconds_bucket", format="jpeg", le="30.0") == 3
    assert sample(text, "resize_render_duration_seconds_bucket", format="jpeg", le="+Inf") == 4
    assert sample(text, "resize_source_bytes_bucket", le=str(float(128 << 10))) is None  # not a bucket edge
    assert sample(text, "resize_source_bytes_bucket", le=str(float(256 << 10))) == 1
    assert sample(text, "resize_store_queue_pending") == 3
    queue.clear()  # read at scrape time, not at registration
    assert sample(m.render(), "resize_store_queue_pending") == 0
    assert m.get("renders_total", format="jpeg") == 3
    assert m.get("render_duration_seconds_count", format="jpeg") == 4
    assert m.get("stores_total") == 0


def test_two_apps_in_one_process_count_separately(settings, storage):
    """No global registry: the tests build many apps, and each must start from zero."""
    first = create_app(settings, storage=storage)
    second = create_app(settings, storage=storage)
    first.test_client().get("/healthz")
    first.test_client().get("/healthz")
    second.test_client().get("/healthz")
    assert first.extensions["resize"].metrics.get("http_requests_total", route="healthz", status="200") == 2
    assert second.extensions["resize"].metrics.get("http_requests_total", route="healthz", status="200") == 1


def test_a_request_through_the_app_records_http_render_s3_and_gate_metrics(settings, storage, s3):
    s3.put_object(Bucket=BUCKET, Key="m/earth.jpg", Body=photo(), ContentType="image/jpeg")
    app = create_app(settings, storage=storage)
    client = app.test_client()
    assert client.get("/m/earth_200x200.jpg").status_code == 200
    assert client.get("/m/missing_200x200.jpg").status_code == 404
    app.extensions["resize"].drain(10)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.get_data(as_text=True)
    assert sample(text, "resize_http_requests_total", route="resize_path", status="200") == 1
    assert sample(text, "resize_http_requests_total", route="resize_path", status="404") == 1
    assert sample(text, "resize_errors_total", status="404") == 1
    assert sample(text, "resize_renders_total", format="jpeg") == 1
    assert sample(text, "resize_render_duration_seconds_count", format="jpeg") == 1
    assert sample(text, "resize_source_bytes_sum") == len(photo())
    # Every read was timed; all but the one of the existing source found nothing (the derived
    # keys, the missing source under each source extension); one write of the result.
    not_found = sample(text, "resize_s3_errors_total", operation="get", kind="SourceNotFound")
    assert not_found >= 2
    assert sample(text, "resize_s3_request_duration_seconds_count", operation="get") == not_found + 1
    assert sample(text, "resize_s3_request_duration_seconds_count", operation="put") == 1
    assert sample(text, "resize_stores_total") == 1
    assert sample(text, "resize_render_active") == 0
    assert sample(text, "resize_render_slots") == settings.render_concurrency
    assert sample(text, "resize_store_queue_pending") == 0


def test_storage_wrapper_times_calls_counts_errors_and_passes_the_rest_through():
    m = Metrics()
    inner = MemoryStorage()
    inner.add("a.jpg", b"x" * 10)
    storage = instrument_storage(inner, m)
    assert instrument_storage(storage, m) is storage  # wrapped once
    assert storage.get("a.jpg", 100).data == b"x" * 10
    with pytest.raises(SourceNotFound):
        storage.get("b.jpg", 100)
    storage.put(StoredObject("c.jpg", b"y", "image/jpeg", "", "STANDARD"))
    assert storage.gets == 2 and storage.puts == 1  # attributes of the wrapped storage
    assert inner.stored("c.jpg").data == b"y"
    assert m.get("s3_request_duration_seconds_count", operation="get") == 2
    assert m.get("s3_request_duration_seconds_count", operation="put") == 1
    assert m.get("s3_errors_total", operation="get", kind="SourceNotFound") == 1
    assert m.get("s3_errors_total", operation="put", kind="SourceNotFound") == 0


@pytest.mark.parametrize("environ, bind, expected, given", [
    ({"PROMETHEUS_MULTIPROC_DIR": "/srv/m"}, "127.0.0.1:8080", "/srv/m", True),
    ({"RUNTIME_DIRECTORY": "/run/resize-server"}, "127.0.0.1:8080", "/run/resize-server/prometheus", False),
    ({"RUNTIME_DIRECTORY": "/run/a:/run/b"}, "x", "/run/a/prometheus", False),
    ({}, "127.0.0.1:8080", "{tmp}/resize-server-prometheus-127.0.0.1_8080", False),
    ({}, "unix:/run/resize/gunicorn.sock", "{tmp}/resize-server-prometheus-unix_run_resize_gunicorn.sock", False),
    ({}, ["127.0.0.1:1", "127.0.0.1:2"], "{tmp}/resize-server-prometheus-127.0.0.1_1_127.0.0.1_2", False),
])
def test_the_multiprocess_dir(environ, bind, expected, given):
    import tempfile

    path, was_given = choose_multiprocess_dir(bind, environ)
    assert str(path) == expected.format(tmp=tempfile.gettempdir())
    assert was_given is given


def test_the_multiprocess_dir_is_emptied_at_start_and_removed_at_exit(tmp_path):
    folder = tmp_path / "prom"
    folder.mkdir()
    (folder / "counter_123.db").write_bytes(b"old")
    (folder / "notes.txt").write_text("not ours")
    metrics_module.reset_multiprocess_dir(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    metrics_module.remove_multiprocess_dir(folder)
    assert folder.exists()  # something else lives there: left alone
    (folder / "notes.txt").unlink()
    (folder / "gauge_livesum_9.db").write_bytes(b"old")
    metrics_module.remove_multiprocess_dir(folder)
    assert not folder.exists()


def test_a_dead_workers_counts_are_folded_into_the_archive_without_changing_the_totals(tmp_path):
    """The files are written the way multiprocess mode writes them, and read by the library's own collector."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.mmap_dict import MmapedDict, mmap_key
    from prometheus_client.multiprocess import MultiProcessCollector

    def write(kind: str, pid: int, values: list) -> None:
        db = MmapedDict(str(tmp_path / f"{kind}_{pid}.db"))
        for metric, sample_name, labels, v in values:
            db.write_value(mmap_key(metric, sample_name, list(labels), list(labels.values()), "help"), v, 0.0)
        db.close()

    def totals() -> dict:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(tmp_path))
        text = generate_latest(registry).decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    def requests(route, n):
        return ("resize_http_requests", "resize_http_requests_total", {"route": route, "status": "200"}, n)

    write("counter", 101, [requests("resize_php", 3), requests("healthz", 1)])
    write("counter", 102, [requests("resize_php", 5)])
    write("counter", 103, [requests("resize_php", 7)])
    write("histogram", 101, [("resize_render_duration_seconds", "resize_render_duration_seconds_count",
                              {"format": "jpeg"}, 2)])
    before = totals()
    assert before[("resize_http_requests_total", (("route", "resize_php"), ("status", "200")))] == 15

    metrics_module.compact_dead_process(tmp_path, 101)
    metrics_module.compact_dead_process(tmp_path, 102)
    metrics_module.compact_dead_process(tmp_path, 999)  # no files: nothing to do
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_103.db", "counter_archive.db",
                                                          "histogram_archive.db"]
    assert totals() == before
