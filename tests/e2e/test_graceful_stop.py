"""A graceful stop is bounded and loses no store, even with a client lingering on a connection.

Measured before (gunicorn reached directly): one connection that had sent a single byte kept
the master alive for the full 61.7 s, and the worker was killed before its store-drain hook
ran.  Here the stores are slowed down (a delaying link between gunicorn and s3rver) so they
are still queued when SIGTERM arrives.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import dimensions, photo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
GRACEFUL_TIMEOUT = 10  # RESIZE_GRACEFUL_TIMEOUT: half of it is kept for the store drain
KEYS = 6
PUT_DELAY = 0.4


class SlowPuts:
    """A TCP relay to s3rver that holds every PUT request for ``delay`` seconds (a slow S3 write)."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port, self.delay = target_port, delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            for src, dst, slow in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(src, dst, slow), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, slow: bool) -> None:
        try:
            while data := src.recv(65536):
                if slow and data.startswith(b"PUT "):
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def slow_puts(s3rver):
    relay = SlowPuts(s3rver, PUT_DELAY)
    yield relay
    relay.close()


@pytest.mark.parametrize("linger_on", ["nginx", "gunicorn"])
def test_sigterm_with_a_lingering_client_stores_everything_within_the_drain_time(make_front, slow_puts, linger_on):
    front = make_front(f"stop-{linger_on}", RESIZE_S3_ENDPOINT_URL=f"http://127.0.0.1:{slow_puts.port}",
                       RESIZE_GRACEFUL_TIMEOUT=str(GRACEFUL_TIMEOUT), RESIZE_STARTUP_CHECK="false")
    for i in range(KEYS):
        front.client.put_object(Bucket=front.bucket, Key=f"stop/p{i}.jpg", Body=photo("Landscape_1.jpg"),
                                ContentType="image/jpeg")
    keys = [f"stop/p{i}_200x200.jpg" for i in range(KEYS)]

    # A client that sent one byte and then nothing: on nginx's port, or on gunicorn's socket itself.
    if linger_on == "nginx":
        lingering = socket.create_connection(("127.0.0.1", front.resize_port))
    else:
        lingering = socket.socket(socket.AF_UNIX)
        lingering.connect(str(front.socket_path))
    lingering.sendall(b"G")
    try:
        with ThreadPoolExecutor(KEYS) as pool:
            responses = list(pool.map(
                lambda k: requests.get(f"{front.resize_url}/resize.php?src={k}", timeout=30), keys))
        assert [r.status_code for r in responses] == [200] * KEYS
        gunicorn = front.procs["gunicorn"]
        t0 = time.monotonic()
        gunicorn.send_signal(signal.SIGTERM)  # the master, as systemd's stop does
        gunicorn.wait(GRACEFUL_TIMEOUT + 10)
        took = time.monotonic() - t0
    finally:
        lingering.close()

    log = front.log_path.read_text()
    drained = re.findall(r"store queue (drained|NOT drained before timeout): (\d+) pending at stop", log)
    assert drained and drained[-1][0] == "drained", log[-2000:]
    if linger_on == "nginx":
        # The stores were still queued when SIGTERM came (each PUT takes PUT_DELAY s).
        assert int(drained[-1][1]) >= 1, drained
    assert took < GRACEFUL_TIMEOUT, f"stop took {took:.1f}s"
    print(f"lingering on {linger_on}: stop took {took:.2f}s, {drained[-1][1]} stores pending at SIGTERM")
    for key, response in zip(keys, responses):
        stored = front.client.get_object(Bucket=front.bucket, Key=key)["Body"].read()
        assert stored == response.content
        assert dimensions(stored) == ("JPEG", 200, 133)
