"""Real processes on loopback: s3rver (S3 API + website endpoint) and gunicorn running the server."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from resize_server import devstack

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    s3_port: int
    resize_port: int
    client: object  # boto3 S3 client on s3rver
    bucket: str = "images"

    @property
    def website_host(self) -> str:
        return f"{self.bucket}.{devstack.WEBSITE_SUFFIX}:{self.s3_port}"

    @property
    def resize_url(self) -> str:
        return f"http://127.0.0.1:{self.resize_port}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """s3rver with the `images` website bucket redirecting to a gunicorn resize server."""
    s3_port, resize_port = devstack.free_port(), devstack.free_port()
    data_dir = tmp_path_factory.mktemp("s3rver")
    logs = tmp_path_factory.mktemp("logs")
    s3rver = gunicorn = None
    try:
        with open(logs / "s3rver.log", "wb") as s3_log:
            s3rver = devstack.start_s3rver(s3_port, data_dir, log_file=s3_log)
        client = devstack.s3rver_client(s3_port)
        devstack.prepare_bucket(client, "images", f"127.0.0.1:{resize_port}")
        env = {**devstack.server_env(s3_port), "RESIZE_WORKERS": "2",
               "MAGICK_CONFIGURE_PATH": str(ROOT / "deploy")}
        with open(logs / "gunicorn.log", "wb") as g_log:
            gunicorn = devstack.start_gunicorn(resize_port, env, log_file=g_log)
        yield Stack(s3_port, resize_port, client)
    finally:
        devstack.stop(gunicorn)
        devstack.stop(s3rver)
        for pid_owner in (gunicorn, s3rver):
            if pid_owner is not None:
                assert pid_owner.poll() is not None, "process left running"
