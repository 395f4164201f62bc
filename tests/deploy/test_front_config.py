"""The nginx front as the fleet runs it: deploy/nginx.conf filled in from the user data's values,
checked by the real nginx (`nginx -t`) with the front unit's own command-line flags.

deploy/nginx.conf is the nginx front's template (owned by the stack work); until it is merged
this module has nothing to check and says so.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
from pathlib import Path

import pytest

from tests.deploy.templates import DEPLOY, FLEET_TEMPLATE, Resolver, load

NGINX = Path("/usr/sbin/nginx")
TEMPLATE = DEPLOY / "nginx.conf"

pytestmark = pytest.mark.skipif(not TEMPLATE.exists(), reason="deploy/nginx.conf (the nginx front) not merged yet")


def user_data() -> str:
    t = load(FLEET_TEMPLATE)
    r = Resolver(t, {"BucketName": "images", "VpcId": "vpc-0123", "LoadBalancerSubnets": ["subnet-a"],
                     "InstanceSubnets": ["subnet-b"]})
    return r.resolve(t["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"])


def envsubst(text: str, values: dict[str, str]) -> str:
    """What `envsubst '${A} ${B}'` does: replace $A / ${A} for the listed names only."""
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))",
                  lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_template_takes_exactly_the_variables_the_user_data_sets():
    script = user_data()
    listed = re.search(r"envsubst '([^']+)'", script).group(1).split()
    body = "\n".join(line for line in TEMPLATE.read_text().splitlines() if not line.lstrip().startswith("#"))
    used = {"${%s}" % name for name in re.findall(r"\$\{(RESIZE_NGINX_\w+)\}", body)}
    assert used == set(listed)


def test_nginx_accepts_the_front_config_with_the_units_flags(tmp_path):
    script = user_data()
    values = dict(re.findall(r"\b(RESIZE_NGINX_[A-Z0-9_]+)=(\S+)", script))
    front = (DEPLOY / "resize-front.service").read_text()
    runtime = re.search(r"^RuntimeDirectory=(.+)$", front, re.M).group(1).split()
    run_dir = tmp_path / runtime[0]
    for folder in runtime:  # what systemd creates before ExecStartPre
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    # Only what cannot be the same here: loopback ports and folders of this test, and an S3
    # origin that needs no DNS (nginx resolves proxy_pass hosts when it loads the config).
    values.update({
        "RESIZE_NGINX_RUN_DIR": str(run_dir),
        "RESIZE_NGINX_LISTEN": f"127.0.0.1:{free_port()}",
        "RESIZE_NGINX_IMAGE_LISTEN": f"127.0.0.1:{free_port()}",
        "RESIZE_NGINX_S3_ORIGIN": "http://127.0.0.1:9",
        "RESIZE_NGINX_STATIC_DIR": str(DEPLOY),
    })
    conf = tmp_path / "nginx.conf"
    conf.write_text(envsubst(TEMPLATE.read_text(), values))
    start_pre = re.search(r"^ExecStartPre=(.+)$", front, re.M).group(1)
    args = shlex.split(start_pre.replace("/run/" + runtime[0] + "/", f"{run_dir}/")
                       .replace("/etc/resize-server/nginx.conf", str(conf)))
    assert args[0] == str(NGINX)
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
