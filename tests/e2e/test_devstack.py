"""`make run` as a user meets it: busy ports, every way it gets stopped, and its banner.

Each test starts a real ``python -m resize_server.devstack`` (or ``make run``) on free
loopback ports and proves afterwards that none of its processes is left and its ports are free.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resize_server import devstack
from tests.conftest import dimensions
from tests.e2e.conftest import ROOT, process_tree, running, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
UP = "The local stack is up"


def stack_ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(devstack.STACK_PORTS):
        ports = {name: devstack.free_port() for name in devstack.STACK_PORTS}
    return ports


class RunningStack:
    """A `make run` started in its own process group, with the output it printed."""

    def __init__(self, tmp_path: Path, command: list[str] | None = None) -> None:
        self.ports = stack_ports()
        self.out_path = tmp_path / "devstack.out"
        env = {**os.environ, **{k: str(v) for k, v in self.ports.items()}}
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(command or [sys.executable, "-m", "resize_server.devstack"], cwd=ROOT,
                                         env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.tree: list[int] = []

    @property
    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_up(self, timeout: float = 90) -> None:
        wait_until(lambda: UP in self.output or self.proc.poll() is not None, timeout, "the stack did not come up")
        assert self.proc.poll() is None, self.output
        time.sleep(0.3)  # the banner is printed after the last port answered; let it flush
        self.tree = process_tree(self.proc.pid)

    def leftovers(self) -> list[int]:
        return [pid for pid in self.tree if running(pid)]

    def busy_ports(self) -> list[int]:
        return [port for port in self.ports.values() if devstack.port_in_use(port)]

    def kill_everything(self) -> None:
        """Cleanup after a failed test: nothing may outlive the test, whatever the code did."""
        for pid in self.tree + process_tree(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)


@pytest.fixture
def running_stack(tmp_path):
    started = []

    def start(command=None) -> RunningStack:
        stack = RunningStack(tmp_path, command)
        started.append(stack)
        stack.wait_up()
        return stack

    yield start
    for stack in started:
        stack.kill_everything()


def assert_all_gone(stack: RunningStack, timeout: float = 20) -> None:
    wait_until(lambda: not stack.leftovers() and not stack.busy_ports(), timeout,
               f"left running: {stack.leftovers()}, ports still in use: {stack.busy_ports()}")


# ---- "What was seen" 4: busy ports -------------------------------------------------------

@pytest.mark.parametrize("busy", list(devstack.STACK_PORTS))
def test_a_busy_port_is_named_before_anything_starts(tmp_path, busy):
    ports = stack_ports()
    with socket.socket() as squatter:  # another program (or another `make run`) holds the port
        squatter.bind(("127.0.0.1", ports[busy]))
        squatter.listen()
        env = {**os.environ, **{k: str(v) for k, v in ports.items()}}
        proc = subprocess.Popen([sys.executable, "-m", "resize_server.devstack"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in process_tree(proc.pid):  # its children too: they may be in sessions of their own
                os.kill(pid, signal.SIGKILL)
            output, _ = proc.communicate()
            pytest.fail(f"make run kept running with port {ports[busy]} busy:\n{output}")
        tree_left = [p for p in process_tree(proc.pid) if p != proc.pid and running(p)]

    assert proc.returncode != 0
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    match = re.fullmatch(rf"make run: port {ports[busy]} is in use: set {busy}=<another port> to pick another "
                         rf"\(e\.g\. `make run {busy}=(\d+)`\)", lines[0])
    assert match, output
    suggested = int(match.group(1))
    assert not devstack.port_in_use(suggested)
    assert "Traceback" not in output and "starting" not in output
    assert not tree_left
    assert not [p for name, p in ports.items() if name != busy and devstack.port_in_use(p)]


def test_the_same_port_twice_is_refused(tmp_path):
    port = devstack.free_port()
    env = {**os.environ, "S3_PORT": str(port), "RESIZE_PORT": str(port), "NGINX_PORT": str(devstack.free_port())}
    result = subprocess.run([sys.executable, "-m", "resize_server.devstack"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode != 0
    assert result.stderr.strip() == f"make run: S3_PORT and RESIZE_PORT are both {port}: give each its own port"


# ---- "What was seen" 5: every way of stopping it leaves nothing --------------------------

@pytest.mark.parametrize("signals", [
    ("SIGTERM",),             # a supervisor, `timeout`
    ("SIGHUP",),              # the terminal closed
    ("SIGTERM", "SIGTERM"),   # repeated: what `make` does (it forwards SIGTERM to its child)
    ("SIGINT", "SIGINT", "SIGTERM"),  # impatient Ctrl-C, then a supervisor
])
def test_a_signal_to_the_process_group_stops_every_process(running_stack, signals):
    stack = running_stack()
    assert len(stack.tree) >= 6, stack.tree  # python, s3rver, gunicorn master + worker, nginx master + worker
    for name in signals:
        os.killpg(stack.proc.pid, getattr(signal, name))
        time.sleep(0.1)
    assert stack.proc.wait(30) == 0
    assert_all_gone(stack)
    assert "Traceback" not in stack.output


def test_make_run_stopped_with_sigterm_to_its_group_leaves_nothing(running_stack):
    """The case as it was seen: `make run`, then SIGTERM to its process group."""
    stack = running_stack(["make", "-s", "--no-print-directory", "run"])
    os.killpg(stack.proc.pid, signal.SIGTERM)
    stack.proc.wait(30)
    assert_all_gone(stack)
    assert "Traceback" not in stack.output


def test_children_die_with_a_sigkilled_make_run(running_stack):
    stack = running_stack()
    run_dir = Path(re.search(r"data in (\S+)/s3rver", stack.output).group(1))
    os.kill(stack.proc.pid, signal.SIGKILL)  # no handler runs: only the kernel can stop the children
    stack.proc.wait(5)
    assert_all_gone(stack, timeout=20)
    # Its folder is left behind (nothing ran to remove it); the next `make run` sweeps it away.
    assert run_dir.exists()
    devstack._remove_stale_run_dirs()
    assert not run_dir.exists()


# ---- the banner ----------------------------------------------------------------------------

def test_the_banner_points_the_cli_and_curl_at_the_stack(running_stack, tmp_path):
    stack = running_stack()
    out = stack.output
    export = next(line.strip() for line in out.splitlines() if line.strip().startswith("export "))
    cli_env = dict(item.split("=", 1) for item in shlex.split(export)[1:])
    assert cli_env == {
        "RESIZE_BUCKET": "images",
        "RESIZE_S3_ENDPOINT_URL": f"http://127.0.0.1:{stack.ports['S3_PORT']}",
        "AWS_ACCESS_KEY_ID": "S3RVER",
        "AWS_SECRET_ACCESS_KEY": "S3RVER",
        "MAGICK_CONFIGURE_PATH": str(ROOT / "deploy"),
        "RESIZE_PRESETS": devstack.LOCAL_DEFAULTS["RESIZE_PRESETS"],  # the presets the local server has
    }
    # The printed CLI example, run with only that environment (no AWS settings of the test's own).
    render = next(line.strip() for line in out.splitlines() if "resize-server render " in line)
    bare_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **cli_env}
    result = subprocess.run(shlex.split(render), env=bare_env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("samples/earth_50x50.jpg\t50x33\t")
    assert "samples/earth_thumb.jpg\t50x33\t" in result.stdout
    stored = devstack.s3rver_client(stack.ports["S3_PORT"]).get_object(Bucket="images", Key="samples/earth_50x50.jpg")
    assert dimensions(stored["Body"].read()) == ("JPEG", 50, 33)

    # The printed curl for the nginx front, run as printed (from a scratch folder).
    curl = next(line.strip() for line in out.splitlines()
                if line.strip().startswith("curl") and f"127.0.0.1:{stack.ports['NGINX_PORT']}/" in line)
    result = subprocess.run(shlex.split(curl), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("200 image/jpeg"), (result.stdout, result.stderr)
    assert dimensions((tmp_path / "front.jpg").read_bytes()) == ("JPEG", 100, 67)

    # The resize port is served through the nginx front.
    result = subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/null",
                             f"http://127.0.0.1:{stack.ports['RESIZE_PORT']}/healthz"],
                            capture_output=True, text=True, timeout=20)
    assert "200 OK" in result.stdout and "Server: nginx" in result.stdout

    os.killpg(stack.proc.pid, signal.SIGINT)
    assert stack.proc.wait(30) == 0
    assert_all_gone(stack)
