"""A fleet (issue 11.7): two resize-server instances behind nginx as the load balancer.

Round robin, ``proxy_next_upstream error timeout`` (what an ALB does for a target that
resets connections), one shared real redis-server (RESIZE_REDIS_URL) and s3rver.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from resize_server import devstack
from tests.conftest import dimensions
from tests.e2e.conftest import ROOT, Stack, start_redis, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
BUCKET = "fleet"
REQUESTS = 50

LB_CONF = """
daemon off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {run}/client_body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    access_log off;
    upstream fleet {{
        server 127.0.0.1:{port1} max_fails=1 fail_timeout=2s;
        server 127.0.0.1:{port2} max_fails=1 fail_timeout=2s;
    }}
    server {{
        listen 127.0.0.1:{lb_port};
        location / {{
            proxy_pass http://fleet;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def fleet(s3rver, tmp_path_factory):
    logs = tmp_path_factory.mktemp("fleet")
    run_dir = Path(tempfile.mkdtemp(prefix="resize-fleet-"))
    procs: list = []
    try:
        redis_port = devstack.free_port()
        with open(logs / "redis.log", "wb") as log:
            procs.append(start_redis(redis_port, log))
        client = devstack.s3rver_client(s3rver)
        lb_port = devstack.free_port()
        devstack.prepare_bucket(client, BUCKET, f"127.0.0.1:{lb_port}")
        env = {**devstack.server_env(s3rver, BUCKET), "MAGICK_CONFIGURE_PATH": str(ROOT / "deploy"),
               "RESIZE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "RESIZE_REDIS_WAIT": "5",
               "RESIZE_REDIS_LOCK_MS": "10000", "RESIZE_QUEUE_TIMEOUT": "30",
               "RESIZE_ALLOWED_SIZES": "400x400",
               # A render that takes long enough (a 2048 px output, then a blur: ~2 s here, still
               # several hundred ms on a machine a few times faster) for the kill to land mid-run.
               "RESIZE_PRESETS": "slow=2048x2048,blur=5"}
        instances = []
        for i in (1, 2):
            port = devstack.free_port()
            log_path = logs / f"instance{i}.log"
            with open(log_path, "wb") as log:
                proc = devstack.start_gunicorn(port, env, log_file=log)
            procs.append(proc)
            instances.append(Stack(s3rver, port, client, log_path, BUCKET, {"gunicorn": proc}))
        conf = LB_CONF.format(run=run_dir, port1=instances[0].resize_port, port2=instances[1].resize_port,
                              lb_port=lb_port)
        procs.append(devstack.start_nginx(conf, run_dir, [lb_port]))
        yield {"lb": f"http://127.0.0.1:{lb_port}", "instances": instances, "client": client,
               "redis_port": redis_port, "env": env, "procs": procs}
    finally:
        for proc in reversed(procs):
            devstack.stop(proc)
            assert proc.poll() is not None
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def earth():
    return devstack.sample_images()["samples/earth.jpg"][0]  # 13.5 MP: a render takes a while


def served(instances, key: str) -> list[dict]:
    return [e for s in instances for e in s.log_events() if e.get("key") == key and e.get("msg") == "request"]


def burst(url: str, during=None) -> list[requests.Response]:
    with ThreadPoolExecutor(REQUESTS) as pool:
        futures = [pool.submit(requests.get, url, timeout=60) for _ in range(REQUESTS)]
        if during is not None:
            during()
        return [f.result() for f in futures]


def test_50_concurrent_requests_for_one_new_key_render_once_across_the_fleet(fleet, earth):
    fleet["client"].put_object(Bucket=BUCKET, Key="a/earth.jpg", Body=earth, ContentType="image/jpeg")
    key = "a/earth_400x400.jpg"
    responses = burst(f"{fleet['lb']}/resize.php?src={key}")

    assert [r.status_code for r in responses] == [200] * REQUESTS
    assert len({r.content for r in responses}) == 1
    assert dimensions(responses[0].content) == ("JPEG", 400, 267)
    assert len({r.headers["X-Upstream"] for r in responses}) == 2  # round robin: both instances answered
    wait_until(lambda: any(e.get("msg") == "stored" and e.get("key") == key
                           for s in fleet["instances"] for e in s.log_events()), 15)
    time.sleep(0.3)
    sources = [e["outcome"] for e in served(fleet["instances"], key)]
    assert len(sources) == REQUESTS
    assert sources.count("rendered") == 1, sources


@pytest.fixture
def victim(fleet):
    """The instance a test kills; replaced afterwards (as an autoscaling group would), pass or fail."""
    victim = fleet["instances"][0]
    yield victim
    if victim.procs["gunicorn"].poll() is None:
        return
    with open(victim.log_path, "ab") as log:
        victim.procs["gunicorn"] = devstack.start_gunicorn(victim.resize_port, fleet["env"], log_file=log)
    fleet["procs"].append(victim.procs["gunicorn"])
    # The balancer tries a failed server again after fail_timeout (2 s), with one request at a time
    # until one succeeds: wait until it routes to the new instance as usual.
    wait_until(lambda: _routed_to(fleet, victim, 4), 15, "the balancer never took the restarted instance back")


@pytest.mark.parametrize("victim_role", ["lock-holder", "waiter"])
def test_sigkill_of_one_instance_mid_run_loses_no_request(fleet, victim, earth, victim_role):
    """Kill the instance that renders (the other waits on its Redis lock), or the one that waits."""
    import redis

    key = f"{victim_role}/earth_slow.jpg"
    lock = f"resize-lock:{key}"
    fleet["client"].put_object(Bucket=BUCKET, Key=f"{victim_role}/earth.jpg", Body=earth, ContentType="image/jpeg")
    survivor = fleet["instances"][1]
    renderer = victim if victim_role == "lock-holder" else survivor
    proc = victim.procs["gunicorn"]
    locks = redis.Redis(port=fleet["redis_port"])
    # The primer's own connection, when it goes straight to the victim, is not one of the burst's.
    own = 1 if renderer is victim else 0

    # One request straight to the chosen instance takes the Redis lock and starts the render ...
    with ThreadPoolExecutor(1) as primer:
        primed = primer.submit(_get_quietly, f"{renderer.resize_url}/resize.php?src={key}")
        wait_until(lambda: locks.get(lock) is not None, 10, "the render never took the lock")

        def kill_victim_mid_run():
            # ... the burst comes in behind it; once the balancer has requests open on the victim,
            # and while the render still runs, the victim dies with no warning, master and worker.
            wait_until(lambda: _open_connections(victim.resize_port) > own, 10,
                       "the balancer never sent a request to the victim")
            still_running = locks.get(lock) is not None and _stored(fleet, key) is None
            os.killpg(proc.pid, signal.SIGKILL)
            assert still_running, "the render ended before the kill: this case needs a slower render"

        responses = burst(f"{fleet['lb']}/resize.php?src={key}", during=kill_victim_mid_run)
        primed.result()
    assert proc.wait(5) == -signal.SIGKILL

    statuses = [r.status_code for r in responses]
    assert statuses == [200] * REQUESTS, {s: statuses.count(s) for s in set(statuses)}
    for r in responses:
        assert dimensions(r.content) == ("JPEG", 2048, 1365)
    upstreams = [r.headers["X-Upstream"] for r in responses]
    retried = [u for u in upstreams if "," in u]  # "victim, survivor": nginx tried the next upstream
    assert retried, upstreams  # requests were in flight on the victim when it died ...
    assert all(u.endswith(f":{survivor.resize_port}") for u in upstreams), upstreams  # ... the survivor answered all
    print(f"{victim_role}: {len(retried)} of {REQUESTS} requests retried by the balancer after the kill")

    wait_until(lambda: _stored(fleet, key) is not None, 20, "the image was never stored")
    stored = _stored(fleet, key)
    assert dimensions(stored) == ("JPEG", 2048, 1365)  # complete: it decodes, with the right size
    assert stored in {r.content for r in responses}


def _open_connections(port: int) -> int:
    """Established TCP connections on the server side of 127.0.0.1:<port> (from /proc/net/tcp)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


def _routed_to(fleet, instance, n: int) -> bool:
    time.sleep(0.2)
    upstreams = [requests.get(f"{fleet['lb']}/healthz", timeout=5).headers["X-Upstream"] for _ in range(n)]
    return sum(u == f"127.0.0.1:{instance.resize_port}" for u in upstreams) == n // 2


def _get_quietly(url: str) -> int | None:
    try:
        return requests.get(url, timeout=60).status_code
    except requests.ConnectionError:
        return None  # its instance was killed under it: it was not sent through the balancer


def _stored(fleet, key: str) -> bytes | None:
    try:
        return fleet["client"].get_object(Bucket=BUCKET, Key=key)["Body"].read()
    except fleet["client"].exceptions.NoSuchKey:
        return None
