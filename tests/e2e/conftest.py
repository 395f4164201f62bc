"""Real processes on loopback: s3rver (S3 API + website endpoint), redis-server and gunicorn.

Every process is started on a free port and stopped by PID when its fixture ends.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from resize_server import devstack

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    s3_port: int
    resize_port: int
    client: object  # boto3 S3 client on s3rver
    log_path: Path
    bucket: str = "images"
    procs: dict = field(default_factory=dict)

    @property
    def website_host(self) -> str:
        return f"{self.bucket}.{devstack.WEBSITE_SUFFIX}:{self.s3_port}"

    @property
    def resize_url(self) -> str:
        return f"http://127.0.0.1:{self.resize_port}"

    def log_events(self) -> list[dict]:
        """The server's structured log lines (JSON), parsed."""
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass
        return events


def start_redis(port: int, log_file) -> subprocess.Popen:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (make test installs it)"
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    devstack.wait_for_port(port, proc)
    return proc


@pytest.fixture(scope="module")
def s3rver(tmp_path_factory):
    port = devstack.free_port()
    data_dir = tmp_path_factory.mktemp("s3rver")
    with open(data_dir.parent / f"s3rver-{port}.log", "wb") as log:
        proc = devstack.start_s3rver(port, data_dir, log_file=log)
    try:
        yield port
    finally:
        devstack.stop(proc)
        assert proc.poll() is not None


@pytest.fixture(scope="module")
def make_stack(s3rver, tmp_path_factory):
    """Start a resize server (gunicorn) against the module's s3rver with extra environment."""
    started = []

    def make(bucket: str = "images", **env: str) -> Stack:
        resize_port = devstack.free_port()
        client = devstack.s3rver_client(s3rver)
        devstack.prepare_bucket(client, bucket, f"127.0.0.1:{resize_port}")
        log_path = tmp_path_factory.mktemp("logs") / "gunicorn.log"
        full_env = {**devstack.server_env(s3rver, bucket), "MAGICK_CONFIGURE_PATH": str(ROOT / "deploy"), **env}
        with open(log_path, "wb") as log:
            proc = devstack.start_gunicorn(resize_port, full_env, log_file=log)
        stack = Stack(s3rver, resize_port, client, log_path, bucket, {"gunicorn": proc})
        started.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in started:
            for proc in stack.procs.values():
                devstack.stop(proc)
                assert proc.poll() is not None, "process left running"


@pytest.fixture(scope="module")
def stack(make_stack):
    """The default server: 2 workers, the `images` website bucket redirecting to it."""
    return make_stack(RESIZE_WORKERS="2")


# ---- process trees (used to prove that nothing is left running) ----

def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant, from /proc (children in their own sessions included)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(x) for x in (task / "children").read_text().split())
        except OSError:
            pass
    return pids


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate, timeout: float, message: str = "condition not reached in time") -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


# ---- the production topology of one instance: nginx (deploy/nginx.conf) -> gunicorn on a unix socket ----

@dataclass
class Front(Stack):
    """A resize server behind nginx: ``resize_port`` is nginx's resize port, ``image_port`` the image domain."""
    image_port: int = 0
    run_dir: Path | None = None

    @property
    def image_url(self) -> str:
        return f"http://127.0.0.1:{self.image_port}"

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "gunicorn.sock"

    def events(self, key: str, msg: str = "request") -> list[dict]:
        """Log lines about ``key``: by default the one line per request (http/requestlog.py)."""
        return [e for e in self.log_events() if e.get("key") == key and e.get("msg") == msg]


@pytest.fixture(scope="module")
def make_front(s3rver):
    """Start gunicorn on a unix socket with nginx in front (both ports), against the module's s3rver."""
    import tempfile

    started = []

    def make(bucket: str = "images", nginx_workers: str = "1", **env: str) -> Front:
        # Not pytest's tmp_path: its 0700 parents would keep nginx's workers (`nobody` under root) from the socket.
        run_dir = Path(tempfile.mkdtemp(prefix="resize-front-"))
        run_dir.chmod(0o755)
        resize_port, image_port = devstack.free_port(), devstack.free_port()
        client = devstack.s3rver_client(s3rver)
        devstack.prepare_bucket(client, bucket, f"127.0.0.1:{resize_port}")
        log_path = run_dir / "gunicorn.log"
        front = Front(s3rver, resize_port, client, log_path, bucket, {}, image_port=image_port, run_dir=run_dir)
        started.append(front)
        full_env = {**devstack.server_env(s3rver, bucket), "MAGICK_CONFIGURE_PATH": str(ROOT / "deploy"), **env}
        with open(log_path, "wb") as log:
            front.procs["gunicorn"] = devstack.start_gunicorn(None, full_env, log_file=log,
                                                              socket_path=front.socket_path)
        conf = devstack.stack_nginx_conf(run_dir / "nginx", resize_port=resize_port, image_port=image_port,
                                         socket_path=front.socket_path, s3_port=s3rver, bucket=bucket,
                                         workers=nginx_workers)
        front.procs["nginx"] = devstack.start_nginx(conf, run_dir / "nginx", [resize_port, image_port])
        return front

    try:
        yield make
    finally:
        for front in started:
            for proc in reversed(list(front.procs.values())):
                devstack.stop(proc)
                assert proc.poll() is not None, "process left running"
            shutil.rmtree(front.run_dir, ignore_errors=True)
