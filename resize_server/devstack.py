"""The local stack behind ``make run``, and the process helpers the end-to-end tests use.

s3rver plays S3 (API and website endpoint, with RoutingRules) on loopback,
gunicorn runs the resize server, and everything started here is stopped by
PID on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .config import Settings
from .storage.s3 import S3Storage, make_client
from .website import bucket_policy, read_deploy_file, website_configuration

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
S3RVER_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER"}
WEBSITE_SUFFIX = "s3-website.localhost"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def stop(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM the process (its group, so workers go too), then SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def s3rver_command(port: int, directory: Path) -> list[str]:
    script = ROOT / "node_modules" / "s3rver" / "bin" / "s3rver.js"
    if not script.exists():
        raise FileNotFoundError(f"{script} is missing: run `npm ci` (make does it)")
    return [shutil.which("node") or "node", str(script), "-d", str(directory), "-a", "127.0.0.1",
            "-p", str(port), "--service-endpoint", "localhost", "--silent"]


def start_s3rver(port: int, directory: Path, log_file=None) -> subprocess.Popen:
    proc = subprocess.Popen(s3rver_command(port, directory), stdout=log_file or subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_port(port, proc)
    return proc


def s3rver_settings(port: int, bucket: str = "images") -> Settings:
    return Settings(bucket=bucket, s3_endpoint_url=f"http://127.0.0.1:{port}")


def s3rver_client(port: int):
    """A boto3 client for s3rver (its fixed credentials are passed explicitly, not read from the environment)."""
    return make_client(s3rver_settings(port), credentials={
        "aws_access_key_id": "S3RVER", "aws_secret_access_key": "S3RVER"})


def prepare_bucket(client, bucket: str, resize_host: str) -> list[str]:
    """Create the bucket with its website configuration and public-read policy; returns notes to print."""
    storage = S3Storage(client, bucket)
    storage.create_bucket()
    return storage.configure_website(
        website_configuration(read_deploy_file("routing_rules.xml"), resize_host),
        bucket_policy(read_deploy_file("bucket_policy.json"), bucket))


def sample_images() -> dict[str, tuple[bytes, str]]:
    """The objects ``make run`` uploads under ``samples/``."""
    from wand.color import Color
    from wand.image import Image

    landscape = (SAMPLES / "landscape.jpg").read_bytes()
    with Image(blob=landscape) as img:
        img.resize(4500, 3000)  # 13.5 MP, the size of a phone photo
        # Wand's attenuate argument only reaches ImageMagick 7; on 6 the artifact does it.
        img.artifacts["attenuate"] = "0.25"
        img.noise("gaussian")
        img.compression_quality = 90
        earth = img.make_blob("jpeg")
    with Image(width=800, height=600, background=Color("transparent")) as img:
        with Image(width=400, height=600, background=Color("#2a6fdbc0")) as half:
            img.composite(half, 0, 0)  # left half translucent blue, right half transparent
        img.format = "png"
        logo = img.make_blob()
    return {
        "samples/earth.jpg": (earth, "image/jpeg"),
        "samples/portrait.jpg": ((SAMPLES / "portrait-exif6.jpg").read_bytes(), "image/jpeg"),
        "samples/logo.png": (logo, "image/png"),
    }


def upload_samples(client, bucket: str) -> list[str]:
    keys = []
    for key, (data, content_type) in sample_images().items():
        client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        keys.append(key)
    return keys


def gunicorn_command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-c", "python:resize_server.gunicorn_conf", *extra, "wsgi:app"]


def start_gunicorn(port: int, env: dict[str, str], log_file=None) -> subprocess.Popen:
    full_env = {**os.environ, **env, "RESIZE_BIND": f"127.0.0.1:{port}"}
    proc = subprocess.Popen(gunicorn_command(), cwd=ROOT, env=full_env, stdout=log_file or None,
                            stderr=subprocess.STDOUT if log_file else None, start_new_session=True)
    wait_for_port(port, proc, timeout=30)
    return proc


def server_env(s3_port: int, bucket: str = "images") -> dict[str, str]:
    return {
        "RESIZE_BUCKET": bucket,
        "RESIZE_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "RESIZE_REGION": "us-east-1",
        **S3RVER_CREDENTIALS,
    }


def main() -> int:
    s3_port = int(os.environ.get("S3_PORT", "4568"))
    resize_port = int(os.environ.get("RESIZE_PORT", "8080"))
    bucket = "images"
    data_dir = Path(tempfile.mkdtemp(prefix="resize-s3rver-"))
    procs: list[subprocess.Popen] = []

    def shutdown(*_):
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, shutdown)
    try:
        print(f"starting s3rver on 127.0.0.1:{s3_port} (data in {data_dir})", flush=True)
        procs.append(start_s3rver(s3_port, data_dir))
        client = s3rver_client(s3_port)
        for note in prepare_bucket(client, bucket, f"127.0.0.1:{resize_port}"):
            print(f"note: {note}")
        keys = upload_samples(client, bucket)
        print(f"uploaded {', '.join(keys)}")
        print(f"starting the resize server (gunicorn) on 127.0.0.1:{resize_port}", flush=True)
        procs.append(start_gunicorn(resize_port, server_env(s3_port, bucket)))
        host = f"{bucket}.{WEBSITE_SUFFIX}:{s3_port}"
        print(f"""
The local stack is up. Try (the first request is redirected to the resize server, the second is served by S3):

  curl -sSL --resolve {host}:127.0.0.1 -o out.jpg -w '%{{http_code}} %{{num_redirects}} redirect(s) %{{size_download}} bytes\\n' http://{host}/samples/earth_200x200.jpg
  curl -sS  --resolve {host}:127.0.0.1 -o /dev/null -w '%{{http_code}} (no redirect)\\n' http://{host}/samples/earth_200x200.jpg
  curl -sSL --resolve {host}:127.0.0.1 -o portrait.jpg http://{host}/samples/portrait_x200.jpg
  curl -sSL --resolve {host}:127.0.0.1 -o logo.png http://{host}/samples/logo_200x200_fill.png
  curl -sS -o direct.jpg http://127.0.0.1:{resize_port}/resize.php?src=samples/earth_400x400.jpg

Ctrl-C stops everything.""", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("a process exited; stopping the stack", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
        return 0
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
