"""Concurrency against real processes: gunicorn workers, s3rver and redis-server on loopback."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from resize_server import devstack
from tests.e2e.conftest import start_redis

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def earth_bytes():
    return devstack.sample_images()["samples/earth.jpg"][0]


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    port = devstack.free_port()
    with open(tmp_path_factory.mktemp("redis") / "redis.log", "wb") as log:
        proc = start_redis(port, log)
    yield port, proc
    devstack.stop(proc)


@pytest.fixture(scope="module")
def redis_stack(make_stack, redis_port):
    """Two worker processes sharing a Redis lock: like two instances behind a balancer."""
    port, _ = redis_port
    return make_stack("conc", RESIZE_WORKERS="2", RESIZE_REDIS_URL=f"redis://127.0.0.1:{port}/0")


def get_all(urls: list[str], workers: int) -> list[requests.Response]:
    def one(url):
        with requests.Session() as session:
            return session.get(url, timeout=60)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, urls))


def events_for(stack, key: str, msg: str) -> list[dict]:
    return [e for e in stack.log_events() if e.get("key") == key and e.get("msg") == msg]


def wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_100_concurrent_requests_for_one_new_key_render_and_store_once(redis_stack, earth_bytes):
    s = redis_stack
    s.client.put_object(Bucket=s.bucket, Key="one/earth.jpg", Body=earth_bytes, ContentType="image/jpeg")
    key = "one/earth_400x400.jpg"

    responses = get_all([f"{s.resize_url}/resize.php?src={key}"] * 100, workers=100)

    assert [r.status_code for r in responses] == [200] * 100
    bodies = {r.content for r in responses}
    assert len(bodies) == 1  # everyone got the same image
    wait_for(lambda: len(events_for(s, key, "stored")) >= 1)
    time.sleep(0.5)  # a second store, if there were one, would be logged by now
    served = events_for(s, key, "request")  # the one JSON line per request (http/requestlog.py)
    assert len(served) == 100
    assert len({e["request_id"] for e in served}) == 100
    renders = [e for e in served if e["outcome"] == "rendered"]
    assert len(renders) == 1, [e["outcome"] for e in served]
    assert len(events_for(s, key, "stored")) == 1
    # Both worker processes answered: the Redis lock, not only in-process single-flight, held
    # the other process back (it served the stored image instead of rendering).
    assert len({e["pid"] for e in served}) == 2
    other = {e["outcome"] for e in served if e["pid"] != renders[0]["pid"]}
    assert "stored-by-other" in other and other <= {"stored-by-other", "shared"}, other
    print({o: sum(e["outcome"] == o for e in served) for o in ("rendered", "shared", "stored-by-other")})
    stored = s.client.get_object(Bucket=s.bucket, Key=key)
    assert stored["Body"].read() == bodies.pop()


def test_requests_still_succeed_when_redis_dies_mid_run(redis_stack, redis_port, earth_bytes):
    s = redis_stack
    _, redis_proc = redis_port
    keys = []
    for i in range(24):
        s.client.put_object(Bucket=s.bucket, Key=f"kill/e{i}.jpg", Body=earth_bytes, ContentType="image/jpeg")
        keys.append(f"kill/e{i}_200x200.jpg")
    urls = [f"{s.resize_url}/resize.php?src={k}" for k in keys]

    with ThreadPoolExecutor(4) as pool:
        first = list(pool.map(lambda u: requests.get(u, timeout=60), urls[:8]))
        devstack.stop(redis_proc)  # Redis goes away mid-run
        assert redis_proc.poll() is not None
        rest = list(pool.map(lambda u: requests.get(u, timeout=60), urls[8:]))

    assert [r.status_code for r in first + rest] == [200] * 24
    unavailable = [e for e in s.log_events() if e.get("msg", "").startswith("redis unavailable")]
    assert unavailable, "the server should say that it fell back to local single-flight"


def test_overload_is_refused_at_once_with_retry_after(make_stack, earth_bytes):
    s = make_stack("busy", RESIZE_WORKERS="1", RESIZE_RENDER_CONCURRENCY="1", RESIZE_QUEUE_SIZE="1",
                   RESIZE_QUEUE_TIMEOUT="5")
    keys = []
    for i in range(12):
        s.client.put_object(Bucket=s.bucket, Key=f"busy/e{i}.jpg", Body=earth_bytes, ContentType="image/jpeg")
        keys.append(f"busy/e{i}_1024x1024.jpg")

    responses = get_all([f"{s.resize_url}/resize.php?src={k}" for k in keys], workers=12)

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses and 200 in statuses, statuses
    for r in responses:
        if r.status_code == 503:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.text == "server busy, retry later\n"
    # Every admitted request finished; nothing is left rendering or waiting.
    metrics = requests.get(s.resize_url + "/metrics", timeout=5).text
    assert "resize_render_active 0" in metrics and "resize_render_waiting 0" in metrics
