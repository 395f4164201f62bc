"""The systemd units in deploy/: the directives the deployment relies on, and systemd's own checks.

Two layers: the unit files are parsed and the required directives asserted (restart policy,
environment file, hardening, stop timing, socket directory); then ``systemd-analyze verify``
(syntax, unknown keys, bad values, dependencies) and ``systemd-analyze security --offline``
(exposure score) run on them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.templates import DEPLOY, ROOT

UNITS = ["resize-server.service", "resize-worker.service", "resize-front.service"]
VENV_BIN = Path(sys.executable).parent
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's INI dialect: sections of keys that may repeat (so not configparser)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    return parse_unit((DEPLOY / name).read_text())


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def graceful_timeout() -> int:
    env = {**os.environ, "RESIZE_BUCKET": "images"}
    out = subprocess.run([sys.executable, "-c", "import resize_server.gunicorn_conf as c; print(c.graceful_timeout)"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=True)
    return int(out.stdout.strip().splitlines()[-1])


HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
             "PrivateDevices": "yes", "RestrictSUIDSGID": "yes", "SystemCallArchitectures": "native"}


@pytest.mark.parametrize("name", UNITS)
def test_unit_restarts_and_is_hardened(name):
    service = unit(name)["Service"]
    assert service["Restart"] == ["always"]
    assert service["KillMode"] == ["mixed"]
    for key, value in HARDENING.items():
        assert service.get(key) == [value], key
    assert unit(name)["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.parametrize("name", ["resize-server.service", "resize-worker.service"])
def test_python_services_run_as_the_dedicated_user_with_the_env_file_and_no_capabilities(name):
    service = unit(name)["Service"]
    assert service["User"] == ["resize-server"]
    assert service["Group"] == ["resize-server"]
    assert service["EnvironmentFile"] == ["/etc/resize-server/env"]
    assert service["CapabilityBoundingSet"] == [""]
    assert service["ExecStart"][0].startswith("/opt/resize-server/bin/resize-server ")  # the user data's venv


def test_server_unit_serves_the_socket_and_outlasts_the_graceful_drain():
    service = unit("resize-server.service")["Service"]
    assert service["ExecStart"] == ["/opt/resize-server/bin/resize-server serve"]
    # The socket RESIZE_BIND=unix:/run/resize-server/gunicorn.sock lives in this directory.
    assert service["RuntimeDirectory"] == ["resize-server"]
    assert service["RuntimeDirectoryMode"] == ["0750"]
    # SIGTERM to the master, SIGKILL only after the drain had its time.
    assert service["KillSignal"] == ["SIGTERM"]
    assert seconds(service["TimeoutStopSec"][0]) > graceful_timeout()


def test_worker_unit_reads_the_queue_from_the_env_file():
    service = unit("resize-worker.service")["Service"]
    # ${VAR} (braces) is one argument even if it were to contain spaces.
    assert service["ExecStart"] == ["/opt/resize-server/bin/resize-server worker --queue-url ${RESIZE_QUEUE_URL}"]
    assert seconds(service["TimeoutStopSec"][0]) > 120  # > the queue's visibility timeout: in-flight work finishes


def test_front_unit_runs_nginx_in_the_foreground_on_the_documented_config():
    unit_text = unit("resize-front.service")
    service = unit_text["Service"]
    for command in service["ExecStartPre"] + service["ExecStart"]:
        assert command.startswith("/usr/sbin/nginx ")
        assert "-c /etc/resize-server/nginx.conf" in command
        assert "-p /run/resize-front/" in command
    assert "-t" in service["ExecStartPre"][0].split()
    assert service["KillSignal"] == ["SIGQUIT"]  # nginx's graceful stop
    # Not root: www-data, allowed to bind port 80, in the group that reaches gunicorn's socket.
    assert service["User"] == ["www-data"]
    assert service["SupplementaryGroups"] == ["resize-server"]
    assert service["AmbientCapabilities"] == service["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert "resize-server.service" in unit_text["Unit"]["Wants"][0].split()


def installable_copy(name: str, tmp_path: Path) -> Path:
    """The unit with its ExecStart binary pointed at this venv's resize-server.

    ``systemd-analyze verify`` insists that the executable exists, and /opt/resize-server is
    the instance's venv; everything else in the unit is checked as shipped.
    """
    text = (DEPLOY / name).read_text()
    assert (VENV_BIN / "resize-server").exists()
    copy = tmp_path / name
    copy.write_text(text.replace("/opt/resize-server/bin/", f"{VENV_BIN}/"))
    return copy


def verify(path: Path) -> subprocess.CompletedProcess:
    assert SYSTEMD_ANALYZE, "systemd-analyze not found: install Debian's systemd package (make deps does)"
    return subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify_is_clean(name, tmp_path):
    result = verify(installable_copy(name, tmp_path))
    # verify exits 0 on unknown keys and bad values (it only warns), so the output must be empty too.
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_systemd_analyze_verify_reports_a_broken_unit(tmp_path):
    """The check is real: a typo and a bad value in a copy of the server unit are reported."""
    copy = installable_copy("resize-server.service", tmp_path)
    copy.write_text(copy.read_text().replace("KillMode=mixed", "KillMode=mixd\nProtectSytem=strict"))
    result = verify(copy)
    assert "Failed to parse kill mode" in result.stderr
    assert "Unknown key 'ProtectSytem'" in result.stderr


@pytest.mark.parametrize("name, most", [
    ("resize-server.service", 2.0), ("resize-worker.service", 2.0),
    # nginx keeps CAP_NET_BIND_SERVICE and needs more syscalls than the Python services.
    ("resize-front.service", 2.5),
])
def test_systemd_security_exposure_is_low(name, most, tmp_path):
    assert SYSTEMD_ANALYZE, "systemd-analyze not found: install Debian's systemd package (make deps does)"
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager",
                             str(installable_copy(name, tmp_path))], capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= most, result.stdout
