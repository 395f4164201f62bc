"""/metrics under real gunicorn with 2 workers: one scrape covers both (prometheus multiprocess mode)."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from resize_server import devstack
from tests.conftest import photo

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CONCURRENCY = 2


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0)


def fetch(url: str) -> requests.Response:
    with requests.Session() as session:  # a new connection each time, so the kernel spreads them
        return session.get(url, timeout=30)


@pytest.fixture
def server(s3rver, tmp_path):
    port = devstack.free_port()
    client = devstack.s3rver_client(s3rver)
    devstack.prepare_bucket(client, "prom", f"127.0.0.1:{port}")
    client.put_object(Bucket="prom", Key="mp/earth.jpg", Body=photo(), ContentType="image/jpeg")
    log_path = tmp_path / "gunicorn.log"
    env = {**devstack.server_env(s3rver, "prom"), "MAGICK_CONFIGURE_PATH": str(ROOT / "deploy"),
           "RESIZE_WORKERS": "2", "RESIZE_RENDER_CONCURRENCY": str(CONCURRENCY)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with open(log_path, "wb") as log:
        proc = devstack.start_gunicorn(port, env, log_file=log)
    try:
        yield proc, f"http://127.0.0.1:{port}", log_path, port
    finally:
        devstack.stop(proc)
        assert proc.poll() is not None


def worker_pids(log_path: Path) -> set[int]:
    import json

    pids = set()
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"msg": "request"' in line:
            pids.add(json.loads(line)["pid"])
    return pids


def test_one_scrape_sums_the_counters_of_both_workers(server):
    proc, url, log_path, port = server
    folder = Path(tempfile.gettempdir()) / f"resize-server-prometheus-127.0.0.1_{port}"
    assert folder.is_dir()

    # Misses (404, no render) until both workers have answered some; bounded in rounds.
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        for _ in range(5):
            responses = list(pool.map(fetch, [f"{url}/mp/missing{sent + i}_200x200.jpg" for i in range(40)]))
            assert [r.status_code for r in responses] == [404] * 40
            sent += 40
            if len(worker_pids(log_path)) >= 2:
                break
        renders = list(pool.map(fetch, [f"{url}/resize.php?src=mp/earth_{s}x{s}.jpg" for s in (50, 100, 200, 400)]))
    assert [r.status_code for r in renders] == [200] * 4
    pids = worker_pids(log_path)
    assert len(pids) == 2, "the requests did not reach both workers"

    for _ in range(4):  # whichever worker answers the scrape, it reports both
        scrape = samples(requests.get(url + "/metrics", timeout=5).text)
        assert value(scrape, "resize_http_requests_total", route="resize_path", status="404") == sent
        assert value(scrape, "resize_errors_total", status="404") == sent
        assert value(scrape, "resize_s3_errors_total", operation="get", kind="SourceNotFound") >= sent
        assert value(scrape, "resize_http_requests_total", route="resize_php", status="200") == 4
        assert value(scrape, "resize_renders_total", format="jpeg") == 4
        assert value(scrape, "resize_render_duration_seconds_count", format="jpeg") == 4
        assert value(scrape, "resize_source_bytes_count") == 4
        assert value(scrape, "resize_render_slots") == 2 * CONCURRENCY  # livesum over both workers
        assert value(scrape, "resize_render_active") == 0
    assert any(folder.glob("counter_*.db"))

    # A worker that dies leaves the live gauges (child_exit); its counts stay in the totals...
    dead = sorted(pids)[0]
    os.kill(dead, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while any(folder.glob(f"gauge_livesum_{dead}.db")):
        assert time.monotonic() < deadline, "the dead worker's gauges were not removed"
        time.sleep(0.1)
    devstack.wait_for_port(port, proc)
    deadline = time.monotonic() + 20
    while True:  # the master replaces the worker; the sum is again two workers' slots, not three
        scrape = samples(fetch(url + "/metrics").text)
        if value(scrape, "resize_render_slots") == 2 * CONCURRENCY and len(list(folder.glob("gauge_livesum_*.db"))) == 2:
            break
        assert time.monotonic() < deadline, value(scrape, "resize_render_slots")
        time.sleep(0.2)
    assert value(scrape, "resize_http_requests_total", route="resize_path", status="404") == sent
    assert value(scrape, "resize_renders_total", format="jpeg") == 4
    # ... folded into the archive file, not left as one file per dead worker
    assert not (folder / f"counter_{dead}.db").exists() and (folder / "counter_archive.db").exists()

    devstack.stop(proc)
    assert not folder.exists(), "the metrics folder outlived the server"
